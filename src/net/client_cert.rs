//! Client certificates requested, never a reason to refuse the handshake; verified afterwards to name an account.
//!
//! rustls' `WebPkiClientVerifier` aborts the handshake when a client offers
//! an expired or untrusted certificate, so such a client could not even
//! use its password. [`RequestOnly`] accepts any chain at handshake time
//! but still has the WebPki verifier check the client's CertificateVerify
//! signature, which proves the client holds the end-entity key. After the
//! handshake, [`verified_chain`] runs the WebPki chain check (trust anchor,
//! validity period, key usage) on the same chain, and only a chain that
//! passes names an account for AUTH EXTERNAL. The decision is the one the
//! WebPki verifier would have made, only later and without hanging up.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::account::ClientChain;
use crate::config::CertUserField;
use crate::pki::identity::cert_identity;
use crate::pki::verified_chain;

/// The chain to keep from a finished handshake.
pub fn keep_chain(chain: Option<&[CertificateDer<'_>]>) -> Option<ClientChain> {
    chain
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
}

/// Requests a certificate, takes whatever chain comes, checks signatures.
#[derive(Debug)]
pub struct RequestOnly {
    webpki: Arc<dyn ClientCertVerifier>,
}

impl RequestOnly {
    /// `webpki` is the verifier built for `tls_client_ca`.
    pub fn new(webpki: Arc<dyn ClientCertVerifier>) -> RequestOnly {
        RequestOnly { webpki }
    }
}

impl ClientCertVerifier for RequestOnly {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    /// The chain is judged after the handshake by [`verified_chain`].
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The account a client certificate names, if it verifies; why not is
/// logged (certificates are public, the reason helps the administrator).
pub fn account_of(
    webpki: Option<&dyn ClientCertVerifier>,
    chain: Option<&[CertificateDer<'_>]>,
    field: CertUserField,
    peer: &str,
) -> Option<String> {
    let (webpki, chain) = (webpki?, chain?);
    if let Err(e) = verified_chain(webpki, chain) {
        log::info!("client certificate not accepted: rip={peer}: {e}");
        return None;
    }
    let end_entity = chain.first()?;
    match cert_identity(end_entity, field) {
        Ok(name) => Some(name),
        Err(e) => {
            log::info!("client certificate names no account: rip={peer}: {e}");
            None
        }
    }
}
