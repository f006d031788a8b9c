//! SCRAM exchange tests: RFC 7677's vector, a client written from the RFC, every refusal.

use std::collections::HashMap;

use ring::{digest, hmac};

use super::*;
use crate::account::Principal;
use crate::sasl::{ScramSecret, SecretLookup};

/// RFC 7677 §3.
const C_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const S_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

struct Users(HashMap<String, Option<ScramSecret>>);

impl ScramLookup for Users {
    fn scram_params(&self, user: &str) -> SecretLookup {
        match self.0.get(user) {
            Some(Some(secret)) => SecretLookup::Found(ScramParams {
                salt: secret.salt().to_vec(),
                iterations: secret.iterations(),
            }),
            Some(None) => SecretLookup::Unavailable("passwd file unreadable".into()),
            None => SecretLookup::NoSecret,
        }
    }

    fn scram_verify(&self, user: &str, auth_message: &[u8], proof: &[u8; KEY_LEN]) -> ProofCheck {
        match self.0.get(user) {
            Some(Some(secret)) => match secret.check_proof(auth_message, proof) {
                Some(server_signature) => ProofCheck::Verified {
                    login: Login::by_path(Principal {
                        user: user.to_owned(),
                        mailbox: format!("/var/mail/{user}").into(),
                    }),
                    server_signature,
                },
                None => ProofCheck::Rejected,
            },
            Some(None) => ProofCheck::Unavailable("passwd file unreadable".into()),
            None => ProofCheck::Rejected,
        }
    }
}

fn users() -> Arc<Users> {
    let salt = BASE64.decode(SALT).unwrap();
    let mut map = HashMap::new();
    map.insert(
        "user".to_owned(),
        Some(ScramSecret::derive(b"pencil", &salt, 4096).unwrap()),
    );
    map.insert(
        "a,b=c".to_owned(),
        Some(ScramSecret::derive(b"pw", &salt, 4096).unwrap()),
    );
    map.insert("broken".to_owned(), None);
    Arc::new(Users(map))
}

fn challenge(step: Step) -> String {
    match step {
        Step::Challenge(c) => String::from_utf8(c).unwrap(),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn failure(step: Step) -> Failure {
    match step {
        Step::Failed(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn rfc7677_vector() {
    let mut server = ScramServer::with_server_nonce(users(), S_NONCE);
    assert_eq!(
        challenge(server.step(CLIENT_FIRST.as_bytes())),
        SERVER_FIRST
    );
    assert_eq!(
        challenge(server.step(CLIENT_FINAL.as_bytes())),
        SERVER_FINAL
    );
    match server.step(b"") {
        Step::Done(Outcome::Accepted(l)) => assert_eq!(l.principal.user, "user"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        server.step(b""),
        Step::Failed(Failure::Malformed(_))
    ));
}

#[test]
fn rfc7677_wrong_proof_rejected() {
    let mut server = ScramServer::with_server_nonce(users(), S_NONCE);
    challenge(server.step(CLIENT_FIRST.as_bytes()));
    let tampered = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
    assert_eq!(failure(server.step(tampered.as_bytes())), Failure::Rejected);
}

/// A SCRAM-SHA-256 client written from RFC 5802 §3, sharing no code with
/// the server: Hi() is spelled out as the RFC defines it.
struct Client {
    password: &'static [u8],
    gs2: &'static str,
    first_bare: String,
    nonce: String,
    auth_message: String,
    salted: Vec<u8>,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn hi(password: &[u8], salt: &[u8], i: u32) -> Vec<u8> {
    let mut u = hmac(password, &[salt, &[0, 0, 0, 1]].concat());
    let mut out = u.clone();
    for _ in 1..i {
        u = hmac(password, &u);
        out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
    }
    out
}

impl Client {
    fn new(gs2: &'static str, user: &str, password: &'static [u8]) -> Client {
        Client {
            password,
            gs2,
            first_bare: format!("n={user},r=clientnonce123"),
            nonce: String::new(),
            auth_message: String::new(),
            salted: Vec::new(),
        }
    }

    fn first(&self) -> String {
        format!("{}{}", self.gs2, self.first_bare)
    }

    fn last(&mut self, server_first: &str) -> String {
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iters = 0;
        for attr in server_first.split(',') {
            match attr.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = BASE64.decode(v).unwrap(),
                ("i=", v) => iters = v.parse().unwrap(),
                _ => {}
            }
        }
        assert!(nonce.starts_with("clientnonce123") && nonce.len() > 14);
        self.nonce = nonce.to_owned();
        self.salted = hi(self.password, &salt, iters);
        let without_proof = format!("c={},r={nonce}", BASE64.encode(self.gs2));
        self.auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let client_key = hmac(&self.salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let signature = hmac(stored_key.as_ref(), self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", BASE64.encode(proof))
    }

    fn server_signature_ok(&self, server_final: &str) -> bool {
        let server_key = hmac(&self.salted, b"Server Key");
        let expected = hmac(&server_key, self.auth_message.as_bytes());
        server_final == format!("v={}", BASE64.encode(expected))
    }
}

fn run(client: &mut Client, server: &mut ScramServer) -> Result<String, Failure> {
    let server_first = match server.step(client.first().as_bytes()) {
        Step::Challenge(c) => String::from_utf8(c).unwrap(),
        Step::Failed(f) => return Err(f),
        Step::Done(o) => panic!("{o:?}"),
    };
    let server_final = match server.step(client.last(&server_first).as_bytes()) {
        Step::Challenge(c) => String::from_utf8(c).unwrap(),
        Step::Failed(f) => return Err(f),
        Step::Done(o) => panic!("{o:?}"),
    };
    assert!(client.server_signature_ok(&server_final), "{server_final}");
    match server.step(b"") {
        Step::Done(Outcome::Accepted(l)) => Ok(l.principal.user),
        other => panic!("{other:?}"),
    }
}

#[test]
fn independent_client_with_random_nonce() {
    let mut server = ScramServer::new(users());
    let mut client = Client::new("n,,", "user", b"pencil");
    assert_eq!(run(&mut client, &mut server), Ok("user".into()));
    // The server's nonce half is fresh each time.
    let mut again = ScramServer::new(users());
    let mut client2 = Client::new("n,,", "user", b"pencil");
    run(&mut client2, &mut again).unwrap();
    assert_ne!(client.nonce, client2.nonce);
}

#[test]
fn y_flag_and_matching_authzid_accepted() {
    let mut client = Client::new("y,,", "user", b"pencil");
    assert_eq!(
        run(&mut client, &mut ScramServer::new(users())),
        Ok("user".into())
    );
    let mut client = Client::new("n,a=user,", "user", b"pencil");
    assert_eq!(
        run(&mut client, &mut ScramServer::new(users())),
        Ok("user".into())
    );
}

#[test]
fn escaped_user_name() {
    let mut client = Client::new("n,,", "a=2Cb=3Dc", b"pw");
    assert_eq!(
        run(&mut client, &mut ScramServer::new(users())),
        Ok("a,b=c".into())
    );
}

#[test]
fn wrong_password_rejected() {
    let mut client = Client::new("n,,", "user", b"pencils");
    assert_eq!(
        run(&mut client, &mut ScramServer::new(users())),
        Err(Failure::Rejected)
    );
}

#[test]
fn unknown_user_looks_like_known_then_fails() {
    let first = |user: &str| {
        let mut s = ScramServer::new(users());
        challenge(s.step(format!("n,,n={user},r=abc").as_bytes()))
    };
    let a = first("nobody");
    let b = first("nobody");
    let salt = |s: &str| s.split(',').nth(1).unwrap().to_owned();
    assert_eq!(salt(&a), salt(&b), "decoy salt must be stable");
    assert_ne!(salt(&a), salt(&first("someone-else")));
    assert!(a.ends_with(",i=4096"));
    let mut client = Client::new("n,,", "nobody", b"pencil");
    assert_eq!(
        run(&mut client, &mut ScramServer::new(users())),
        Err(Failure::Rejected)
    );
}

#[test]
fn backend_failure_is_unavailable() {
    let mut s = ScramServer::new(users());
    assert!(matches!(
        failure(s.step(b"n,,n=broken,r=abc")),
        Failure::Unavailable(_)
    ));
}

#[test]
fn client_first_refusals() {
    let cases: &[(&[u8], Failure)] = &[
        (
            b"p=tls-unique,,n=user,r=abc",
            Failure::Malformed("channel binding is not supported"),
        ),
        (b"n,a=other,n=user,r=abc", Failure::AuthzidMismatch),
        (
            b"n,,m=ext,n=user,r=abc",
            Failure::Malformed("mandatory extensions are not supported"),
        ),
        (
            b"n,,n=user,r=",
            Failure::Malformed("missing or invalid client nonce"),
        ),
        (
            b"n,,n=user",
            Failure::Malformed("missing or invalid client nonce"),
        ),
        (
            b"n,,n=user,r=a\x7fb",
            Failure::Malformed("missing or invalid client nonce"),
        ),
        (
            b"n,,n=user,x=abc",
            Failure::Malformed("missing or invalid client nonce"),
        ),
        (
            b"n,,n=,r=abc",
            Failure::Malformed("invalid SCRAM user name"),
        ),
        (
            b"n,,n=a=2,r=abc",
            Failure::Malformed("invalid SCRAM user name"),
        ),
        (
            b"n,,n=a=41,r=abc",
            Failure::Malformed("invalid SCRAM user name"),
        ),
        (
            b"n,,n=a\x01,r=abc",
            Failure::Malformed("invalid SCRAM user name"),
        ),
        (b"n,b=x,n=user,r=abc", MALFORMED),
        (b"x,,n=user,r=abc", MALFORMED),
        (b"n,,u=user,r=abc", MALFORMED),
        (b"n", MALFORMED),
        (b"n,", MALFORMED),
        (b"", MALFORMED),
        (
            b"n,,n=us\xffer,r=abc",
            Failure::Malformed("SCRAM messages must be UTF-8"),
        ),
    ];
    for (message, want) in cases {
        let mut s = ScramServer::new(users());
        assert_eq!(
            &failure(s.step(message)),
            want,
            "{:?}",
            String::from_utf8_lossy(message)
        );
        // A failed exchange stays over.
        assert!(matches!(s.step(b""), Step::Failed(Failure::Malformed(_))));
    }
    let long_user = format!(
        "n,,n={},r=abc",
        "u".repeat(crate::limits::MAX_SCRAM_USER + 1)
    );
    let mut s = ScramServer::new(users());
    assert!(matches!(
        failure(s.step(long_user.as_bytes())),
        Failure::Malformed(_)
    ));
}

#[test]
fn client_final_refusals() {
    let good_proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let nonce = format!("{C_NONCE}{S_NONCE}");
    let cases: Vec<(String, Failure)> = vec![
        (
            format!("c=eSws,r={nonce},{good_proof}"),
            Failure::Malformed("channel binding data does not match"),
        ),
        (
            format!("c=biws,r={C_NONCE},{good_proof}"),
            Failure::Malformed("nonce does not match"),
        ),
        (
            format!("c=biws,{good_proof}"),
            Failure::Malformed("nonce does not match"),
        ),
        (format!("r={nonce},{good_proof}"), MALFORMED),
        (
            format!("c=biws,r={nonce}"),
            Failure::Malformed("the proof must come last"),
        ),
        (
            format!("c=biws,{good_proof},r={nonce}"),
            Failure::Malformed("the proof must come last"),
        ),
        (
            format!("c=biws,r={nonce},p=AAAA"),
            Failure::Malformed("the proof is not 32 bytes of base64"),
        ),
        (
            format!("c=biws,r={nonce},p=!!"),
            Failure::Malformed("the proof is not 32 bytes of base64"),
        ),
        ("nocomma".to_owned(), MALFORMED),
    ];
    for (message, want) in cases {
        let mut s = ScramServer::with_server_nonce(users(), S_NONCE);
        challenge(s.step(CLIENT_FIRST.as_bytes()));
        assert_eq!(failure(s.step(message.as_bytes())), want, "{message}");
    }
}

#[test]
fn non_empty_answer_to_server_final_refused() {
    let mut s = ScramServer::with_server_nonce(users(), S_NONCE);
    challenge(s.step(CLIENT_FIRST.as_bytes()));
    challenge(s.step(CLIENT_FINAL.as_bytes()));
    assert!(matches!(failure(s.step(b"x")), Failure::Malformed(_)));
}
