//! TLS server configuration from PEM files, and its holder that SIGHUP reloads.
//!
//! TLS 1.2 and 1.3 only (RFC 8314 §4.1), with rustls' ring provider and its
//! default suites: TLS 1.3 AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305;
//! TLS 1.2 ECDHE-ECDSA/ECDHE-RSA with the same AEADs. rustls has no CBC,
//! RC4, 3DES or static-RSA suites at all. ALPN `pop3` is selected when the
//! client offers it; a client offering only other protocols is refused (the
//! ALPACA cross-protocol defence), one offering none is served.
//!
//! Client certificates are requested, never required, and never make the
//! handshake fail: a certificate that does not verify simply names no
//! account (AUTH EXTERNAL then fails, passwords still work), as in Dovecot.
//! `net::client_cert` has the verifier that makes this so.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::pki::files::{read_certificates, read_key, TlsError, CERT};
use crate::pki::{client_verifier, provider};

/// The protocol versions offered, newest first.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// RFC 8314 §7.3 registers `pop3` as the ALPN id for POP3 over TLS.
pub const ALPN_POP3: &[u8] = b"pop3";

/// The TLS configuration a connection is accepted with.
#[derive(Debug)]
pub struct TlsContext {
    pub server: Arc<ServerConfig>,
    /// With `tls_client_ca`: the verifier that decides after the handshake
    /// whether the client's certificate chain is valid now
    /// (`pki::verified_chain`).
    pub client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// Builds the server configuration from the chain in `cert` (end-entity
/// first), the key in `key`, and, with `client_ca`, a request (not a
/// requirement) for client certificates verified against that CA.
pub fn load_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    load_context(cert, key, client_ca).map(|ctx| Arc::clone(&ctx.server))
}

/// [`load_tls`], with the client-certificate verifier kept for later.
pub fn load_context(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<TlsContext>, TlsError> {
    let provider = provider();
    let chain = read_certificates(CERT, cert)?;
    let key_der = read_key(key)?;
    let certified = certified_key(cert, key, chain, key_der, &provider)?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::BadCertificate {
            path: cert.to_owned(),
            detail: e.to_string(),
        })?;
    let client_verifier = match client_ca {
        None => None,
        Some(ca) => Some(client_verifier(ca, provider)?),
    };
    let builder = match &client_verifier {
        None => builder.with_no_client_auth(),
        Some(webpki) => builder.with_client_cert_verifier(Arc::new(
            super::client_cert::RequestOnly::new(Arc::clone(webpki)),
        )),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ALPN_POP3.to_vec()];
    Ok(Arc::new(TlsContext {
        server: Arc::new(config),
        client_verifier,
    }))
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::UnsupportedKey {
                path: key_path.to_owned(),
                detail: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        // ring can always derive the public key, so "unknown" does not
        // occur; should it, the handshake would still fail loudly.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(TlsError::BadCertificate {
            path: cert_path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// The files a [`TlsReloader`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// From the config; `None` when `tls_cert`/`tls_key` are not both set
    /// (the config parser rejects one without the other).
    pub fn from_config(config: &crate::config::Config) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: config.tls_cert.clone()?,
            key: config.tls_key.clone()?,
            client_ca: config.tls_client_ca.clone(),
        })
    }

    pub fn load(&self) -> Result<Arc<TlsContext>, TlsError> {
        load_context(&self.cert, &self.key, self.client_ca.as_deref())
    }
}

/// The TLS configuration new connections use. Sessions in progress keep
/// the `Arc` they started with, so a reload never disturbs them.
pub struct TlsReloader {
    files: TlsFiles,
    current: RwLock<Arc<TlsContext>>,
}

impl TlsReloader {
    /// Loads the files once; call before privileges are dropped.
    pub fn new(files: TlsFiles) -> Result<TlsReloader, TlsError> {
        let config = files.load()?;
        Ok(TlsReloader {
            files,
            current: RwLock::new(config),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<TlsContext> {
        // A poisoned lock still holds a complete Arc: writers only assign.
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Rereads the files (SIGHUP). On error the previous configuration
    /// stays in force and the error is returned for the log.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.load()?;
        match self.current.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
