//! In-test fakes: an account table, a maildrop of stored pre-encoded
//! messages, and a logger that captures this thread's log lines.

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};

use crate::account::{AuthOutcome, Login, Principal};
use crate::authenticator::Authenticator;
use crate::mailbox::{
    CommitReport, MailboxError, Maildrop, MaildropOpener, MessageInfo, TransferError,
};
use crate::pop3::{Backend, Session, SessionSettings};

/// alice/wonderland has the three messages of [`messages`]; bob/builder an
/// empty maildrop; `busy`, `refused`, `ioerr` and `badcommit` (password
/// `x`) hit the maildrop's error paths; user `broken` makes the backend
/// fail.
pub struct FakeAuth;

impl Authenticator for FakeAuth {
    fn verify_password(&self, user: &str, password: &[u8]) -> AuthOutcome<Login> {
        let expected: &[u8] = match user {
            "alice" => b"wonder land",
            "bob" => b"builder",
            "busy" | "refused" | "ioerr" | "badcommit" | "failing" => b"x",
            "broken" => return AuthOutcome::Unavailable("passwd file unreadable".into()),
            _ => return AuthOutcome::Rejected,
        };
        if password == expected {
            AuthOutcome::Accepted(Login::by_path(Principal {
                user: user.to_owned(),
                mailbox: PathBuf::from(format!("/var/mail/{user}")),
            }))
        } else {
            AuthOutcome::Rejected
        }
    }
}

/// The stored messages: headers, a blank line, body; already CRLF and
/// dot-stuffed as the mbox encoder would send them. `size` is the size
/// before dot-stuffing, as the contract says.
pub fn messages() -> Vec<(Vec<u8>, u64)> {
    vec![
        (b"Subject: one\r\n\r\nfirst body\r\n".to_vec(), 28),
        (
            b"Subject: two\r\nFrom: x@example.org\r\n\r\nline 1\r\n..line 2\r\nline 3\r\n".to_vec(),
            62,
        ),
        (b"Subject: three\r\n\r\nthird\r\n".to_vec(), 25),
    ]
}

/// What the maildrops of one test saw committed.
pub type Commits = Arc<Mutex<Vec<Vec<bool>>>>;

pub struct FakeOpener {
    pub commits: Commits,
}

impl MaildropOpener for FakeOpener {
    fn open(&self, login: Login) -> Result<Box<dyn Maildrop>, MailboxError> {
        let principal = login.principal;
        let path = principal.mailbox.clone();
        let stored = match principal.user.as_str() {
            "alice" | "badcommit" | "failing" => messages(),
            "busy" => return Err(MailboxError::InUse { path }),
            "refused" => {
                return Err(MailboxError::Refused {
                    path,
                    reason: "it is a symbolic link".into(),
                })
            }
            "ioerr" => {
                return Err(MailboxError::Io {
                    path,
                    action: "reading",
                    source: io::Error::other("disk on fire"),
                })
            }
            _ => Vec::new(),
        };
        Ok(Box::new(FakeMaildrop {
            info: stored
                .iter()
                .enumerate()
                .map(|(i, (_, size))| MessageInfo {
                    size: *size,
                    uid: format!("uid-{}", i + 1),
                })
                .collect(),
            bodies: stored.into_iter().map(|(b, _)| b).collect(),
            fail_commit: principal.user == "badcommit",
            fail_transfer: principal.user == "failing",
            path,
            commits: Arc::clone(&self.commits),
        }))
    }
}

pub struct FakeMaildrop {
    info: Vec<MessageInfo>,
    bodies: Vec<Vec<u8>>,
    fail_commit: bool,
    fail_transfer: bool,
    path: PathBuf,
    commits: Commits,
}

impl Maildrop for FakeMaildrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.info
    }

    fn write_message(
        &mut self,
        index: usize,
        body_lines: Option<u64>,
        out: &mut dyn io::Write,
    ) -> Result<(), TransferError> {
        let body = self
            .bodies
            .get(index)
            .expect("session asked for a missing message");
        if self.fail_transfer {
            out.write_all(b"Subject: partial\r\n")?;
            return Err(TransferError::Mailbox(MailboxError::Changed {
                path: self.path.clone(),
            }));
        }
        let Some(n) = body_lines else {
            out.write_all(body)?;
            return Ok(());
        };
        let mut in_body = false;
        let mut left = n;
        for line in body.split_inclusive(|&b| b == b'\n') {
            if in_body {
                if left == 0 {
                    break;
                }
                left -= 1;
            }
            out.write_all(line)?;
            in_body |= line == b"\r\n";
        }
        Ok(())
    }

    fn commit(self: Box<Self>, deleted: &[bool]) -> Result<CommitReport, MailboxError> {
        self.commits.lock().unwrap().push(deleted.to_vec());
        if self.fail_commit {
            return Err(MailboxError::Io {
                path: self.path.clone(),
                action: "updating",
                source: io::Error::other("no space left on device"),
            });
        }
        Ok(CommitReport::tally(&self.info, deleted))
    }
}

pub fn settings(plaintext_allowed: bool, stls_offered: bool) -> SessionSettings {
    SessionSettings {
        plaintext_allowed,
        stls_offered,
        tls_active: false,
        peer: "192.0.2.7".into(),
        local: "192.0.2.1".into(),
        tls_protocol: None,
        cert_identity: None,
        client_chain: None,
    }
}

pub fn session_with(settings: SessionSettings) -> (Session, Commits) {
    let commits = Commits::default();
    let backend = Backend {
        auth: Arc::new(FakeAuth),
        maildrops: Arc::new(FakeOpener {
            commits: Arc::clone(&commits),
        }),
    };
    (Session::new(backend, settings), commits)
}

thread_local! {
    static LOG_LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}", record.level(), record.args());
        LOG_LINES.with(|l| l.borrow_mut().push(line));
    }
    fn flush(&self) {}
}

/// Starts capturing this thread's log lines (tests run on their own threads).
pub fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = log::set_logger(&CaptureLogger);
        log::set_max_level(log::LevelFilter::Trace);
    });
    LOG_LINES.with(|l| l.borrow_mut().clear());
}

/// The log lines captured on this thread since [`capture_logs`].
pub fn logs() -> Vec<String> {
    LOG_LINES.with(|l| l.borrow().clone())
}

/// Asserts that the captured log holds each of `parts`.
pub fn assert_logged(parts: &[&str]) {
    let logs = logs().join("\n");
    for part in parts {
        assert!(logs.contains(part), "{part:?} not logged: {logs}");
    }
}

/// The captured log lines that contain `part`.
pub fn logs_containing(part: &str) -> Vec<String> {
    logs().into_iter().filter(|l| l.contains(part)).collect()
}
