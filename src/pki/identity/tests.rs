//! Certificate identity tests with rcgen-made certificates.

use std::str::FromStr;

use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, SanType};

use super::*;

const EMAIL_ARCS: [u64; 7] = [1, 2, 840, 113549, 1, 9, 1];

fn cert(build: impl FnOnce(&mut CertificateParams)) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    // rcgen's default subject is "CN=rcgen self signed cert".
    params.distinguished_name = DistinguishedName::new();
    build(&mut params);
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().clone()
}

fn full() -> CertificateDer<'static> {
    cert(|p| {
        p.distinguished_name
            .push(DnType::OrganizationName, "Example");
        p.distinguished_name.push(DnType::CommonName, "bob");
        p.distinguished_name.push(
            DnType::CustomDnType(EMAIL_ARCS.to_vec()),
            DnValue::Ia5String("bob@example.org".try_into().unwrap()),
        );
        p.subject_alt_names = vec![
            SanType::DnsName("host.example.org".try_into().unwrap()),
            SanType::Rfc822Name("robert@example.org".try_into().unwrap()),
            SanType::Rfc822Name("second@example.org".try_into().unwrap()),
        ];
    })
}

#[test]
fn each_field() {
    let c = full();
    assert_eq!(cert_identity(&c, CertUserField::Cn), Ok("bob".into()));
    assert_eq!(
        cert_identity(&c, CertUserField::Email),
        Ok("bob@example.org".into())
    );
    // The first rfc822Name, skipping other SAN types.
    assert_eq!(
        cert_identity(&c, CertUserField::SanEmail),
        Ok("robert@example.org".into())
    );
}

#[test]
fn string_types() {
    let readable: [(DnValue, &str); 3] = [
        (
            DnValue::PrintableString("Alice Smith".try_into().unwrap()),
            "Alice Smith",
        ),
        (
            DnValue::BmpString("j\u{f6}rg".try_into().unwrap()),
            "j\u{f6}rg",
        ),
        (DnValue::Utf8String("m\u{fc}ller".into()), "m\u{fc}ller"),
    ];
    for (value, want) in readable {
        let c = cert(|p| p.distinguished_name.push(DnType::CommonName, value));
        assert_eq!(cert_identity(&c, CertUserField::Cn), Ok(want.into()));
    }
    let teletex = cert(|p| {
        p.distinguished_name.push(
            DnType::CommonName,
            DnValue::TeletexString("bob".try_into().unwrap()),
        )
    });
    assert!(matches!(
        cert_identity(&teletex, CertUserField::Cn),
        Err(IdentityError::BadValue(CertUserField::Cn, _))
    ));
}

#[test]
fn missing_fields() {
    let bare = cert(|p| {
        p.distinguished_name
            .push(DnType::OrganizationName, "Example")
    });
    for field in [
        CertUserField::Cn,
        CertUserField::Email,
        CertUserField::SanEmail,
    ] {
        assert_eq!(
            cert_identity(&bare, field),
            Err(IdentityError::Missing(field))
        );
    }
    // A SAN extension without any e-mail address.
    let dns_only =
        cert(|p| p.subject_alt_names = vec![SanType::DnsName("h.example.org".try_into().unwrap())]);
    assert_eq!(
        cert_identity(&dns_only, CertUserField::SanEmail),
        Err(IdentityError::Missing(CertUserField::SanEmail))
    );
    let text = IdentityError::Missing(CertUserField::Cn).to_string();
    assert!(text.contains("no subject CN"), "{text}");
}

#[test]
fn unusable_values() {
    let ctrl = cert(|p| p.distinguished_name.push(DnType::CommonName, "bob\nroot"));
    assert!(matches!(
        cert_identity(&ctrl, CertUserField::Cn),
        Err(IdentityError::BadValue(_, "it contains control characters"))
    ));
    let empty = cert(|p| p.distinguished_name.push(DnType::CommonName, ""));
    assert!(matches!(
        cert_identity(&empty, CertUserField::Cn),
        Err(IdentityError::BadValue(_, "it is empty"))
    ));
    let long = cert(|p| {
        p.distinguished_name
            .push(DnType::CommonName, "x".repeat(256))
    });
    assert!(matches!(
        cert_identity(&long, CertUserField::Cn),
        Err(IdentityError::BadValue(_, "it is longer than 255 bytes"))
    ));
}

#[test]
fn several_cns_are_ambiguous() {
    // rcgen writes each attribute once, so build the subject from its
    // RFC 4514 string form.
    let name = Name::from_str("CN=alice,CN=bob,O=Example").unwrap();
    assert_eq!(
        subject_attribute(&name, OID_CN, CertUserField::Cn),
        Err(IdentityError::Ambiguous(CertUserField::Cn))
    );
    let one = Name::from_str("CN=alice,O=Example").unwrap();
    assert_eq!(
        subject_attribute(&one, OID_CN, CertUserField::Cn),
        Ok("alice".into())
    );
}

#[test]
fn garbage_is_unparsable() {
    for bytes in [&b""[..], b"\x30\x03\x02\x01", b"not a certificate"] {
        let der = CertificateDer::from(bytes.to_vec());
        assert!(matches!(
            cert_identity(&der, CertUserField::Cn),
            Err(IdentityError::Unparsable(_))
        ));
    }
    // Every truncation of a real certificate fails cleanly.
    let good = full();
    for len in 0..good.as_ref().len() {
        let der = CertificateDer::from(good.as_ref()[..len].to_vec());
        assert!(cert_identity(&der, CertUserField::SanEmail).is_err());
    }
}
