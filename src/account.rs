//! What every side of a login shares, and nothing else imports: the account a login names, the verdict of a credential check, and the constant-time comparison behind every check.
//!
//! A leaf module, so that SASL, the account backends, the session and the
//! mailbox can all name these without importing one another.

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
