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

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::limits::MAX_PEM_FILE;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

/// The protocol versions offered, newest first.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// RFC 8314 §7.3 registers `pop3` as the ALPN id for POP3 over TLS.
pub const ALPN_POP3: &[u8] = b"pop3";

/// Why the TLS material cannot be used, in the administrator's words.
#[derive(Debug)]
pub enum TlsError {
    /// `what` is e.g. "TLS certificate file (tls_cert)".
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    TooLarge {
        what: &'static str,
        path: PathBuf,
    },
    BadPem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    NoCertificate {
        what: &'static str,
        path: PathBuf,
    },
    NoKey {
        path: PathBuf,
    },
    UnsupportedKey {
        path: PathBuf,
        detail: String,
    },
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
    },
    BadCertificate {
        path: PathBuf,
        detail: String,
    },
    BadClientCa {
        path: PathBuf,
        detail: String,
    },
}

const CERT: &str = "TLS certificate file (tls_cert)";
const KEY: &str = "TLS key file (tls_key)";
const CLIENT_CA: &str = "TLS client CA file (tls_client_ca)";

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { what, path, source } => {
                write!(f, "cannot read {what} {}: {source}", path.display())
            }
            TlsError::TooLarge { what, path } => write!(
                f,
                "{what} {} is larger than {MAX_PEM_FILE} bytes; is it really a PEM file?",
                path.display()
            ),
            TlsError::BadPem { what, path, detail } => {
                write!(f, "{what} {} is not valid PEM: {detail}", path.display())
            }
            TlsError::NoCertificate { what, path } => write!(
                f,
                "{what} {} contains no certificate (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
            TlsError::NoKey { path } => write!(
                f,
                "{KEY} {} contains no private key (expected -----BEGIN PRIVATE KEY-----, \
                 RSA PRIVATE KEY or EC PRIVATE KEY)",
                path.display()
            ),
            TlsError::UnsupportedKey { path, detail } => write!(
                f,
                "{KEY} {} holds a key that cannot be used: {detail}",
                path.display()
            ),
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "the private key in {} does not belong to the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::BadCertificate { path, detail } => write!(
                f,
                "the certificate in {CERT} {} cannot be used: {detail}",
                path.display()
            ),
            TlsError::BadClientCa { path, detail } => {
                write!(f, "{CLIENT_CA} {} cannot be used: {detail}", path.display())
            }
        }
    }
}

impl TlsError {
    /// The config key whose file is at fault.
    pub fn key(&self) -> &'static str {
        let key_of = |what: &str| match what {
            KEY => "tls_key",
            CLIENT_CA => "tls_client_ca",
            _ => "tls_cert",
        };
        match self {
            TlsError::Read { what, .. }
            | TlsError::TooLarge { what, .. }
            | TlsError::BadPem { what, .. }
            | TlsError::NoCertificate { what, .. } => key_of(what),
            TlsError::NoKey { .. }
            | TlsError::UnsupportedKey { .. }
            | TlsError::KeyMismatch { .. } => "tls_key",
            TlsError::BadCertificate { .. } => "tls_cert",
            TlsError::BadClientCa { .. } => "tls_client_ca",
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The ring provider, passed explicitly so that no process-wide default
/// has to be installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS configuration a connection is accepted with.
#[derive(Debug)]
pub struct TlsContext {
    pub server: Arc<ServerConfig>,
    /// With `tls_client_ca`: the verifier that decides after the handshake
    /// whether the client's certificate chain is valid now
    /// (`net::client_cert::verified_chain`).
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

fn read_bounded(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(TlsError::TooLarge {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn bad_pem(what: &'static str, path: &Path, e: pem::Error) -> TlsError {
    TlsError::BadPem {
        what,
        path: path.to_owned(),
        detail: match e {
            pem::Error::MissingSectionEnd { end_marker } => {
                format!("missing {}", String::from_utf8_lossy(&end_marker))
            }
            pem::Error::IllegalSectionStart { line } => {
                format!("malformed line {:?}", String::from_utf8_lossy(&line))
            }
            pem::Error::Base64Decode(d) => format!("bad base64 ({d})"),
            other => format!("{other:?}"),
        },
    }
}

/// Every `CERTIFICATE` block, in file order; other blocks are skipped.
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_bounded(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key in the file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_bounded(KEY, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        e => bad_pem(KEY, path, e),
    })
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
