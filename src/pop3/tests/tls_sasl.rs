//! STLS, AUTH (PLAIN, EXTERNAL, SCRAM-SHA-256) and the plaintext policy, byte-exact.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};

use super::fakes::{capture_logs, logs, settings, FakeAuth, FakeOpener};
use super::{closes_with, converse, say, talk};
use rustls::pki_types::CertificateDer;

use crate::account::{AuthOutcome, Login, Principal};
use crate::authenticator::{Authenticator, ScramLogin};
use crate::pop3::{Backend, Control, Session, SessionSettings, State};
use crate::sasl::{ScramParams, ScramSecret, SecretLookup, KEY_LEN};

const ALICE_OK: &str = "+OK maildrop has 3 messages (115 octets)\r\n";
const NOT_ALLOWED_STLS: &str =
    "-ERR [AUTH] plaintext authentication is not allowed on this connection; use STLS\r\n";

/// FakeAuth plus certificate and SCRAM logins.
struct ScramAuth {
    scram: bool,
}

impl Authenticator for ScramAuth {
    fn verify_password(&self, user: &str, password: &[u8]) -> AuthOutcome<Login> {
        FakeAuth.verify_password(user, password)
    }

    /// The fake "verifies" a chain whose first certificate is the
    /// account name itself.
    fn verify_certificate(
        &self,
        chain: &[CertificateDer<'_>],
        authzid: &str,
    ) -> AuthOutcome<Login> {
        let Some(name) = chain.first().and_then(|c| std::str::from_utf8(c).ok()) else {
            return AuthOutcome::Rejected;
        };
        if !authzid.is_empty() && authzid != name {
            return AuthOutcome::Rejected;
        }
        account(name)
    }

    fn offers_scram(&self) -> bool {
        self.scram
    }

    fn scram_params(&self, user: &str) -> SecretLookup {
        match scram_secret(user) {
            Ok(Some(s)) => SecretLookup::Found(ScramParams {
                salt: s.salt().to_vec(),
                iterations: s.iterations(),
            }),
            Ok(None) => SecretLookup::NoSecret,
            Err(why) => SecretLookup::Unavailable(why),
        }
    }

    fn scram_login(&self, user: &str, auth_message: &[u8], proof: &[u8; KEY_LEN]) -> ScramLogin {
        match scram_secret(user) {
            Ok(Some(s)) => match s.check_proof(auth_message, proof) {
                Some(sig) => ScramLogin {
                    outcome: account(user),
                    server_signature: Some(sig),
                },
                None => ScramLogin::rejected(),
            },
            Ok(None) => ScramLogin::rejected(),
            Err(why) => ScramLogin::failed(AuthOutcome::Unavailable(why)),
        }
    }
}

fn account(user: &str) -> AuthOutcome<Login> {
    match user {
        "alice" | "carol" => AuthOutcome::Accepted(Login::by_path(Principal {
            user: user.to_owned(),
            mailbox: format!("/var/mail/{user}").into(),
        })),
        "broken" => AuthOutcome::Unavailable("passwd file unreadable".into()),
        _ => AuthOutcome::Rejected,
    }
}

/// carol/pencil has a SCRAM secret; `broken` makes the lookup fail.
fn scram_secret(user: &str) -> Result<Option<ScramSecret>, String> {
    match user {
        "carol" => Ok(Some(
            ScramSecret::derive(b"pencil", b"carol's salt", 4096).unwrap(),
        )),
        "broken" => Err("passwd file unreadable".into()),
        _ => Ok(None),
    }
}

fn session(settings: SessionSettings, scram: bool) -> Session {
    let backend = Backend {
        auth: Arc::new(ScramAuth { scram }),
        maildrops: Arc::new(FakeOpener {
            commits: Default::default(),
        }),
    };
    Session::new(backend, settings)
}

fn b64(data: &[u8]) -> String {
    BASE64.encode(data)
}

fn capa_lines(s: &mut Session) -> Vec<String> {
    say(s, "CAPA")
        .split("\r\n")
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn stls_then_fresh_authorization() {
    let mut s = session(settings(false, true), false);
    say(&mut s, "USER alice");
    assert!(capa_lines(&mut s).contains(&"STLS".into()));
    assert_eq!(
        talk(&mut s, "STLS"),
        ("+OK Begin TLS negotiation\r\n".into(), Control::StartTls)
    );
    // Until the driver reports the handshake, nothing is executed.
    closes_with(&mut s, "CAPA", "");
    let mut out = Vec::new();
    assert_eq!(s.handle_too_long(&mut out).unwrap(), Control::Close);
    assert!(out.is_empty());
    s.tls_started(Some("TLSv1.3"), None, None);
    assert_eq!(s.state(), State::Authorization);
    let caps = capa_lines(&mut s);
    assert!(!caps.contains(&"STLS".into()), "{caps:?}");
    assert!(caps.contains(&"USER".into()), "{caps:?}");
    assert!(caps.contains(&"SASL PLAIN".into()), "{caps:?}");
    // The USER before STLS is forgotten.
    converse(
        &mut s,
        &[
            (
                "PASS wonder land",
                "-ERR PASS must follow a successful USER\r\n",
            ),
            ("STLS", "-ERR TLS is already active\r\n"),
        ],
    );
    say(&mut s, "USER alice");
    assert_eq!(say(&mut s, "PASS wonder land"), ALICE_OK);
}

#[test]
fn stls_refusals_keep_the_session() {
    let mut s = session(settings(false, true), false);
    assert_eq!(say(&mut s, "STLS now"), "-ERR STLS takes no arguments\r\n");
    let mut s = session(settings(true, false), false);
    assert_eq!(
        say(&mut s, "STLS"),
        "-ERR TLS is not available on this connection\r\n"
    );
    // tls_started without STLS changes nothing.
    s.tls_started(Some("TLSv1.3"), Some("alice".into()), Some(chain("alice")));
    assert!(!capa_lines(&mut s).iter().any(|l| l.contains("EXTERNAL")));
}

#[test]
fn plaintext_policy_hides_and_refuses_plain_mechanisms() {
    let mut s = session(settings(false, true), false);
    let caps = capa_lines(&mut s);
    assert!(
        !caps.iter().any(|c| c == "USER" || c.starts_with("SASL")),
        "{caps:?}"
    );
    assert_eq!(say(&mut s, "AUTH"), "+OK SASL mechanisms follow\r\n.\r\n");
    let ir = b64(b"\0alice\0wonder land");
    converse(
        &mut s,
        &[
            (&format!("AUTH PLAIN {ir}"), NOT_ALLOWED_STLS),
            ("AUTH plain", NOT_ALLOWED_STLS),
            ("USER alice", NOT_ALLOWED_STLS),
        ],
    );
    assert_eq!(s.state(), State::Authorization);
    // SCRAM never sends the password: offered whatever the policy.
    let mut s = session(settings(false, false), true);
    assert!(capa_lines(&mut s).contains(&"SASL SCRAM-SHA-256".into()));
    assert_eq!(
        say(&mut s, "AUTH"),
        "+OK SASL mechanisms follow\r\nSCRAM-SHA-256\r\n.\r\n"
    );
}

#[test]
fn auth_plain_with_and_without_initial_response() {
    capture_logs();
    let mut s = session(settings(true, false), false);
    let ir = b64(b"\0alice\0wonder land");
    assert_eq!(say(&mut s, &format!("AUTH PLAIN {ir}")), ALICE_OK);
    assert!(logs()
        .join("\n")
        .contains("login: user=alice method=PLAIN rip=192.0.2.7 lip=192.0.2.1"));

    let mut s = session(settings(true, false), false);
    assert_eq!(say(&mut s, "AUTH PLAIN"), "+ \r\n");
    assert_eq!(s.max_line(), crate::limits::MAX_SASL_LINE + 2);
    assert_eq!(say(&mut s, &b64(b"alice\0alice\0wonder land")), ALICE_OK);
    assert_eq!(s.max_line(), 255);
    assert!(!logs().join("\n").contains("wonder"), "password logged");
}

#[test]
fn auth_plain_failures() {
    let mut s = session(settings(true, false), false);
    assert_eq!(
        talk(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0nope"))),
        (
            "-ERR [AUTH] invalid user name or password\r\n".into(),
            Control::AuthFailed { then_close: false }
        )
    );
    assert_eq!(
        talk(
            &mut s,
            &format!("AUTH PLAIN {}", b64(b"bob\0alice\0wonder land"))
        ),
        (
            "-ERR [AUTH] authorization identity must be empty or the authenticated user\r\n".into(),
            Control::AuthFailed { then_close: false }
        )
    );
    converse(
        &mut s,
        &[
            (
                &format!("AUTH PLAIN {}", b64(b"\0broken\0x")),
                "-ERR [SYS/TEMP] authentication is temporarily unavailable; try again later\r\n",
            ),
            ("AUTH PLAIN", "+ \r\n"),
            ("*", "-ERR authentication cancelled\r\n"),
            ("AUTH PLAIN", "+ \r\n"),
            ("not base64!", "-ERR invalid base64 in SASL response\r\n"),
            ("AUTH PLAIN", "+ \r\n"),
        ],
    );
    let mut out = Vec::new();
    assert_eq!(s.handle_too_long(&mut out).unwrap(), Control::Continue);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "-ERR SASL response too long (at most 8192 octets)\r\n"
    );
    converse(
        &mut s,
        &[
            (
                "AUTH PLAIN =",
                "-ERR malformed SASL response: PLAIN needs authzid NUL authcid NUL password\r\n",
            ),
            (
                "AUTH LOGIN",
                "-ERR unsupported SASL mechanism (AUTH without arguments lists them)\r\n",
            ),
            (
                "AUTH SCRAM-SHA-256",
                "-ERR [AUTH] SCRAM-SHA-256 is not available: no account has a secret for it\r\n",
            ),
        ],
    );
    // After all that, the session still logs in.
    assert_eq!(
        say(
            &mut s,
            &format!("AUTH PLAIN {}", b64(b"\0alice\0wonder land"))
        ),
        ALICE_OK
    );
}

/// A fake chain that the fake passdb reads as naming `name`.
fn chain(name: &str) -> crate::account::ClientChain {
    Arc::from(vec![CertificateDer::from(name.as_bytes().to_vec())])
}

fn tls_settings(identity: Option<&str>) -> SessionSettings {
    let mut st = settings(true, false);
    st.tls_active = true;
    st.cert_identity = identity.map(str::to_owned);
    st.client_chain = identity.map(chain);
    st
}

#[test]
fn external_uses_the_certificate_identity() {
    let mut s = session(tls_settings(Some("alice")), false);
    assert!(capa_lines(&mut s).contains(&"SASL EXTERNAL PLAIN".into()));
    assert_eq!(say(&mut s, "AUTH EXTERNAL ="), ALICE_OK);

    // Without an initial response: an empty challenge, an empty answer.
    let mut s = session(tls_settings(Some("alice")), false);
    converse(&mut s, &[("AUTH EXTERNAL", "+ \r\n"), ("", ALICE_OK)]);

    let mut s = session(tls_settings(Some("alice")), false);
    assert_eq!(
        say(&mut s, &format!("AUTH EXTERNAL {}", b64(b"alice"))),
        ALICE_OK
    );
}

#[test]
fn external_refusals() {
    let auth_err = |text: &str| {
        (
            format!("-ERR [AUTH] {text}\r\n"),
            Control::AuthFailed { then_close: false },
        )
    };
    // No (valid) certificate: EXTERNAL is not offered and fails as [AUTH].
    let mut s = session(tls_settings(None), false);
    assert!(!capa_lines(&mut s).iter().any(|l| l.contains("EXTERNAL")));
    assert_eq!(
        talk(&mut s, "AUTH EXTERNAL ="),
        auth_err("no verified client certificate naming an account")
    );
    // Password authentication still works on that connection.
    assert_eq!(
        say(
            &mut s,
            &format!("AUTH PLAIN {}", b64(b"\0alice\0wonder land"))
        ),
        ALICE_OK
    );

    let mut s = session(tls_settings(Some("alice")), false);
    assert_eq!(
        talk(&mut s, &format!("AUTH EXTERNAL {}", b64(b"bob"))),
        auth_err("authorization identity must be empty or the authenticated user")
    );
    // A certificate naming no account in the passdb.
    let mut s = session(tls_settings(Some("mallory")), false);
    assert_eq!(
        talk(&mut s, "AUTH EXTERNAL ="),
        auth_err("invalid user name or password")
    );
    let mut s = session(tls_settings(Some("broken")), false);
    assert_eq!(
        say(&mut s, "AUTH EXTERNAL ="),
        "-ERR [SYS/TEMP] authentication is temporarily unavailable; try again later\r\n"
    );
    // The passdb's verdict on the chain decides, not the session's hint.
    let mut st = tls_settings(Some("alice"));
    st.client_chain = Some(chain("mallory"));
    let mut s = session(st, false);
    assert_eq!(
        talk(&mut s, "AUTH EXTERNAL ="),
        auth_err("invalid user name or password")
    );
    let mut st = tls_settings(Some("alice"));
    st.client_chain = None;
    let mut s = session(st, false);
    assert_eq!(
        talk(&mut s, "AUTH EXTERNAL ="),
        auth_err("invalid user name or password")
    );
}

/// The client side of SCRAM-SHA-256, from RFC 5802 §3.
fn scram_client_final(
    password: &[u8],
    client_first_bare: &str,
    server_first: &str,
) -> (String, String) {
    let attr = |name: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(name))
            .unwrap()
            .to_owned()
    };
    let (nonce, salt, iterations) = (attr("r="), BASE64.decode(attr("s=")).unwrap(), attr("i="));
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations.parse().unwrap(),
        &salt,
        password,
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let server_key = hmac::sign(&key, b"Server Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
        auth_message.as_bytes(),
    );
    let proof: Vec<u8> = client_key
        .as_ref()
        .iter()
        .zip(signature.as_ref())
        .map(|(a, b)| a ^ b)
        .collect();
    let server_signature = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
        auth_message.as_bytes(),
    );
    (
        format!("{without_proof},p={}", b64(&proof)),
        format!("v={}", b64(server_signature.as_ref())),
    )
}

fn challenge(reply: &str) -> String {
    let text = reply
        .strip_prefix("+ ")
        .unwrap()
        .strip_suffix("\r\n")
        .unwrap();
    String::from_utf8(BASE64.decode(text).unwrap()).unwrap()
}

#[test]
fn scram_sha_256_full_exchange() {
    for (password, ok) in [(&b"pencil"[..], true), (b"pencils", false)] {
        let mut s = session(settings(false, false), true);
        let bare = "n=carol,r=fyko+d2lbbFgONRv9qkxdawL";
        let server_first = challenge(&say(
            &mut s,
            &format!(
                "AUTH SCRAM-SHA-256 {}",
                b64(format!("n,,{bare}").as_bytes())
            ),
        ));
        assert!(
            server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"),
            "{server_first}"
        );
        assert!(server_first.ends_with(",i=4096"), "{server_first}");
        let (client_final, want_server_final) = scram_client_final(password, bare, &server_first);
        let (reply, control) = talk(&mut s, &b64(client_final.as_bytes()));
        if !ok {
            assert_eq!(
                (reply.as_str(), control),
                (
                    "-ERR [AUTH] authentication failed\r\n",
                    Control::AuthFailed { then_close: false }
                )
            );
            continue;
        }
        assert_eq!(challenge(&reply), want_server_final);
        assert_eq!(
            say(&mut s, ""),
            "+OK maildrop has 0 messages (0 octets)\r\n"
        );
        assert_eq!(s.state(), State::Transaction);
    }
}

#[test]
fn scram_backend_failure_is_sys_temp() {
    let mut s = session(settings(false, false), true);
    let first = b64(b"n,,n=broken,r=abcdef");
    assert_eq!(
        say(&mut s, &format!("AUTH SCRAM-SHA-256 {first}")),
        "-ERR [SYS/TEMP] authentication is temporarily unavailable; try again later\r\n"
    );
}

#[test]
fn sasl_failures_count_towards_the_limit() {
    let mut s = session(tls_settings(None), false);
    for i in 1..=crate::limits::MAX_AUTH_FAILURES {
        let then_close = i == crate::limits::MAX_AUTH_FAILURES;
        assert_eq!(
            talk(&mut s, "AUTH EXTERNAL =").1,
            Control::AuthFailed { then_close }
        );
    }
    closes_with(&mut s, "CAPA", "");
}
