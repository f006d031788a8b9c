//! What every side of a login shares, and nothing else imports: the account a login names, the spool handed over with it, the verdict of a credential check, the password and the client certificate chain, and the constant-time comparison behind every check.
//!
//! A leaf module, so that SASL, the account backends, the session, the
//! network side and the mailbox can all name these without importing one
//! another.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

/// An authenticated account and the spool it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The login name as the account database spells it.
    pub user: String,
    /// The spool file (`mailbox` template with `%u`/`%h` expanded).
    pub mailbox: PathBuf,
}

/// The answer to a credential check: from an account database, the
/// account (`Principal`); to the session, the account with its spool
/// ([`Login`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome<A = Principal> {
    Accepted(A),
    /// Unknown user or wrong password: the caller cannot tell which.
    Rejected,
    /// The backend failed (unreadable passwd file, helper gone): `[SYS/TEMP]`.
    Unavailable(String),
}

impl<A> AuthOutcome<A> {
    /// The same answer with the accepted account turned into `B`.
    pub fn map<B>(self, f: impl FnOnce(A) -> B) -> AuthOutcome<B> {
        match self {
            AuthOutcome::Accepted(a) => AuthOutcome::Accepted(f(a)),
            AuthOutcome::Rejected => AuthOutcome::Rejected,
            AuthOutcome::Unavailable(why) => AuthOutcome::Unavailable(why),
        }
    }
}

/// An accepted login as the session receives it, in one value: the
/// account and its spool, opened by whoever checked the credential. The
/// session hands it on to the mailbox; nothing is kept behind.
#[derive(Debug)]
pub struct Login {
    pub principal: Principal,
    pub spool: Spool,
}

impl Login {
    /// A login without the privileged helper: the session opens the spool.
    pub fn by_path(principal: Principal) -> Login {
        Login {
            principal,
            spool: Spool::ByPath,
        }
    }
}

/// How an accepted login reaches its spool.
#[derive(Debug)]
pub enum Spool {
    /// The privileged helper opened it as root and passed the descriptor;
    /// `None`: there is no spool file yet (an empty maildrop).
    Opened(Option<File>),
    /// The privileged helper would not serve it; the words say why, for
    /// the log (symbolic link, wrong owner, hard links, ...).
    Refused(String),
    /// The privileged helper's open failed with this errno.
    Failed(i32),
    /// No privileged helper: the session opens it by path, with the
    /// process's own rights.
    ByPath,
}

/// The client's certificate chain as presented (end entity first), kept
/// for AUTH EXTERNAL: the passdb verifies it again at login.
pub type ClientChain = Arc<[CertificateDer<'static>]>;

/// A password as the client sent it: never printed (not even in a debug
/// line), wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    pub fn new(bytes: Vec<u8>) -> Password {
        Password(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
