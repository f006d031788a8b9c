//! The mbox maildrop: lock, recover, open and scan a spool file, stream messages from it, commit deletions.
//!
//! Memory per message is a [`Span`], a [`MessageInfo`] (size and UID) and
//! the scan's record of it (kept for the spool index); the file is only
//! ever read through fixed-size buffers, so spools of several GiB and 100k+
//! messages work.
//!
//! Opening for a session: session lock (`[IN-USE]` at once), `login_delay`
//! (`[LOGIN-DELAY]`), open the spool (no symlinks), delivery locks,
//! recovery of an interrupted update from its journal, the spool index
//! checked and only new mail scanned (or a full scan, `indexed_scan`),
//! release the delivery locks. RETR/TOP first check the message is still
//! where the scan found it. Committing: this session's retrievals and
//! EXPIRE's deletions, delivery locks, verify the scanned prefix, crash-safe
//! update, release. When the maildrop is dropped, the index is rewritten
//! if the session learned anything (`mbox_index.rs`). The session lock is
//! held from login to the end of the session, whatever ends it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::delivery_lock::{DeliveryLocks, LockPolicy};
use super::index::StatHint;
use super::index_check::{self, Contents};
use super::indexed_scan::{self, ScanKind};
use super::policy::{self, MailPolicy};
use super::recovery::{self, OpenedBy};
use super::scan::Scanner;
use super::session_lock::SessionLock;
use super::state::{SpoolKey, StateDir};
use super::transfer::Encoder;
use super::uidl::assign_uids;
use super::update::{self, Identity, Span};
use super::{CommitReport, MailboxError, Maildrop, MaildropOpener, MessageInfo, TransferError};
use crate::account::{Login, Spool};
use crate::config::Config;
use crate::limits;
use crate::privsep::spool::{self, SpoolOpenError};

/// Where session locks, journals and indexes live, how to take delivery
/// locks, and the retention policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxSettings {
    pub state: StateDir,
    pub locks: LockPolicy,
    pub policy: MailPolicy,
}

impl MboxSettings {
    pub fn from_config(config: &Config) -> MboxSettings {
        MboxSettings {
            state: StateDir::new(&config.state_dir),
            locks: LockPolicy {
                methods: config.lock_methods.clone(),
                timeout: config.lock_timeout,
            },
            policy: MailPolicy {
                expire: config.expire_days,
                login_delay: config.login_delay.as_secs(),
            },
        }
    }
}

/// Makes an accepted login's spool a maildrop.
#[derive(Debug, Clone)]
pub struct MboxOpener {
    settings: Arc<MboxSettings>,
    /// Whether a login without an opened spool may be served by opening
    /// its path here. Never with the privileged helper: then only a spool
    /// the helper opened for a checked credential is served.
    by_path: bool,
}

impl MboxOpener {
    /// Without the privileged helper: uses `state_dir`, `lock_methods` and
    /// `lock_timeout`, and opens spools by path with the process's rights.
    pub fn new(config: &Config) -> MboxOpener {
        MboxOpener::with_settings(MboxSettings::from_config(config))
    }

    pub fn with_settings(settings: MboxSettings) -> MboxOpener {
        MboxOpener {
            settings: Arc::new(settings),
            by_path: true,
        }
    }

    /// With the privileged helper: serves only spools it opened.
    pub fn helper_opened(settings: MboxSettings) -> MboxOpener {
        MboxOpener {
            by_path: false,
            ..MboxOpener::with_settings(settings)
        }
    }
}

impl MaildropOpener for MboxOpener {
    fn open(&self, login: Login) -> Result<Box<dyn Maildrop>, MailboxError> {
        let (path, account) = (login.principal.mailbox, Some(login.principal.user));
        let settings = Arc::clone(&self.settings);
        let maildrop = match login.spool {
            Spool::Opened(file) => {
                MboxMaildrop::open_locked_with(&path, account, settings, OpenedBy::Helper, || {
                    Ok(file)
                })?
            }
            Spool::ByPath if self.by_path => {
                MboxMaildrop::open_locked_with(&path, account, settings, OpenedBy::Daemon, || {
                    open_spool(&path)
                })?
            }
            Spool::ByPath => {
                return Err(MailboxError::Refused {
                    path,
                    reason: "the privileged helper did not open it for this login".into(),
                })
            }
            Spool::Refused(reason) => return Err(MailboxError::Refused { path, reason }),
            Spool::Failed(errno) => {
                return Err(MailboxError::Io {
                    path,
                    action: "opening",
                    source: io::Error::from_raw_os_error(errno),
                })
            }
        };
        Ok(Box::new(maildrop))
    }

    fn policy(&self) -> MailPolicy {
        self.settings.policy
    }
}

/// [`spool::open_spool`] (the checks the privileged helper makes, in
/// `privsep/spool.rs`), its error in the mailbox's words.
pub fn open_spool(path: &Path) -> Result<Option<File>, MailboxError> {
    spool::open_spool(path).map_err(|e| match e {
        SpoolOpenError::Refused(reason) => MailboxError::Refused {
            path: path.to_path_buf(),
            reason,
        },
        SpoolOpenError::Io { action, source } => MailboxError::Io {
            path: path.to_path_buf(),
            action,
            source,
        },
    })
}

/// An open spool and what the scan recorded about it.
struct ScannedSpool {
    file: File,
    identity: Identity,
    /// L: bytes scanned; everything after is new mail for the next session.
    scanned_len: u64,
}

/// The messages of one mbox spool.
pub struct MboxMaildrop {
    path: PathBuf,
    spool: Option<ScannedSpool>,
    messages: Vec<MessageInfo>,
    spans: Vec<Span>,
    /// What the index will say: the scan, with retrieval times.
    contents: Contents,
    /// Messages RETRieved whole in this session (recorded at QUIT).
    retrieved_now: Vec<bool>,
    /// How the messages were found (`None`: no spool file).
    scan_kind: Option<ScanKind>,
    /// The stored index no longer matches `contents` and should be written
    /// when the session ends.
    index_stale: bool,
    /// A RETR/TOP found a message elsewhere than the scan said: this
    /// session writes no index.
    index_doubted: bool,
    /// `None`: opened for inspection only (no locks), cannot commit.
    settings: Option<Arc<MboxSettings>>,
    /// The login's account name, recorded in an update's journal (`None`:
    /// opened without a login).
    account: Option<String>,
    /// The spool resolved once at login, naming its index (`None`: opened
    /// for inspection only).
    key: Option<SpoolKey>,
    /// Dropped last (fields drop in order): the mailbox stays ours until
    /// the spool is closed.
    _session: Option<SessionLock>,
}

impl MboxMaildrop {
    /// Opens a spool for a session: session lock, delivery locks while
    /// recovering and scanning, as described in the module documentation.
    pub fn open_locked(
        path: &Path,
        settings: Arc<MboxSettings>,
    ) -> Result<MboxMaildrop, MailboxError> {
        MboxMaildrop::open_locked_with(path, None, settings, OpenedBy::Daemon, || open_spool(path))
    }

    /// [`open_locked`](Self::open_locked) for `account`'s login, the spool
    /// opened by `open` (the privileged helper's descriptor, or by path:
    /// `by`).
    fn open_locked_with(
        path: &Path,
        account: Option<String>,
        settings: Arc<MboxSettings>,
        by: OpenedBy,
        open: impl FnOnce() -> Result<Option<File>, MailboxError>,
    ) -> Result<MboxMaildrop, MailboxError> {
        // Resolved once: every state file of this session is named from it.
        let key = SpoolKey::of(path);
        let session = SessionLock::acquire(&settings.state, path, &key)?;
        let now = policy::now();
        let delay = settings.policy.login_delay;
        match policy::check_login_delay(&settings.state, &key, delay, now) {
            Ok(Ok(())) => {}
            Ok(Err(wait)) => {
                return Err(MailboxError::LoginDelay {
                    path: path.to_path_buf(),
                    wait,
                })
            }
            Err(source) => {
                return Err(MailboxError::Io {
                    path: settings.state.last_login(&key),
                    action: "recording the login time of",
                    source,
                })
            }
        }
        let file = open()?;
        let locks = match &file {
            Some(f) => Some(DeliveryLocks::acquire(f, path, &settings.locks)?),
            None => None,
        };
        // The dotlock's own thread keeps it fresh (`dotlock.rs`).
        let mut tick = || {};
        let recovered = recovery::recover(&settings.state, path, &key, file.as_ref(), by)?;
        if let Some(done) = &recovered {
            log::warn!("{}", done.describe(path));
        }
        let found = match &file {
            Some(f) => Some(
                indexed_scan::scan(
                    &settings.state,
                    path,
                    &key,
                    f,
                    recovered.is_none(),
                    now,
                    &mut tick,
                )
                .map_err(|source| MailboxError::Io {
                    path: path.to_path_buf(),
                    action: "reading",
                    source,
                })?,
            ),
            None => None,
        };
        drop(locks);
        let mut md = MboxMaildrop::from_contents(path.to_path_buf(), file, found)?;
        md.settings = Some(settings);
        md.account = account;
        md.key = Some(key);
        md._session = Some(session);
        Ok(md)
    }

    /// Opens and scans the spool at `path` without any lock and without
    /// journal recovery: for inspecting a spool (tests, tools), never for a
    /// session. Such a maildrop cannot commit.
    pub fn open(path: &Path) -> Result<MboxMaildrop, MailboxError> {
        let file = open_spool(path)?;
        let found = match &file {
            Some(f) => {
                let scan = index_check::scan_file(f, Scanner::new(), u64::MAX, &mut || {})
                    .map_err(|source| MailboxError::Io {
                        path: path.to_path_buf(),
                        action: "reading",
                        source,
                    })?;
                let contents = Contents {
                    retrieved: vec![0; scan.messages.len()],
                    messages: scan.messages,
                    scanned_len: scan.scanned_len,
                    full_scan_at: 0,
                    // Never stored: an inspection writes no index.
                    stat: StatHint::default(),
                };
                Some((contents, ScanKind::Full))
            }
            None => None,
        };
        MboxMaildrop::from_contents(path.to_path_buf(), file, found)
    }

    /// The maildrop of an opened spool (`None`: there is none) whose
    /// messages were found as `found` says.
    fn from_contents(
        path: PathBuf,
        file: Option<File>,
        found: Option<(Contents, ScanKind)>,
    ) -> Result<MboxMaildrop, MailboxError> {
        let (Some(file), Some((contents, kind))) = (file, found) else {
            return Ok(MboxMaildrop {
                path,
                spool: None,
                messages: Vec::new(),
                spans: Vec::new(),
                contents: Contents {
                    messages: Vec::new(),
                    retrieved: Vec::new(),
                    scanned_len: 0,
                    full_scan_at: 0,
                    stat: StatHint::default(),
                },
                retrieved_now: Vec::new(),
                scan_kind: None,
                index_stale: false,
                index_doubted: false,
                settings: None,
                account: None,
                key: None,
                _session: None,
            });
        };
        let io_err = |action| {
            let path = path.clone();
            move |source| MailboxError::Io {
                path,
                action,
                source,
            }
        };
        let identity = Identity::of(&file.metadata().map_err(io_err("checking"))?);
        let uids = assign_uids(contents.messages.iter().map(|m| &m.digest));
        let messages = contents
            .messages
            .iter()
            .zip(uids)
            .map(|(m, uid)| MessageInfo { size: m.size, uid })
            .collect();
        let spans = contents.messages.iter().map(Span::from).collect();
        Ok(MboxMaildrop {
            path,
            spool: Some(ScannedSpool {
                file,
                identity,
                scanned_len: contents.scanned_len,
            }),
            messages,
            spans,
            retrieved_now: vec![false; contents.messages.len()],
            index_stale: kind != ScanKind::Unchanged,
            index_doubted: false,
            scan_kind: Some(kind),
            contents,
            settings: None,
            account: None,
            key: None,
            _session: None,
        })
    }

    /// The spool's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes scanned (L); 0 when there is no spool file.
    pub fn scanned_len(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.scanned_len)
    }

    fn changed(&self) -> TransferError {
        TransferError::Mailbox(MailboxError::Changed {
            path: self.path.clone(),
        })
    }

    fn read_error(&self, e: io::Error) -> TransferError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return self.changed();
        }
        TransferError::Mailbox(MailboxError::Io {
            path: self.path.clone(),
            action: "reading",
            source: e,
        })
    }
}

impl Maildrop for MboxMaildrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    fn write_message(
        &mut self,
        index: usize,
        body_lines: Option<u64>,
        out: &mut dyn io::Write,
    ) -> Result<(), TransferError> {
        let (Some(span), Some(spool)) = (self.spans.get(index).copied(), self.spool.as_ref())
        else {
            return Err(TransferError::Mailbox(MailboxError::Io {
                path: self.path.clone(),
                action: "reading",
                source: io::Error::new(io::ErrorKind::InvalidInput, "no such message"),
            }));
        };
        // Cheap check that the message is still where the scan saw it.
        if span.has_from_line() {
            let mut from = [0u8; 5];
            spool
                .file
                .read_exact_at(&mut from, span.from_offset)
                .map_err(|e| self.read_error(e))?;
            if &from != b"From " {
                return Err(self.changed());
            }
        }
        // Buffers per call, sized to the message: a session idle after a
        // RETR keeps nothing, and a small message allocates little.
        let chunk = usize::try_from(span.content_len).map_or(limits::RETR_READ_BLOCK, |n| {
            n.clamp(1, limits::RETR_READ_BLOCK)
        });
        let mut buf = vec![0u8; chunk];
        let mut encoded = Vec::with_capacity(Encoder::max_output(chunk) + 2);
        let mut encoder = Encoder::new(body_lines);
        let end = span.content_offset + span.content_len;
        let mut pos = span.content_offset;
        while pos < end && !encoder.is_done() {
            let n = usize::try_from(end - pos).map_or(chunk, |n| n.min(chunk));
            spool
                .file
                .read_exact_at(&mut buf[..n], pos)
                .map_err(|e| self.read_error(e))?;
            encoder.encode(&buf[..n], &mut encoded);
            out.write_all(&encoded)?;
            encoded.clear();
            pos += n as u64;
        }
        encoder.finish(&mut encoded);
        out.write_all(&encoded)?;
        if body_lines.is_none() {
            if let Some(flag) = self.retrieved_now.get_mut(index) {
                *flag = true;
            }
        }
        Ok(())
    }

    fn check_message(&mut self, index: usize) -> Result<(), MailboxError> {
        let checked = self.message_in_place(index);
        if checked.is_err() {
            self.drop_index();
        }
        checked
    }

    fn commit(mut self: Box<Self>, deleted: &[bool]) -> Result<CommitReport, MailboxError> {
        let deleted = self.with_expired(deleted, policy::now());
        let deleted = deleted.as_slice();
        let report = CommitReport::tally(&self.messages, deleted);
        let Some(spool) = self.spool.as_ref() else {
            return Ok(report);
        };
        if report.deleted == 0 {
            return Ok(report);
        }
        let Some(settings) = self.settings.as_ref() else {
            return Err(MailboxError::Refused {
                path: self.path.clone(),
                reason: "it was opened for inspection only".into(),
            });
        };
        let locks = DeliveryLocks::acquire(&spool.file, &self.path, &settings.locks)?;
        let updated = update::verify(
            &spool.file,
            &self.path,
            &spool.identity,
            spool.scanned_len,
            &self.spans,
            deleted,
        )
        .and_then(|()| {
            // From here the stored index may describe a file that no longer
            // exists; the new one is written when the maildrop is dropped.
            self.remove_stored_index();
            update::apply(
                &settings.state,
                &spool.file,
                &self.path,
                self.account.as_deref(),
                &self.spans,
                deleted,
            )
        });
        // The spool as this update left it, taken before the delivery
        // locks go: the next login compares its stat with this one.
        let stat = match &updated {
            Ok(_) => spool.file.metadata().ok().map(|m| index_check::hint_of(&m)),
            Err(_) => None,
        };
        drop(locks);
        if let Err(e) = updated {
            // The spool changed under us, or the update was undone (or is
            // left to recovery): what this session scanned is no index.
            self.drop_index();
            return Err(e);
        }
        match stat {
            Some(stat) => {
                self.contents = maildrop_index::compacted(&self.contents, deleted, stat);
                self.index_stale = true;
            }
            None => self.drop_index(),
        }
        Ok(report)
    }
}

impl Drop for MboxMaildrop {
    fn drop(&mut self) {
        self.save_index();
    }
}

#[path = "mbox_index.rs"]
mod maildrop_index;

#[cfg(test)]
#[path = "mbox_tests.rs"]
mod tests;
