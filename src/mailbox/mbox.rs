//! The mbox maildrop: open and scan a spool file, stream messages from it, commit deletions.
//!
//! Memory per message is a [`Span`] (four offsets) and a [`MessageInfo`]
//! (size and UID); the file is only ever read through fixed-size buffers,
//! so spools of several GiB and 100k+ messages work.
//!
//! The Mailbox-safety issue adds, around the calls marked below: the
//! session lock before [`MboxMaildrop::open`], journal recovery before the
//! scan, and delivery locks held while scanning and while updating.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::scan::Scanner;
use super::transfer::Encoder;
use super::uidl::assign_uids;
use super::update::{self, Identity, Span};
use super::{CommitReport, MailboxError, Maildrop, MaildropOpener, MessageInfo, TransferError};
use crate::auth::Principal;
use crate::config::Config;
use crate::limits;

/// Opens the mbox spool named by the principal.
#[derive(Debug, Clone, Default)]
pub struct MboxOpener {}

impl MboxOpener {
    /// The Foundation version needs nothing from the configuration yet;
    /// `lock_methods`, `lock_timeout` and `state_dir` arrive with the
    /// Mailbox-safety issue.
    pub fn new(_config: &Config) -> MboxOpener {
        MboxOpener {}
    }
}

impl MaildropOpener for MboxOpener {
    fn open(&self, principal: &Principal) -> Result<Box<dyn Maildrop>, MailboxError> {
        Ok(Box::new(MboxMaildrop::open(&principal.mailbox)?))
    }
}

/// Opens a spool for reading and updating: no symlinks, regular files
/// only. `Ok(None)` when it does not exist (an empty maildrop).
pub fn open_spool(path: &Path) -> Result<Option<File>, MailboxError> {
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(MailboxError::Refused {
                path: path.to_path_buf(),
                reason: "it is a symbolic link".into(),
            })
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::EISDIR) => {
            return Err(MailboxError::Refused {
                path: path.to_path_buf(),
                reason: "it is a directory".into(),
            })
        }
        Err(source) => {
            return Err(MailboxError::Io {
                path: path.to_path_buf(),
                action: "opening",
                source,
            })
        }
    };
    let meta = file.metadata().map_err(|source| MailboxError::Io {
        path: path.to_path_buf(),
        action: "checking",
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(MailboxError::Refused {
            path: path.to_path_buf(),
            reason: "it is not a regular file".into(),
        });
    }
    Ok(Some(file))
}

/// An open spool and what the scan recorded about it.
struct Spool {
    file: File,
    identity: Identity,
    /// L: bytes scanned; everything after is new mail for the next session.
    scanned_len: u64,
}

/// The messages of one mbox spool.
pub struct MboxMaildrop {
    path: PathBuf,
    spool: Option<Spool>,
    messages: Vec<MessageInfo>,
    spans: Vec<Span>,
}

impl MboxMaildrop {
    /// Opens and scans the spool at `path`.
    pub fn open(path: &Path) -> Result<MboxMaildrop, MailboxError> {
        MboxMaildrop::from_file(path.to_path_buf(), open_spool(path)?)
    }

    /// Scans an already opened spool (`None`: there is none). For the
    /// privileged helper, which opens the spool and passes the descriptor.
    pub fn from_file(path: PathBuf, file: Option<File>) -> Result<MboxMaildrop, MailboxError> {
        let Some(file) = file else {
            return Ok(MboxMaildrop {
                path,
                spool: None,
                messages: Vec::new(),
                spans: Vec::new(),
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
        // Scan up to the size seen now: bounded work even if mail keeps
        // arriving, and anything later is the next session's.
        let mut scanner = Scanner::new();
        let mut buf = vec![0u8; limits::SCAN_BLOCK];
        while scanner.offset() < identity.size {
            let want = usize::try_from(identity.size - scanner.offset())
                .map_or(buf.len(), |n| n.min(buf.len()));
            match file.read_at(&mut buf[..want], scanner.offset()) {
                Ok(0) => break,
                Ok(n) => scanner.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("reading")(e)),
            }
        }
        let scan = scanner.finish();
        let uids = assign_uids(scan.messages.iter().map(|m| &m.digest));
        let messages = scan
            .messages
            .iter()
            .zip(uids)
            .map(|(m, uid)| MessageInfo { size: m.size, uid })
            .collect();
        let spans = scan
            .messages
            .iter()
            .map(|m| Span {
                from_offset: m.from_offset,
                content_offset: m.content_offset,
                content_len: m.content_len,
                end: m.end,
            })
            .collect();
        Ok(MboxMaildrop {
            path,
            spool: Some(Spool {
                file,
                identity,
                scanned_len: scan.scanned_len,
            }),
            messages,
            spans,
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
        let chunk = limits::WRITE_BUFFER;
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
        Ok(())
    }

    fn commit(self: Box<Self>, deleted: &[bool]) -> Result<CommitReport, MailboxError> {
        let mut report = CommitReport::default();
        for (i, m) in self.messages.iter().enumerate() {
            if deleted.get(i).copied().unwrap_or(false) {
                report.deleted += 1;
                report.deleted_bytes += m.size;
            } else {
                report.kept += 1;
                report.kept_bytes += m.size;
            }
        }
        let Some(spool) = self.spool.as_ref() else {
            return Ok(report);
        };
        if report.deleted == 0 {
            return Ok(report);
        }
        update::verify(
            &spool.file,
            &self.path,
            &spool.identity,
            spool.scanned_len,
            &self.spans,
        )?;
        update::compact(&spool.file, &self.path, &self.spans, deleted)?;
        Ok(report)
    }
}
