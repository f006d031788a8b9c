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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::transfer::encode_all;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const SPOOL: &[u8] = b"From a@x Mon Jan  1 00:00:00 2024\nMessage-ID: <1@x>\nSubject: one\n\n\
.dot line\nbody\n\nFrom b@x Mon Jan  1 00:00:01 2024\nMessage-ID: <2@x>\n\n>From quoted\n\n\
From c@x Mon Jan  1 00:00:02 2024\nMessage-ID: <1@x>\nSubject: one\n\ndup, no final newline";

    fn spool(data: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bob");
        std::fs::write(&path, data).unwrap();
        (dir, path)
    }

    fn retr(md: &mut MboxMaildrop, i: usize, top: Option<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        md.write_message(i, top, &mut out).unwrap();
        out
    }

    #[test]
    fn missing_spool_is_an_empty_maildrop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody");
        let md = MboxMaildrop::open(&path).unwrap();
        assert!(md.messages().is_empty());
        let report = Box::new(md).commit(&[]).unwrap();
        assert_eq!(report, CommitReport::default());
        assert!(!path.exists(), "commit must not create the spool");
    }

    #[test]
    fn symlinks_and_directories_are_refused() {
        let (dir, path) = spool(SPOOL);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = MboxMaildrop::open(&link).err().unwrap();
        assert!(e.is_permanent(), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = MboxMaildrop::open(dir.path()).err().unwrap();
        assert!(e.is_permanent(), "{e}");
    }

    #[test]
    fn lists_sizes_equal_to_retr_octets_and_unique_uids() {
        let (_dir, path) = spool(SPOOL);
        let mut md = MboxMaildrop::open(&path).unwrap();
        assert_eq!(md.messages().len(), 3);
        assert_eq!(md.scanned_len(), SPOOL.len() as u64);
        let first = retr(&mut md, 0, None);
        assert_eq!(
            first,
            b"Message-ID: <1@x>\r\nSubject: one\r\n\r\n..dot line\r\nbody\r\n"
        );
        for i in 0..3 {
            let body = retr(&mut md, i, None);
            let unstuffed = body.len() - body.windows(3).filter(|w| *w == b"\n..").count();
            assert_eq!(md.messages()[i].size, unstuffed as u64, "message {}", i + 1);
        }
        assert_eq!(
            retr(&mut md, 1, None),
            b"Message-ID: <2@x>\r\n\r\n>From quoted\r\n"
        );
        assert!(retr(&mut md, 2, None).ends_with(b"dup, no final newline\r\n"));
        let uids: Vec<&str> = md.messages().iter().map(|m| m.uid.as_str()).collect();
        assert_eq!(uids[2], format!("{}-2", uids[0]));
        assert_ne!(uids[0], uids[1]);
    }

    #[test]
    fn top_streams_header_and_n_lines() {
        let (_dir, path) = spool(SPOOL);
        let mut md = MboxMaildrop::open(&path).unwrap();
        assert_eq!(
            retr(&mut md, 0, Some(0)),
            b"Message-ID: <1@x>\r\nSubject: one\r\n\r\n"
        );
        assert_eq!(
            retr(&mut md, 0, Some(1)),
            b"Message-ID: <1@x>\r\nSubject: one\r\n\r\n..dot line\r\n"
        );
    }

    #[test]
    fn large_message_streams_through_small_buffers() {
        let mut data = b"From big\nSubject: big\n\n".to_vec();
        let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\n";
        while data.len() < 3 * limits::SCAN_BLOCK + 17 {
            data.extend_from_slice(line);
        }
        let (_dir, path) = spool(&data);
        let mut md = MboxMaildrop::open(&path).unwrap();
        let body = retr(&mut md, 0, None);
        assert_eq!(body, encode_all(&data[9..], None));
        assert_eq!(md.messages()[0].size, body.len() as u64);
    }

    #[test]
    fn commit_removes_deleted_keeps_appended_and_the_inode() {
        let (_dir, path) = spool(SPOOL);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let before = std::fs::metadata(&path).unwrap();
        let md = MboxMaildrop::open(&path).unwrap();
        let appended = b"\nFrom new@x Tue Jan  2 00:00:00 2024\nSubject: new\n\nnew mail\n";
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        io::Write::write_all(&mut f, appended).unwrap();
        let sizes: Vec<u64> = md.messages().iter().map(|m| m.size).collect();
        let report = Box::new(md).commit(&[true, false, true]).unwrap();
        assert_eq!(
            report,
            CommitReport {
                deleted: 2,
                deleted_bytes: sizes[0] + sizes[2],
                kept: 1,
                kept_bytes: sizes[1],
            }
        );
        let start = SPOOL.windows(7).position(|w| w == b"From b@").unwrap();
        let end = SPOOL.windows(7).position(|w| w == b"From c@").unwrap();
        let mut expected = SPOOL[start..end].to_vec();
        expected.extend_from_slice(appended);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (after.ino(), after.mode(), after.uid()),
            (before.ino(), before.mode(), before.uid())
        );
        let md = MboxMaildrop::open(&path).unwrap();
        assert_eq!(md.messages().len(), 2);
    }

    #[test]
    fn commit_without_deletions_does_not_write() {
        let (_dir, path) = spool(SPOOL);
        let md = MboxMaildrop::open(&path).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        // Even a changed spool is left alone when nothing is deleted.
        std::fs::write(&path, b"replaced").unwrap();
        let report = Box::new(md).commit(&[false, false, false]).unwrap();
        assert_eq!((report.deleted, report.kept), (0, 3));
        assert_eq!(std::fs::read(&path).unwrap(), b"replaced");
        assert!(std::fs::metadata(&path).unwrap().modified().unwrap() >= mtime);
    }

    #[test]
    fn commit_refuses_when_the_scanned_part_changed() {
        let (_dir, path) = spool(SPOOL);
        let mut md = MboxMaildrop::open(&path).unwrap();
        let mut changed = SPOOL.to_vec();
        changed[0] = b'X';
        std::fs::write(&path, &changed).unwrap();
        assert!(matches!(
            md.write_message(0, None, &mut Vec::new()),
            Err(TransferError::Mailbox(MailboxError::Changed { .. }))
        ));
        let e = Box::new(md).commit(&[true, false, false]).unwrap_err();
        assert!(matches!(e, MailboxError::Changed { .. }), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), changed);
    }

    #[test]
    fn delete_all_is_a_truncate() {
        let (_dir, path) = spool(SPOOL);
        let md = MboxMaildrop::open(&path).unwrap();
        Box::new(md).commit(&[true, true, true]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn opener_uses_the_principal_mailbox() {
        let (_dir, path) = spool(SPOOL);
        let opener = MboxOpener::default();
        let p = Principal {
            user: "bob".into(),
            mailbox: path,
        };
        assert_eq!(opener.open(&p).unwrap().messages().len(), 3);
    }
}
