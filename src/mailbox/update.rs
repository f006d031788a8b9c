//! UPDATE: verify the scanned prefix of the spool, then compact the deleted messages out in place.
//!
//! First version (Foundation issue): correct as long as the process is not
//! killed mid-write. The Mailbox-safety issue wraps [`apply`] in the
//! delivery locks (`lock.rs`) and journals the bytes about to be
//! overwritten before [`compact`] touches them; the order of operations
//! here is already the one the journal needs: verify, copy kept ranges
//! down front to back, copy everything after the scanned length, truncate,
//! fsync.
//!
//! Writing in place (not a new file renamed over the spool) keeps the
//! spool's inode, owner, group and mode, and the MDA's descriptors valid.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::MailboxError;
use crate::limits;

/// Where one message lies in the spool (see `scan::ScannedMessage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from_offset: u64,
    pub content_offset: u64,
    pub content_len: u64,
    pub end: u64,
}

impl Span {
    pub fn has_from_line(&self) -> bool {
        self.from_offset != self.content_offset
    }
}

/// The spool as it was when scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl Fn(io::Error) -> MailboxError + 'a {
    move |source| MailboxError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Checks that the first `scanned_len` bytes of the spool are still the
/// ones the session scanned: the path still names our file, the file has
/// not shrunk, and (unless size and mtime are unchanged) every recorded
/// `From ` line is still where it was, after its blank line.
pub fn verify(
    file: &File,
    path: &Path,
    scanned: &Identity,
    scanned_len: u64,
    spans: &[Span],
) -> Result<(), MailboxError> {
    let changed = || MailboxError::Changed {
        path: path.to_path_buf(),
    };
    let now = Identity::of(&file.metadata().map_err(io_error(path, "checking"))?);
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.dev() == now.dev && m.ino() == now.ino => {}
        Ok(_) => return Err(changed()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(changed()),
        Err(e) => return Err(io_error(path, "checking")(e)),
    }
    if now.dev != scanned.dev || now.ino != scanned.ino || now.size < scanned_len {
        return Err(changed());
    }
    if now.size == scanned.size && now.mtime == scanned.mtime {
        return Ok(());
    }
    for span in spans.iter().filter(|s| s.has_from_line()) {
        let mut probe = [0u8; 6];
        let (at, want): (u64, &[u8]) = match span.from_offset.checked_sub(1) {
            Some(before) => (before, b"\nFrom "),
            None => (0, b"From "),
        };
        let buf = &mut probe[..want.len()];
        match file.read_exact_at(buf, at) {
            Ok(()) if buf == want => {}
            Ok(()) => return Err(changed()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(changed()),
            Err(e) => return Err(io_error(path, "checking")(e)),
        }
    }
    Ok(())
}

/// Removes the raw ranges of the deleted messages and keeps every other
/// byte, including everything after `scanned_len`, then truncates and
/// fsyncs. Returns the new length. Nothing is written when nothing is
/// deleted.
pub fn compact(
    file: &File,
    path: &Path,
    spans: &[Span],
    deleted: &[bool],
) -> Result<u64, MailboxError> {
    let is_deleted = |i: usize| deleted.get(i).copied().unwrap_or(false);
    let Some(first) = (0..spans.len()).find(|&i| is_deleted(i)) else {
        return file
            .metadata()
            .map(|m| m.len())
            .map_err(io_error(path, "checking"));
    };
    let mut buf = vec![0u8; limits::SCAN_BLOCK];
    let mut write_at = spans[first].from_offset;
    let mut read_at = write_at;
    for (i, span) in spans.iter().enumerate().skip(first) {
        if is_deleted(i) {
            copy_down(
                file,
                path,
                &mut buf,
                read_at,
                Some(span.from_offset),
                &mut write_at,
            )?;
            read_at = span.end;
        }
    }
    // The rest of the scanned part and all mail appended since.
    copy_down(file, path, &mut buf, read_at, None, &mut write_at)?;
    file.set_len(write_at)
        .map_err(io_error(path, "truncating"))?;
    file.sync_all().map_err(io_error(path, "syncing"))?;
    Ok(write_at)
}

/// Copies `from..to` (or `from..` end of file) down to `*write_at`, which
/// is ≤ `from`: front to back, so no source byte is overwritten before it
/// has been read.
fn copy_down(
    file: &File,
    path: &Path,
    buf: &mut [u8],
    mut from: u64,
    to: Option<u64>,
    write_at: &mut u64,
) -> Result<(), MailboxError> {
    loop {
        let want = match to {
            Some(to) if from >= to => return Ok(()),
            Some(to) => usize::try_from(to - from).map_or(buf.len(), |n| n.min(buf.len())),
            None => buf.len(),
        };
        let n = match file.read_at(&mut buf[..want], from) {
            Ok(0) if to.is_none() => return Ok(()),
            Ok(0) => {
                return Err(MailboxError::Changed {
                    path: path.to_path_buf(),
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(path, "reading")(e)),
        };
        if *write_at != from {
            file.write_all_at(&buf[..n], *write_at)
                .map_err(io_error(path, "updating"))?;
        }
        from += n as u64;
        *write_at += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::scan::scan_bytes;
    use std::io::Write;

    const SPOOL: &[u8] = b"leading text\n\nFrom a\nA: 1\n\none\n\nFrom b\nB: 2\n\n\
two\n\nFrom c\nC: 3\n\nthree\n\nFrom d\nD: 4\n\nfour, no final newline";

    fn spans_of(data: &[u8]) -> Vec<Span> {
        scan_bytes(data)
            .messages
            .iter()
            .map(|m| Span {
                from_offset: m.from_offset,
                content_offset: m.content_offset,
                content_len: m.content_len,
                end: m.end,
            })
            .collect()
    }

    fn spool_file(data: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(data).unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .open(t.path())
            .unwrap();
        (t, f)
    }

    #[test]
    fn every_subset_of_deletions_keeps_exactly_the_rest() {
        let appended = b"\nFrom late\nL: 1\n\nappended after the scan\n";
        let spans = spans_of(SPOOL);
        assert_eq!(spans.len(), 5);
        for mask in 0u32..(1 << spans.len()) {
            let deleted: Vec<bool> = (0..spans.len()).map(|i| mask & (1 << i) != 0).collect();
            let mut expected = Vec::new();
            for (s, &d) in spans.iter().zip(&deleted) {
                if !d {
                    expected.extend_from_slice(&SPOOL[s.from_offset as usize..s.end as usize]);
                }
            }
            expected.extend_from_slice(appended);
            let mut data = SPOOL.to_vec();
            data.extend_from_slice(appended);
            let (t, f) = spool_file(&data);
            let ino = f.metadata().unwrap().ino();
            let len = compact(&f, t.path(), &spans, &deleted).unwrap();
            let got = std::fs::read(t.path()).unwrap();
            assert_eq!(got, expected, "mask {mask:05b}");
            assert_eq!(len, expected.len() as u64);
            assert_eq!(std::fs::metadata(t.path()).unwrap().ino(), ino);
        }
    }

    #[test]
    fn delete_all_without_new_mail_truncates_to_zero() {
        let data = b"From a\n\nx\n\nFrom b\n\ny\n";
        let (t, f) = spool_file(data);
        let spans = spans_of(data);
        assert_eq!(compact(&f, t.path(), &spans, &[true, true]).unwrap(), 0);
        assert_eq!(std::fs::metadata(t.path()).unwrap().len(), 0);
    }

    #[test]
    fn nothing_deleted_writes_nothing() {
        let (t, f) = spool_file(SPOOL);
        let before = std::fs::metadata(t.path()).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let spans = spans_of(SPOOL);
        let len = compact(&f, t.path(), &spans, &[false; 5]).unwrap();
        assert_eq!(len, SPOOL.len() as u64);
        let after = std::fs::metadata(t.path()).unwrap().modified().unwrap();
        assert_eq!(before, after);
        assert_eq!(std::fs::read(t.path()).unwrap(), SPOOL);
    }

    #[test]
    fn verify_accepts_growth_and_rejects_other_changes() {
        let spans = spans_of(SPOOL);
        let len = SPOOL.len() as u64;
        let (t, f) = spool_file(SPOOL);
        let id = Identity::of(&f.metadata().unwrap());
        verify(&f, t.path(), &id, len, &spans).unwrap();
        // Appended mail is fine.
        f.write_all_at(b"\nFrom new\n\nz\n", len).unwrap();
        verify(&f, t.path(), &id, len, &spans).unwrap();
        // A From_ line that moved is not.
        f.write_all_at(b"X", spans[2].from_offset).unwrap();
        assert!(matches!(
            verify(&f, t.path(), &id, len, &spans),
            Err(MailboxError::Changed { .. })
        ));
        f.write_all_at(b"F", spans[2].from_offset).unwrap();
        verify(&f, t.path(), &id, len, &spans).unwrap();
        // Shrinking is not.
        f.set_len(len - 1).unwrap();
        assert!(matches!(
            verify(&f, t.path(), &id, len, &spans),
            Err(MailboxError::Changed { .. })
        ));
    }

    #[test]
    fn verify_rejects_a_replaced_or_removed_spool() {
        let spans = spans_of(SPOOL);
        let (t, f) = spool_file(SPOOL);
        let id = Identity::of(&f.metadata().unwrap());
        let other = tempfile::NamedTempFile::new_in(t.path().parent().unwrap()).unwrap();
        std::fs::write(other.path(), SPOOL).unwrap();
        std::fs::rename(other.path(), t.path()).unwrap();
        let r = verify(&f, t.path(), &id, SPOOL.len() as u64, &spans);
        assert!(matches!(r, Err(MailboxError::Changed { .. })));
        std::fs::remove_file(t.path()).unwrap();
        let r = verify(&f, t.path(), &id, SPOOL.len() as u64, &spans);
        assert!(matches!(r, Err(MailboxError::Changed { .. })));
    }
}
