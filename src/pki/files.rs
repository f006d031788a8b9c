//! TLS certificate, key and client CA files read in bounded PEM, and the error that names the file and config key at fault.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::limits::MAX_PEM_FILE;

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

pub(crate) const CERT: &str = "TLS certificate file (tls_cert)";
pub(crate) const KEY: &str = "TLS key file (tls_key)";
pub(crate) const CLIENT_CA: &str = "TLS client CA file (tls_client_ca)";

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
pub(crate) fn read_certificates(
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
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_bounded(KEY, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        e => bad_pem(KEY, path, e),
    })
}
