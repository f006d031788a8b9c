//! Exchange tests: base64 lines, `=` and `*`, availability, finished exchanges.

use super::*;

struct NoSecrets;

impl ScramLookup for NoSecrets {
    fn scram_params(&self, _user: &str) -> SecretLookup {
        SecretLookup::NoSecret
    }

    fn scram_verify(&self, _user: &str, _message: &[u8], _proof: &[u8; KEY_LEN]) -> ProofCheck {
        ProofCheck::Rejected
    }
}

fn ctx_with_all() -> Context {
    Context {
        scram: Some(Arc::new(NoSecrets)),
        cert_identity: Some("bob".into()),
    }
}

/// A fresh PLAIN exchange (offered in every context).
fn plain() -> Exchange {
    Exchange::start(Mechanism::Plain, &Context::default()).unwrap()
}

fn b64(s: &[u8]) -> Vec<u8> {
    BASE64.encode(s).into_bytes()
}

#[test]
fn mechanism_names_case_insensitive() {
    assert_eq!(Mechanism::from_name(b"plain"), Some(Mechanism::Plain));
    assert_eq!(
        Mechanism::from_name(b"Scram-Sha-256"),
        Some(Mechanism::ScramSha256)
    );
    assert_eq!(Mechanism::from_name(b"EXTERNAL"), Some(Mechanism::External));
    assert_eq!(Mechanism::from_name(b"SCRAM-SHA-256-PLUS"), None);
    assert_eq!(Mechanism::from_name(b"LOGIN"), None);
    assert_eq!(Mechanism::from_name(b""), None);
    assert!(Mechanism::Plain.sends_password());
    assert!(!Mechanism::ScramSha256.sends_password());
}

#[test]
fn offered_follows_context_and_policy() {
    let all = ctx_with_all();
    assert_eq!(
        all.offered(true),
        vec![
            Mechanism::ScramSha256,
            Mechanism::External,
            Mechanism::Plain
        ]
    );
    assert_eq!(
        all.offered(false),
        vec![Mechanism::ScramSha256, Mechanism::External]
    );
    let none = Context::default();
    assert_eq!(none.offered(true), vec![Mechanism::Plain]);
    assert!(none.offered(false).is_empty());
    assert!(Exchange::start(Mechanism::ScramSha256, &none).is_none());
    assert!(Exchange::start(Mechanism::External, &none).is_none());
    assert!(Exchange::start(Mechanism::Plain, &none).is_some());
}

#[test]
fn plain_initial_response() {
    let mut ex = plain();
    match ex.initial_response(Some(&b64(b"\0bob\0secret"))) {
        Step::Done(Outcome::Password { user, password }) => {
            assert_eq!(user, "bob");
            assert_eq!(password.as_bytes(), b"secret");
            assert_eq!(format!("{password:?}"), "Password(<redacted>)");
        }
        other => panic!("{other:?}"),
    }
    assert!(ex.is_finished());
    assert!(matches!(
        ex.continuation(&b64(b"\0bob\0secret")),
        Step::Failed(Failure::Malformed(_))
    ));
}

#[test]
fn plain_without_initial_response_gets_empty_challenge() {
    let mut ex = plain();
    match ex.initial_response(None) {
        Step::Challenge(c) => assert_eq!(challenge_line(&c), ""),
        other => panic!("{other:?}"),
    }
    assert!(!ex.is_finished());
    assert!(matches!(
        ex.continuation(&b64(b"\0bob\0pw")),
        Step::Done(Outcome::Password { .. })
    ));
}

#[test]
fn equals_sign_is_empty_initial_response() {
    let mut ex = Exchange::start(Mechanism::External, &ctx_with_all()).unwrap();
    match ex.initial_response(Some(b"=")) {
        Step::Done(Outcome::Certificate { authzid }) => assert_eq!(authzid, ""),
        other => panic!("{other:?}"),
    }
    // An empty PLAIN message is malformed, proving "=" reached the mechanism.
    assert!(matches!(
        plain().initial_response(Some(b"=")),
        Step::Failed(Failure::Malformed(_))
    ));
}

#[test]
fn empty_initial_response_argument_is_malformed() {
    assert!(matches!(
        plain().initial_response(Some(b"")),
        Step::Failed(Failure::Malformed(_))
    ));
}

#[test]
fn external_continuation_with_empty_line() {
    let mut ex = Exchange::start(Mechanism::External, &ctx_with_all()).unwrap();
    assert!(matches!(ex.initial_response(None), Step::Challenge(_)));
    match ex.continuation(b"") {
        Step::Done(Outcome::Certificate { authzid }) => assert_eq!(authzid, ""),
        other => panic!("{other:?}"),
    }
}

#[test]
fn star_cancels() {
    let mut ex = plain();
    assert!(matches!(ex.initial_response(None), Step::Challenge(_)));
    assert!(matches!(
        ex.continuation(b"*"),
        Step::Failed(Failure::Cancelled)
    ));
    assert!(ex.is_finished());
    assert!(matches!(
        plain().initial_response(Some(b"*")),
        Step::Failed(Failure::Cancelled)
    ));
}

#[test]
fn bad_base64_refused() {
    for bad in [
        &b"not base64!"[..],
        b"AAA",
        b"AA==AA==",
        b"QQ= ",
        b" QQ==",
        b"QR==",
    ] {
        let mut ex = plain();
        assert!(
            matches!(ex.continuation(bad), Step::Failed(Failure::BadBase64)),
            "{bad:?}"
        );
        assert!(ex.is_finished());
    }
}

#[test]
fn overlong_line_refused_before_decoding() {
    let mut ex = plain();
    let line = vec![b'A'; limits::MAX_SASL_LINE + 4];
    assert!(matches!(
        ex.continuation(&line),
        Step::Failed(Failure::TooLong)
    ));
}

#[test]
fn scram_through_exchange_sends_server_first() {
    let mut ex = Exchange::start(Mechanism::ScramSha256, &ctx_with_all()).unwrap();
    assert_eq!(ex.mechanism(), Mechanism::ScramSha256);
    match ex.initial_response(Some(&b64(b"n,,n=bob,r=abcdef"))) {
        Step::Challenge(c) => {
            let text = String::from_utf8(c).unwrap();
            assert!(text.starts_with("r=abcdef"), "{text}");
            assert_eq!(text.split(',').count(), 3);
        }
        other => panic!("{other:?}"),
    }
    assert!(!ex.is_finished());
}

#[test]
fn failure_classes_and_texts() {
    assert!(Failure::Rejected.is_credential_failure());
    assert!(Failure::AuthzidMismatch.is_credential_failure());
    assert!(Failure::NoCertificate.is_credential_failure());
    assert!(!Failure::Cancelled.is_credential_failure());
    assert!(!Failure::BadBase64.is_credential_failure());
    assert!(!Failure::Unavailable("x".into()).is_credential_failure());
    // The backend detail is for the log only.
    assert!(!Failure::Unavailable("/etc/secret path".into())
        .to_string()
        .contains("/etc"));
    assert!(Failure::TooLong.to_string().contains("8192"));
}

proptest::proptest! {
    #![proptest_config(crate::test_support::proptest_cases(2000))]

    /// A cheap fuzz over every mechanism and both entry points: bytes with
    /// many commas (SCRAM's separator), none of which may panic.
    #[test]
    fn arbitrary_input_never_panics(
        bytes in proptest::collection::vec(
            proptest::prop_oneof![
                1 => proptest::strategy::Just(b','),
                2 => proptest::num::u8::ANY,
            ],
            0..64,
        ),
    ) {
        for mech in Mechanism::ALL {
            let mut ex = Exchange::start(mech, &ctx_with_all()).unwrap();
            let _ = ex.step(&bytes);
            let _ = ex.step(&bytes);
            let mut ex = Exchange::start(mech, &ctx_with_all()).unwrap();
            let _ = ex.initial_response(Some(&bytes));
            let _ = ex.continuation(&b64(&bytes));
        }
    }
}
