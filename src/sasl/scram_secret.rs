//! SCRAM-SHA-256 stored secrets in Dovecot's passwd-file form, and the RFC 5802 key derivation.
//!
//! Dovecot (src/auth/password-scheme-scram.c) stores
//! `{SCRAM-SHA-256}<iterations>,<base64 salt>,<base64 StoredKey>,<base64 ServerKey>`
//! and accepts 4096 or more iterations. We read and write exactly that, so
//! passwd files move between Dovecot and ironpop unchanged.

use std::fmt;
use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use ring::{digest, hmac, pbkdf2};

use crate::account::constant_time_eq as ct_eq;
use crate::limits::{MAX_SCRAM_ITERATIONS, MAX_SCRAM_SALT, MIN_SCRAM_ITERATIONS};
use zeroize::Zeroize;

/// The scheme prefix of a passwd-file password field.
pub const SCHEME_PREFIX: &str = "{SCRAM-SHA-256}";

/// Dovecot's salt length for new secrets.
const NEW_SALT_LEN: usize = 16;

/// SHA-256 output length.
pub const KEY_LEN: usize = 32;

/// Why a stored SCRAM secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramSecretError {
    MissingPrefix,
    FieldCount(usize),
    Iterations(String),
    Salt,
    StoredKey,
    ServerKey,
    /// The operating system's random generator failed.
    Random,
}

impl fmt::Display for ScramSecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramSecretError::MissingPrefix => write!(f, "does not start with {SCHEME_PREFIX}"),
            ScramSecretError::FieldCount(n) => write!(
                f,
                "{SCHEME_PREFIX} needs 4 comma-separated fields \
                 (iterations,salt,StoredKey,ServerKey), found {n}"
            ),
            ScramSecretError::Iterations(v) => write!(
                f,
                "{SCHEME_PREFIX} iteration count {v:?} is not a number from \
                 {MIN_SCRAM_ITERATIONS} to {MAX_SCRAM_ITERATIONS}"
            ),
            ScramSecretError::Salt => write!(f, "{SCHEME_PREFIX} salt is not valid base64"),
            ScramSecretError::StoredKey => {
                write!(f, "{SCHEME_PREFIX} StoredKey is not 32 bytes of base64")
            }
            ScramSecretError::ServerKey => {
                write!(f, "{SCHEME_PREFIX} ServerKey is not 32 bytes of base64")
            }
            ScramSecretError::Random => f.write_str("the system random generator failed"),
        }
    }
}

impl std::error::Error for ScramSecretError {}

/// What the server keeps to check SCRAM-SHA-256 proofs (RFC 5802 §3).
#[derive(Clone)]
pub struct ScramSecret {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl ScramSecret {
    /// Parses a passwd-file password field, `{SCRAM-SHA-256}` prefix
    /// included (the scheme name is case-insensitive, as in Dovecot).
    pub fn parse(field: &str) -> Result<ScramSecret, ScramSecretError> {
        let body = field
            .get(..SCHEME_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(SCHEME_PREFIX))
            .and_then(|_| field.get(SCHEME_PREFIX.len()..))
            .ok_or(ScramSecretError::MissingPrefix)?;
        let fields: Vec<&str> = body.split(',').collect();
        let [iterations, salt, stored_key, server_key] = fields[..] else {
            return Err(ScramSecretError::FieldCount(fields.len()));
        };
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|i| (MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS).contains(i))
            .ok_or_else(|| ScramSecretError::Iterations(iterations.to_owned()))?;
        let salt = BASE64
            .decode(salt)
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= MAX_SCRAM_SALT)
            .ok_or(ScramSecretError::Salt)?;
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: decode_key(stored_key).ok_or(ScramSecretError::StoredKey)?,
            server_key: decode_key(server_key).ok_or(ScramSecretError::ServerKey)?,
        })
    }

    /// A new secret with a fresh random salt, for `--hash-password`.
    pub fn generate(password: &[u8], iterations: u32) -> Result<ScramSecret, ScramSecretError> {
        let mut salt = [0u8; NEW_SALT_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| ScramSecretError::Random)?;
        ScramSecret::derive(password, &salt, iterations)
    }

    /// The secret for `password` with a given salt (RFC 5802 §3).
    pub fn derive(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramSecret, ScramSecretError> {
        if !(MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS).contains(&iterations) {
            return Err(ScramSecretError::Iterations(iterations.to_string()));
        }
        if salt.is_empty() || salt.len() > MAX_SCRAM_SALT {
            return Err(ScramSecretError::Salt);
        }
        let keys = Keys::from_password(password, salt, iterations);
        Ok(ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        })
    }

    /// USER/PASS and AUTH PLAIN against a SCRAM entry: derive and compare
    /// StoredKey in constant time (as Dovecot's `scram_verify` does).
    pub fn verify_plain_password(&self, password: &[u8]) -> bool {
        let keys = Keys::from_password(password, &self.salt, self.iterations);
        ct_eq(&keys.stored_key, &self.stored_key)
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// Checks a client's SCRAM proof over `auth_message` (RFC 5802 §3):
    /// ClientKey := ClientProof XOR HMAC(StoredKey, AuthMessage), and the
    /// client knew the password iff H(ClientKey) is StoredKey. On success
    /// the ServerSignature the client expects in `v=`. Only the holder of
    /// the secret (the passdb: the privileged helper, or the process itself
    /// without one) calls this, so StoredKey and ServerKey never leave it.
    pub fn check_proof(&self, auth_message: &[u8], proof: &[u8]) -> Option<[u8; KEY_LEN]> {
        let proof: &[u8; KEY_LEN] = proof.try_into().ok()?;
        let signature = hmac_sha256(&self.stored_key, auth_message);
        let mut client_key = [0u8; KEY_LEN];
        for (k, (a, b)) in client_key.iter_mut().zip(proof.iter().zip(&signature)) {
            *k = a ^ b;
        }
        let matches = ct_eq(&sha256(&client_key), &self.stored_key);
        client_key.zeroize();
        matches.then(|| hmac_sha256(&self.server_key, auth_message))
    }
}

impl fmt::Display for ScramSecret {
    /// The passwd-file field, prefix included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME_PREFIX}{},{},{},{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl Drop for ScramSecret {
    fn drop(&mut self) {
        self.stored_key.zeroize();
        self.server_key.zeroize();
    }
}

fn decode_key(text: &str) -> Option<[u8; KEY_LEN]> {
    BASE64.decode(text).ok()?.try_into().ok()
}

/// StoredKey and ServerKey derived from a password.
struct Keys {
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl Keys {
    fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Keys {
        // SaltedPassword := Hi(password, salt, i), which is PBKDF2-HMAC-SHA-256.
        // No SASLprep: like Dovecot, passwords are used as their UTF-8 bytes.
        let mut salted = [0u8; KEY_LEN];
        let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            salt,
            password,
            &mut salted,
        );
        let mut client_key = hmac_sha256(&salted, b"Client Key");
        let server_key = hmac_sha256(&salted, b"Server Key");
        let stored_key = sha256(&client_key);
        salted.zeroize();
        client_key.zeroize();
        Keys {
            stored_key,
            server_key,
        }
    }
}

pub(super) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

pub(super) fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: user "user", password "pencil", 4096 iterations.
    pub(crate) const RFC7677_SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

    fn rfc7677() -> ScramSecret {
        let salt = BASE64.decode(RFC7677_SALT_B64).unwrap();
        ScramSecret::derive(b"pencil", &salt, 4096).unwrap()
    }

    #[test]
    fn display_parse_round_trip() {
        let secret = rfc7677();
        let text = secret.to_string();
        assert!(text.starts_with("{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"));
        let back = ScramSecret::parse(&text).unwrap();
        assert_eq!(back.iterations(), 4096);
        assert_eq!(back.salt(), secret.salt());
        assert_eq!(back.stored_key, secret.stored_key);
        assert_eq!(back.server_key, secret.server_key);
    }

    #[test]
    fn prefix_is_case_insensitive() {
        let text = rfc7677()
            .to_string()
            .replace("SCRAM-SHA-256", "scram-sha-256");
        assert!(ScramSecret::parse(&text).is_ok());
    }

    #[test]
    fn verify_plain_password() {
        let secret = rfc7677();
        assert!(secret.verify_plain_password(b"pencil"));
        assert!(!secret.verify_plain_password(b"pencil "));
        assert!(!secret.verify_plain_password(b""));
    }

    #[test]
    fn generate_uses_fresh_salts() {
        let a = ScramSecret::generate(b"pw", 4096).unwrap();
        let b = ScramSecret::generate(b"pw", 4096).unwrap();
        assert_eq!(a.salt().len(), NEW_SALT_LEN);
        assert_ne!(a.salt(), b.salt());
        assert!(a.verify_plain_password(b"pw"));
        assert!(!a.verify_plain_password(b"pW"));
        assert!(ScramSecret::generate(b"pw", 4095).is_err());
    }

    #[test]
    fn parse_errors() {
        let good = rfc7677().to_string();
        let body = good.strip_prefix(SCHEME_PREFIX).unwrap().to_owned();
        let f: Vec<&str> = body.split(',').collect();
        let key31 = BASE64.encode([0u8; 31]);
        let cases: Vec<(String, ScramSecretError)> = vec![
            (body.clone(), ScramSecretError::MissingPrefix),
            (
                format!("{{SCRAM-SHA-1}}{body}"),
                ScramSecretError::MissingPrefix,
            ),
            (String::new(), ScramSecretError::MissingPrefix),
            (
                format!("{SCHEME_PREFIX}{}", f[..3].join(",")),
                ScramSecretError::FieldCount(3),
            ),
            (
                format!("{SCHEME_PREFIX}{body},x"),
                ScramSecretError::FieldCount(5),
            ),
            (
                format!("{SCHEME_PREFIX}4095,{},{},{}", f[1], f[2], f[3]),
                ScramSecretError::Iterations("4095".into()),
            ),
            (
                format!("{SCHEME_PREFIX}99999999999,{},{},{}", f[1], f[2], f[3]),
                ScramSecretError::Iterations("99999999999".into()),
            ),
            (
                format!("{SCHEME_PREFIX}x,{},{},{}", f[1], f[2], f[3]),
                ScramSecretError::Iterations("x".into()),
            ),
            (
                format!("{SCHEME_PREFIX}4096,!!,{},{}", f[2], f[3]),
                ScramSecretError::Salt,
            ),
            (
                format!("{SCHEME_PREFIX}4096,,{},{}", f[2], f[3]),
                ScramSecretError::Salt,
            ),
            (
                format!("{SCHEME_PREFIX}4096,{},{key31},{}", f[1], f[3]),
                ScramSecretError::StoredKey,
            ),
            (
                format!("{SCHEME_PREFIX}4096,{},{},{key31}", f[1], f[2]),
                ScramSecretError::ServerKey,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(ScramSecret::parse(&text).err(), Some(want), "{text}");
        }
        // Multi-byte text where the prefix would be must not panic.
        assert!(ScramSecret::parse("\u{e4}\u{e4}\u{e4}\u{e4}\u{e4}\u{e4}\u{e4}\u{e4}").is_err());
    }

    #[test]
    fn debug_hides_keys() {
        let shown = format!("{:?}", rfc7677());
        assert!(!shown.contains(&BASE64.encode(rfc7677().stored_key)));
        assert!(shown.contains("redacted"));
    }
}
