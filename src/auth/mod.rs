//! Authentication: who may log in, and where their mail is.

pub mod crypt;
pub mod passwd_file;

use std::path::PathBuf;

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
}
