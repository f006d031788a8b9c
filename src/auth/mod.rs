//! Authentication: who may log in, and where their mail is.

pub mod crypt;
pub mod hash_cmd;
pub mod helper;
pub mod helper_client;
pub mod helper_wire;
pub mod passwd_file;
pub mod system;
pub mod throttle;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, Passdb};

pub use hash_cmd::hash_password_command;
pub use passwd_file::PasswdFile;

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

    /// The account `user` without a password check, for SASL mechanisms
    /// that proved who the client is by themselves (SCRAM-SHA-256, EXTERNAL
    /// with a verified certificate). `Rejected` when there is no such
    /// account or it is locked.
    fn lookup(&self, user: &str) -> AuthOutcome {
        let _ = user;
        AuthOutcome::Unavailable(
            "this account database cannot look up an account without a password".into(),
        )
    }

    /// Whether any account here has a SCRAM-SHA-256 secret; SCRAM is
    /// offered only then (a crypt hash cannot serve it).
    fn offers_scram(&self) -> bool {
        false
    }

    /// The SCRAM-SHA-256 secret of `user` (AUTH SCRAM-SHA-256).
    fn scram_secret(&self, user: &str) -> crate::sasl::SecretLookup {
        let _ = user;
        crate::sasl::SecretLookup::NoSecret
    }
}

/// The account database the config's `passdb` names.
///
/// A passwd file is read once here so that a missing or unreadable file
/// stops startup with a clear message instead of failing every login.
pub fn build_authenticator(config: &Config) -> Result<Arc<dyn Authenticator>, String> {
    match &config.passdb {
        Passdb::PasswdFile(path) => {
            let db = PasswdFile::new(path.clone(), config.mailbox.clone());
            db.check()?;
            Ok(Arc::new(db))
        }
        Passdb::System => {
            let db = system::SystemDb::new(config.mailbox.clone());
            db.check()?;
            Ok(Arc::new(db))
        }
        Passdb::Pam => Err(
            "passdb = pam is not available in this build (PAM support is not implemented yet); \
             use passdb = system"
                .into(),
        ),
    }
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
        config.passdb = Passdb::PasswdFile(users);
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
        config.passdb = Passdb::PasswdFile("/nonexistent/users".into());
        let e = build_authenticator(&config).err().unwrap();
        assert!(
            e.contains("cannot read passwd file /nonexistent/users"),
            "{e}"
        );
    }

    #[test]
    fn pam_is_reported_as_unavailable() {
        let mut config = Config::defaults(Path::new("/test.conf"));
        config.passdb = Passdb::Pam;
        let e = build_authenticator(&config).err().unwrap();
        assert!(e.contains("passdb = pam is not available"), "{e}");
    }
}
