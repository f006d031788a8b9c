//! The account a verified TLS client certificate names (config `tls_cert_user`), for AUTH EXTERNAL.
//!
//! The caller must have verified the chain against `tls_client_ca` first
//! (`net::client_cert::account_of` and `privsep::cert_login` do; the handshake itself only checks that
//! the client holds the key): this only reads one field of the end-entity
//! certificate. Parsing uses RustCrypto's
//! `x509-cert` (DER only, no I/O): rustls-webpki exposes neither the
//! subject's attributes nor rfc822Name SANs.

use std::fmt;

use rustls::pki_types::CertificateDer;
use x509_cert::der::asn1::{Any, ObjectIdentifier};
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::name::Name;
use x509_cert::Certificate;

use crate::config::CertUserField;
use crate::limits::MAX_CERT_IDENTITY;

/// X.520 commonName.
const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// PKCS #9 emailAddress.
const OID_EMAIL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");
/// X.509 subjectAltName extension.
const OID_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// Why the certificate names no usable account. Logged, never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// Not a DER X.509 certificate (rustls verified it, so rare).
    Unparsable(String),
    /// The configured field is absent.
    Missing(CertUserField),
    /// The subject has the attribute more than once: which one is meant?
    Ambiguous(CertUserField),
    /// The value is not usable text (control characters, too long, an
    /// unsupported string type).
    BadValue(CertUserField, &'static str),
}

fn field_name(field: CertUserField) -> &'static str {
    match field {
        CertUserField::Cn => "subject CN",
        CertUserField::Email => "subject emailAddress",
        CertUserField::SanEmail => "subjectAltName e-mail address",
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Unparsable(e) => write!(f, "client certificate cannot be parsed: {e}"),
            IdentityError::Missing(field) => write!(
                f,
                "client certificate has no {} (tls_cert_user)",
                field_name(*field)
            ),
            IdentityError::Ambiguous(field) => write!(
                f,
                "client certificate has more than one {}; refusing to guess",
                field_name(*field)
            ),
            IdentityError::BadValue(field, why) => write!(
                f,
                "client certificate {} is not a usable account name: {why}",
                field_name(*field)
            ),
        }
    }
}

impl std::error::Error for IdentityError {}

/// The account named by `end_entity` (the first certificate of the
/// client's verified chain) in the configured `field`.
pub fn cert_identity(
    end_entity: &CertificateDer<'_>,
    field: CertUserField,
) -> Result<String, IdentityError> {
    let cert = Certificate::from_der(end_entity.as_ref())
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let tbs = &cert.tbs_certificate;
    let value = match field {
        CertUserField::Cn => subject_attribute(&tbs.subject, OID_CN, field)?,
        CertUserField::Email => subject_attribute(&tbs.subject, OID_EMAIL, field)?,
        CertUserField::SanEmail => {
            let ext = tbs
                .extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id == OID_SAN)
                .ok_or(IdentityError::Missing(field))?;
            let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
            san.0
                .into_iter()
                .find_map(|name| match name {
                    GeneralName::Rfc822Name(email) => Some(email.to_string()),
                    _ => None,
                })
                .ok_or(IdentityError::Missing(field))?
        }
    };
    check(value, field)
}

/// The one value of attribute `oid` in the subject, as text.
fn subject_attribute(
    subject: &Name,
    oid: ObjectIdentifier,
    field: CertUserField,
) -> Result<String, IdentityError> {
    let mut values = subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == oid)
        .map(|atv| &atv.value);
    let value = values.next().ok_or(IdentityError::Missing(field))?;
    if values.next().is_some() {
        return Err(IdentityError::Ambiguous(field));
    }
    directory_string(value).ok_or(IdentityError::BadValue(
        field,
        "unsupported string type or invalid encoding",
    ))
}

/// X.520 DirectoryString and IA5String values as Rust text.
fn directory_string(value: &Any) -> Option<String> {
    let bytes = value.value();
    match value.tag() {
        Tag::Utf8String => String::from_utf8(bytes.to_vec()).ok(),
        // Both are ASCII subsets; the exact PrintableString alphabet does
        // not matter for a name we only compare.
        Tag::PrintableString | Tag::Ia5String => bytes
            .is_ascii()
            .then(|| String::from_utf8_lossy(bytes).into_owned()),
        Tag::BmpString => {
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

fn check(value: String, field: CertUserField) -> Result<String, IdentityError> {
    if value.is_empty() {
        return Err(IdentityError::BadValue(field, "it is empty"));
    }
    if value.len() > MAX_CERT_IDENTITY {
        return Err(IdentityError::BadValue(
            field,
            "it is longer than 255 bytes",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(IdentityError::BadValue(
            field,
            "it contains control characters",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
