//! Certificates as both sides use them: the TLS files (`files`), the client CA's verifier, a client chain verified now, and the account a certificate names (`identity`).
//!
//! Below both the network side (`net/`: the handshake, and whether to
//! offer AUTH EXTERNAL) and the root side (`privsep/cert_login.rs`: the
//! check that logs an account in), so that neither imports the other.

pub mod files;
pub mod identity;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use files::{read_certificates, TlsError, CLIENT_CA};

/// The ring provider, passed explicitly so that no process-wide default
/// has to be installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The WebPki verifier for client certificates issued by the CA(s) in
/// `ca`; also built by the passdb for AUTH EXTERNAL (`privsep::cert_login`).
pub fn client_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(CLIENT_CA, ca)? {
        roots.add(cert).map_err(|e| TlsError::BadClientCa {
            path: ca.to_owned(),
            detail: e.to_string(),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::BadClientCa {
            path: ca.to_owned(),
            detail: e.to_string(),
        })
}

/// Checks the client's chain (end-entity first, as rustls keeps it) with
/// the WebPki verifier, now.
pub fn verified_chain(
    webpki: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    let (end_entity, intermediates) = chain
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    webpki
        .verify_client_cert(end_entity, intermediates, UnixTime::now())
        .map(|_| ())
}
