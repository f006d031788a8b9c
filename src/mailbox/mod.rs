//! Maildrops: the messages of one mailbox as a POP3 session sees them.
//!
//! A [`Maildrop`] is opened after a successful login (through a
//! [`MaildropOpener`]), scanned once, served from, and finally either
//! committed (QUIT in TRANSACTION: deleted messages, and those EXPIRE
//! removes, are removed, every other byte, including mail appended since
//! the scan, is kept) or dropped (any other end of the session: the spool
//! does not change; only the spool index in `state_dir` may be rewritten).

pub mod delivery_lock;
pub mod dotlock;
pub mod fault;
pub mod index;
pub mod index_check;
pub mod index_store;
pub mod indexed_scan;
pub mod journal;
#[cfg(test)]
mod journal_identity_tests;
pub mod mbox;
pub mod ofd;
pub mod plan;
pub mod policy;
pub mod recovery;
#[cfg(test)]
mod recovery_tests;
pub mod scan;
pub mod session_lock;
pub mod split_scan;
pub mod startup;
pub mod state;
pub mod transfer;
pub mod uidl;
pub mod update;
#[cfg(test)]
mod update_crash_tests;

pub use mbox::{MboxMaildrop, MboxOpener};
pub use policy::MailPolicy;

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::account::Login;

/// What the session needs to know about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Octets as sent by RETR: CRLF line ends, before dot-stuffing, without
    /// the mbox `From ` separator line.
    pub size: u64,
    /// RFC 1939 unique id: 1–70 octets of 0x21–0x7E, unique in the maildrop
    /// and stable across sessions.
    pub uid: String,
}

/// Totals of a committed update, for the logout log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitReport {
    pub deleted: usize,
    pub deleted_bytes: u64,
    pub kept: usize,
    pub kept_bytes: u64,
}

impl CommitReport {
    /// The totals for `messages` with these deletion flags (a missing flag
    /// means kept).
    pub fn tally(messages: &[MessageInfo], deleted: &[bool]) -> CommitReport {
        let mut report = CommitReport::default();
        for (i, m) in messages.iter().enumerate() {
            if deleted.get(i).copied().unwrap_or(false) {
                report.deleted += 1;
                report.deleted_bytes += m.size;
            } else {
                report.kept += 1;
                report.kept_bytes += m.size;
            }
        }
        report
    }
}

/// The messages of one locked mailbox.
pub trait Maildrop: Send {
    /// All messages found by the scan, in mailbox order (index 0 is message 1).
    fn messages(&self) -> &[MessageInfo];

    /// Writes message `index` to `out` as the body of a POP3 multi-line
    /// response: CRLF line ends, dot-stuffed, always ending in CRLF, but
    /// without the terminating `.` line. `body_lines` is `None` for RETR and
    /// `Some(n)` for `TOP msg n` (the header, the blank line, n body lines).
    fn write_message(
        &mut self,
        index: usize,
        body_lines: Option<u64>,
        out: &mut dyn io::Write,
    ) -> Result<(), TransferError>;

    /// Checks, before RETR or TOP answers `+OK`, that message `index` is
    /// still where the scan found it. An error is answered `-ERR
    /// [SYS/TEMP]` and the session goes on.
    fn check_message(&mut self, index: usize) -> Result<(), MailboxError> {
        let _ = index;
        Ok(())
    }

    /// Removes the messages whose flag in `deleted` is set (one flag per
    /// message) and those the EXPIRE policy removes, and keeps every other
    /// byte, including mail appended after the scan.
    fn commit(self: Box<Self>, deleted: &[bool]) -> Result<CommitReport, MailboxError>;
}

/// Turns an accepted login into its maildrop: the spool that came with
/// the login (or, without the privileged helper, the one at its path),
/// locked, recovered and scanned.
pub trait MaildropOpener: Send + Sync {
    fn open(&self, login: Login) -> Result<Box<dyn Maildrop>, MailboxError>;

    /// The retention policies `open` enforces, for CAPA.
    fn policy(&self) -> MailPolicy {
        MailPolicy::default()
    }
}

/// RETR/TOP failed after `+OK` was sent: the connection must be closed.
#[derive(Debug)]
pub enum TransferError {
    /// Reading the spool failed or it changed under us.
    Mailbox(MailboxError),
    /// Writing to the client failed.
    Client(io::Error),
}

impl From<io::Error> for TransferError {
    fn from(e: io::Error) -> Self {
        TransferError::Client(e)
    }
}

/// The `action` of an update that failed halfway (see
/// [`MailboxError::update_pending`]).
pub const UPDATE_PENDING: &str = "updating (the update will be completed at the next login)";

/// Why a mailbox could not be opened, read or updated, in the words an
/// administrator reads in the log and a user reads after `-ERR`.
#[derive(Debug)]
pub enum MailboxError {
    /// Another POP3 session holds this mailbox (RFC 2449 `[IN-USE]`).
    InUse { path: PathBuf },
    /// The previous login was less than `login_delay` ago (RFC 2449
    /// `[LOGIN-DELAY]`); `wait` more seconds.
    LoginDelay { path: PathBuf, wait: u64 },
    /// A delivery lock could not be taken within `lock_timeout`.
    Locked { path: PathBuf, detail: String },
    /// The part of the spool this session scanned changed under us.
    Changed { path: PathBuf },
    /// The spool is not something we may serve (symlink, wrong owner, not a
    /// regular file, ...).
    Refused { path: PathBuf, reason: String },
    /// An I/O error; `action` says what we were doing ("reading", ...).
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

impl MailboxError {
    /// `true` when the condition is the other session's (`[IN-USE]`), not a
    /// temporary system problem (`[SYS/TEMP]`) or a permanent one.
    pub fn is_in_use(&self) -> bool {
        matches!(self, MailboxError::InUse { .. })
    }

    /// `true` when the login came too soon after the previous one.
    pub fn is_login_delay(&self) -> bool {
        matches!(self, MailboxError::LoginDelay { .. })
    }

    /// `true` when an update failed after it had started writing the
    /// spool: its journal completes it at the next login or start, so the
    /// deletions are not lost.
    pub fn update_pending(&self) -> bool {
        matches!(self, MailboxError::Io { action, .. } if *action == UPDATE_PENDING)
    }

    /// `true` for conditions that will not go away by retrying (`[SYS/PERM]`).
    pub fn is_permanent(&self) -> bool {
        matches!(self, MailboxError::Refused { .. })
    }
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxError::InUse { path } => write!(
                f,
                "mailbox {} is locked by another POP3 session",
                path.display()
            ),
            MailboxError::LoginDelay { path, wait } => write!(
                f,
                "mailbox {} was logged in to less than login_delay ago; {wait} s to wait",
                path.display()
            ),
            MailboxError::Locked { path, detail } => write!(
                f,
                "mailbox {} is locked for delivery ({detail}); try again later",
                path.display()
            ),
            MailboxError::Changed { path } => write!(
                f,
                "mailbox {} was changed by another program during the session",
                path.display()
            ),
            MailboxError::Refused { path, reason } => {
                write!(f, "mailbox {} cannot be served: {reason}", path.display())
            }
            MailboxError::Io {
                path,
                action,
                source,
            } => write!(f, "error {action} mailbox {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for MailboxError {}
