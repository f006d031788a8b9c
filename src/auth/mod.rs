//! Authentication: who may log in, and where their mail is.

pub mod hash_cmd;
pub mod helper_client;
pub mod throttle;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::config::Config;
use crate::privsep::accounts;
use crate::sasl::{SecretLookup, KEY_LEN};

pub use hash_cmd::hash_password_command;

/// An authenticated account and the spool it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The login name as the account database spells it.
    pub user: String,
    /// The spool file (`mailbox` template with `%u`/`%h` expanded).
    pub mailbox: PathBuf,
}

/// The answer of an account database to a credential check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Accepted(Principal),
    /// Unknown user or wrong password: the caller cannot tell which.
    Rejected,
    /// The backend failed (unreadable passwd file, helper gone): `[SYS/TEMP]`.
    Unavailable(String),
}

/// Verifies passwords. Implementations compare secrets in constant time and
/// spend the same effort on unknown users as on known ones.
pub trait Authenticator: Send + Sync {
    fn verify_password(&self, user: &str, password: &[u8]) -> AuthOutcome;

    /// AUTH EXTERNAL: the client's certificate chain (end entity first)
    /// must verify against `tls_client_ca` now and name an account of this
    /// passdb, and `authzid` must be empty or that account. There is no
    /// way to have an account without a credential: this, a password, or
    /// a SCRAM proof.
    fn verify_certificate(&self, chain: &[CertificateDer<'_>], authzid: &str) -> AuthOutcome {
        let _ = (chain, authzid);
        AuthOutcome::Rejected
    }

    /// Whether any account here has a SCRAM-SHA-256 secret; SCRAM is
    /// offered only then (a crypt hash cannot serve it).
    fn offers_scram(&self) -> bool {
        false
    }

    /// The salt and iteration count of `user`'s SCRAM-SHA-256 secret
    /// (public: they go to the client in server-first).
    fn scram_params(&self, user: &str) -> SecretLookup {
        let _ = user;
        SecretLookup::NoSecret
    }

    /// AUTH SCRAM-SHA-256's client proof over `auth_message`, checked by
    /// the holder of the secret; on success the account and the
    /// ServerSignature.
    fn scram_login(&self, user: &str, auth_message: &[u8], proof: &[u8; KEY_LEN]) -> ScramLogin {
        let _ = (user, auth_message, proof);
        ScramLogin::rejected()
    }
}

/// The passdb's verdict on a SCRAM proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramLogin {
    pub outcome: AuthOutcome,
    /// Present exactly when `outcome` is `Accepted`.
    pub server_signature: Option<[u8; KEY_LEN]>,
}

impl ScramLogin {
    pub fn rejected() -> ScramLogin {
        ScramLogin::failed(AuthOutcome::Rejected)
    }

    /// A verdict without a signature (`Rejected` or `Unavailable`).
    pub fn failed(outcome: AuthOutcome) -> ScramLogin {
        debug_assert!(!matches!(outcome, AuthOutcome::Accepted(_)));
        ScramLogin {
            outcome,
            server_signature: None,
        }
    }
}

/// The account database the config's `passdb` names, used in-process
/// (no privileged helper): the same checks the helper would make.
///
/// A passwd file is read once here so that a missing or unreadable file
/// stops startup with a clear message instead of failing every login.
pub fn build_authenticator(config: &Config) -> Result<Arc<dyn Authenticator>, String> {
    let db = accounts::HelperDb::for_config(config, nix::unistd::geteuid())?;
    Ok(Arc::new(db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn passwd_file_passdb_builds_a_working_authenticator() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "demo:{PLAIN}demo\n").unwrap();
        let mut config = Config::defaults(Path::new("/test.conf"));
        config.passdb = crate::config::Passdb::PasswdFile(users);
        config.mailbox = "/srv/%u.mbox".into();
        let auth = build_authenticator(&config).unwrap();
        assert_eq!(
            auth.verify_password("demo", b"demo"),
            AuthOutcome::Accepted(Principal {
                user: "demo".into(),
                mailbox: PathBuf::from("/srv/demo.mbox"),
            })
        );
        assert_eq!(auth.verify_password("demo", b"x"), AuthOutcome::Rejected);
    }

    #[test]
    fn missing_passwd_file_fails_at_startup() {
        let mut config = Config::defaults(Path::new("/test.conf"));
        config.passdb = crate::config::Passdb::PasswdFile("/nonexistent/users".into());
        let e = build_authenticator(&config).err().unwrap();
        assert!(
            e.contains("cannot read passwd file /nonexistent/users"),
            "{e}"
        );
    }

    #[cfg(not(feature = "pam"))]
    #[test]
    fn pam_is_reported_as_unavailable() {
        let mut config = Config::defaults(Path::new("/test.conf"));
        config.passdb = crate::config::Passdb::Pam;
        let e = build_authenticator(&config).err().unwrap();
        assert!(e.contains("passdb = pam is not available"), "{e}");
        assert!(e.contains("--features pam"), "{e}");
    }
}
