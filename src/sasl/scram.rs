//! SCRAM-SHA-256 (RFC 5802, RFC 7677) server exchange, without channel binding.
//!
//! client-first → server-first (nonce, salt, iterations) → client-final
//! with the proof → server-final `v=` as a challenge, answered by an empty
//! response (POP3 has no "additional data with success", RFC 5034 §4).
//! SCRAM-SHA-256-PLUS is not offered, so the `p=` channel-binding flag is
//! refused and `y` (client could bind, thinks we cannot) is accepted.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::rand::SecureRandom as _;

use super::scram_secret::{hmac_sha256, KEY_LEN};
use super::{Failure, Outcome, Step};
use crate::account::Login;
use crate::limits::MAX_SCRAM_USER;

/// Raw bytes of the server's half of the nonce (32 base64 characters).
const SERVER_NONCE_BYTES: usize = 24;

/// The passdb as the exchange sees it. The exchange never holds StoredKey
/// or ServerKey: it asks for the public salt and iteration count, and
/// hands the client's proof to the passdb, which checks it and, on
/// success, logs the account in (the privileged helper opens the spool
/// only then).
pub trait ScramLookup: Send + Sync {
    fn scram_params(&self, user: &str) -> SecretLookup;
    fn scram_verify(&self, user: &str, auth_message: &[u8], proof: &[u8; KEY_LEN]) -> ProofCheck;
}

/// The public half of a SCRAM secret: what server-first sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramParams {
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// The passdb's answer for one user.
pub enum SecretLookup {
    Found(ScramParams),
    /// Unknown user, or the entry is a crypt hash that cannot serve SCRAM.
    /// Answered exactly like a wrong password.
    NoSecret,
    /// The passdb failed; the text is for the log.
    Unavailable(String),
}

/// The passdb's verdict on a client's proof.
#[derive(Debug)]
pub enum ProofCheck {
    /// The proof is right: the login (the account with its spool), and
    /// the ServerSignature for `v=`.
    Verified {
        login: Login,
        server_signature: [u8; KEY_LEN],
    },
    /// Wrong proof, unknown user, locked account.
    Rejected,
    /// The passdb failed; the text is for the log.
    Unavailable(String),
}

enum State {
    ClientFirst,
    ClientFinal(Box<Pending>),
    /// Proof checked, server-final sent; waiting for the empty response.
    Verified(Login),
    Over,
}

struct Pending {
    user: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

pub(super) struct ScramServer {
    lookup: Arc<dyn ScramLookup>,
    /// Fixed only by tests (RFC 7677's vector); otherwise from the OS.
    server_nonce: Option<String>,
    state: State,
}

impl ScramServer {
    pub(super) fn new(lookup: Arc<dyn ScramLookup>) -> ScramServer {
        ScramServer {
            lookup,
            server_nonce: None,
            state: State::ClientFirst,
        }
    }

    #[cfg(test)]
    pub(super) fn with_server_nonce(lookup: Arc<dyn ScramLookup>, nonce: &str) -> ScramServer {
        ScramServer {
            server_nonce: Some(nonce.to_owned()),
            ..ScramServer::new(lookup)
        }
    }

    pub(super) fn step(&mut self, message: &[u8]) -> Step {
        let result = match std::mem::replace(&mut self.state, State::Over) {
            State::ClientFirst => self.client_first(message),
            State::ClientFinal(pending) => self.client_final(*pending, message),
            State::Verified(login) if message.is_empty() => {
                return Step::Done(Outcome::Accepted(login))
            }
            State::Verified(_) => Err(Failure::Malformed(
                "expected an empty response after the server signature",
            )),
            State::Over => Err(Failure::Malformed("the exchange is already over")),
        };
        match result {
            Ok(challenge) => Step::Challenge(challenge),
            Err(failure) => Step::Failed(failure),
        }
    }

    fn client_first(&mut self, message: &[u8]) -> Result<Vec<u8>, Failure> {
        let msg = utf8(message)?;
        let (cbind, rest) = msg.split_once(',').ok_or(MALFORMED)?;
        match cbind {
            "n" | "y" => {}
            _ if cbind.starts_with("p=") => {
                return Err(Failure::Malformed("channel binding is not supported"))
            }
            _ => return Err(MALFORMED),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(MALFORMED)?;
        let authzid = match authzid {
            "" => None,
            a => Some(saslname(a.strip_prefix("a=").ok_or(MALFORMED)?)?),
        };
        let gs2_header = msg
            .get(..msg.len() - bare.len())
            .ok_or(MALFORMED)?
            .to_owned();
        let mut attrs = bare.split(',');
        let user = match attrs.next() {
            Some(a) if a.starts_with("m=") => {
                return Err(Failure::Malformed("mandatory extensions are not supported"))
            }
            Some(a) => saslname(a.strip_prefix("n=").ok_or(MALFORMED)?)?,
            None => return Err(MALFORMED),
        };
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| valid_nonce(n))
            .ok_or(Failure::Malformed("missing or invalid client nonce"))?;
        if authzid.is_some_and(|a| a != user) {
            return Err(Failure::AuthzidMismatch);
        }
        let params = match self.lookup.scram_params(&user) {
            SecretLookup::Found(params) => params,
            SecretLookup::NoSecret => decoy(&user)?,
            SecretLookup::Unavailable(detail) => return Err(Failure::Unavailable(detail)),
        };
        let server_nonce = match &self.server_nonce {
            Some(n) => n.clone(),
            None => random_nonce()?,
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&params.salt),
            params.iterations
        );
        let challenge = server_first.clone().into_bytes();
        self.state = State::ClientFinal(Box::new(Pending {
            user,
            gs2_header,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        }));
        Ok(challenge)
    }

    fn client_final(&mut self, p: Pending, message: &[u8]) -> Result<Vec<u8>, Failure> {
        let msg = utf8(message)?;
        let (without_proof, proof) = msg.rsplit_once(',').ok_or(MALFORMED)?;
        let proof = proof
            .strip_prefix("p=")
            .ok_or(Failure::Malformed("the proof must come last"))?;
        let proof: [u8; KEY_LEN] = BASE64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(Failure::Malformed("the proof is not 32 bytes of base64"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(MALFORMED)?;
        if binding != BASE64.encode(&p.gs2_header) {
            return Err(Failure::Malformed("channel binding data does not match"));
        }
        if attrs.next().and_then(|a| a.strip_prefix("r=")) != Some(p.nonce.as_str()) {
            return Err(Failure::Malformed("nonce does not match"));
        }
        let auth_message = format!("{},{},{without_proof}", p.client_first_bare, p.server_first);
        // Unknown users too go to the passdb, which rejects them after the
        // same work: the reply time does not tell whether the account exists.
        match self
            .lookup
            .scram_verify(&p.user, auth_message.as_bytes(), &proof)
        {
            ProofCheck::Verified {
                login,
                server_signature,
            } => {
                self.state = State::Verified(login);
                Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
            }
            ProofCheck::Rejected => Err(Failure::Rejected),
            ProofCheck::Unavailable(detail) => Err(Failure::Unavailable(detail)),
        }
    }
}

const MALFORMED: Failure = Failure::Malformed("not a SCRAM message");

fn utf8(message: &[u8]) -> Result<&str, Failure> {
    std::str::from_utf8(message).map_err(|_| Failure::Malformed("SCRAM messages must be UTF-8"))
}

/// RFC 5802 §5.1 saslname: `=2C` is `,` and `=3D` is `=`; no other `=`.
fn saslname(text: &str) -> Result<String, Failure> {
    const BAD: Failure = Failure::Malformed("invalid SCRAM user name");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('=') {
        out.push_str(rest.get(..i).ok_or(BAD)?);
        let escape = rest.get(i..i + 3).ok_or(BAD)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return Err(BAD),
        });
        rest = rest.get(i + 3..).ok_or(BAD)?;
    }
    out.push_str(rest);
    if out.is_empty() || out.len() > MAX_SCRAM_USER || out.chars().any(char::is_control) {
        return Err(BAD);
    }
    Ok(out)
}

/// RFC 5802: printable ASCII except `,`.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn random_nonce() -> Result<String, Failure> {
    let mut raw = [0u8; SERVER_NONCE_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| Failure::Unavailable("the system random generator failed".into()))?;
    Ok(BASE64.encode(raw))
}

/// The same salt for the same unknown user within one process, so that
/// asking twice does not reveal that the account does not exist.
fn decoy(user: &str) -> Result<ScramParams, Failure> {
    static KEY: OnceLock<Option<[u8; KEY_LEN]>> = OnceLock::new();
    let key = KEY
        .get_or_init(|| {
            let mut k = [0u8; KEY_LEN];
            ring::rand::SystemRandom::new().fill(&mut k).ok().map(|_| k)
        })
        .ok_or_else(|| Failure::Unavailable("the system random generator failed".into()))?;
    let mac = hmac_sha256(&key, user.as_bytes());
    let salt = mac.get(..16).unwrap_or(&mac).to_vec();
    Ok(ScramParams {
        salt,
        iterations: crate::limits::MIN_SCRAM_ITERATIONS,
    })
}

#[cfg(test)]
mod tests;
