//! UPDATE: verify the scanned prefix of the spool, then remove the deleted messages in place, crash-safely.
//!
//! Writing in place (not a new file renamed over the spool) keeps the
//! spool's inode, owner, group and mode, and the MDA's descriptors valid.
//! [`apply`] runs with the delivery locks held, after [`verify`].
//!
//! # Write/fsync order
//!
//! Let N be the spool length (under the delivery locks, so nothing is
//! appended meanwhile), S the offset of the first deleted message, D the
//! deleted bytes and W = N − D the new length. Compaction copies the kept
//! bytes after S down, front to back, into `[S, W)`; nothing below S and
//! nothing at or above W is written by the copy.
//!
//! * **W = S** (delete-all, or only trailing messages deleted, nothing
//!   appended): `ftruncate(S)`, fsync. No journal: a crash leaves either
//!   the old file or the truncated one, both complete.
//! * Otherwise, with m = min(16, D) and a marker of m bytes (a NUL, then
//!   random bytes):
//!   1. write the journal `state_dir/<spool>.journal.new`: header (phase
//!      UNDO, inode, S, N, W, marker) + the original bytes `[S, W + m)`;
//!      fsync it; rename it to `<spool>.journal`; fsync `state_dir`.
//!      *Crash before the rename:* no journal under the final name, the
//!      spool is untouched. *After:* the journal is complete and durable.
//!   2. copy the kept bytes down into `[S, W)`.
//!      *Crash:* phase UNDO, length ≥ N (we never shrink before step 5);
//!      recovery writes `[S, W + m)` back from the journal: the original
//!      spool, plus anything appended at N since the crash.
//!   3. write the marker at `[W, W + m)` (inside the deleted tail, which
//!      D ≥ m bytes wide); fsync the spool. *Crash:* as in 2.
//!   4. set the journal's phase byte to COMPACTED; fdatasync the journal.
//!      From now on `[0, W)` is final and durable. *Crash before the byte
//!      is durable:* as in 2 (undo is still valid: length ≥ N).
//!   5. `ftruncate(W)`; fsync the spool. *Crash:* phase COMPACTED; the
//!      marker tells whether the truncate happened. Present at W: it did
//!      not (an MDA appending after a truncate writes an mbox message,
//!      never a NUL followed by our random bytes); with nothing appended
//!      (length N) recovery finishes with the truncate, otherwise it sets
//!      phase UNDO durably and undoes (length ≥ N holds), which keeps the
//!      mail appended at N. Absent: the truncate happened, the spool is
//!      final, anything after W was appended later and is kept.
//!   6. unlink the journal; fsync `state_dir`. *Crash before the unlink
//!      is durable:* recovery finds phase COMPACTED without the marker:
//!      nothing to do but remove the journal.
//!
//! Every recovery action is idempotent (writing saved bytes back,
//! truncating to W) and happens before the spool is read, with the
//! session and delivery locks held; a crash during recovery is recovered
//! the same way. An error (ENOSPC, EDQUOT, EFBIG, EIO) in step 1 leaves
//! the spool untouched; in steps 2–5 the update is undone at once from
//! the journal, and if even that fails the journal stays for recovery at
//! the next login. The journal holds the kept bytes after the first
//! deleted message: deleting the first message of a 1 GiB spool writes
//! ~1 GiB to `state_dir` first; deleting only trailing messages writes
//! nothing.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use super::fault::fault_point;
use super::journal::{self, Header, Journal, Phase};
use super::scan::ScannedMessage;
use super::state::StateDir;
use super::MailboxError;
use crate::limits;

/// Where one message lies in the spool and what it held when scanned
/// (see `scan::ScannedMessage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from_offset: u64,
    pub content_offset: u64,
    pub content_len: u64,
    pub end: u64,
    /// XXH3-128 of the bytes from the previous message's `end` (0 for the
    /// first) to `end`, as scanned.
    pub raw_hash: u128,
}

impl Span {
    pub fn has_from_line(&self) -> bool {
        self.from_offset != self.content_offset
    }
}

impl From<&ScannedMessage> for Span {
    fn from(m: &ScannedMessage) -> Span {
        Span {
            from_offset: m.from_offset,
            content_offset: m.content_offset,
            content_len: m.content_len,
            end: m.end,
            raw_hash: m.raw_hash,
        }
    }
}

/// The spool file as it was when scanned: which file (the device number
/// only to tell files apart within this process, never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
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

/// Proves, under the delivery locks, that the update about to remove the
/// deleted messages removes exactly what the session saw: the path still
/// names our file, the file still holds the scanned length, every deleted
/// message is byte for byte (by its content hash) what the scan saw, where
/// it saw it, and starts and ends at a message boundary (a blank line
/// before its `From ` line; a `From ` line or the scanned end after it).
/// The cost is reading the deleted messages once.
/// Kept messages are moved as they are, so they need no proof. Size and
/// mtime prove nothing: a local reader can expunge a message and an MDA
/// deliver one of the same length into its place within one second.
pub fn verify(
    file: &File,
    path: &Path,
    scanned: &Identity,
    scanned_len: u64,
    spans: &[Span],
    deleted: &[bool],
) -> Result<(), MailboxError> {
    let changed = || MailboxError::Changed {
        path: path.to_path_buf(),
    };
    let meta = file.metadata().map_err(io_error(path, "checking"))?;
    let now = Identity::of(&meta);
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.dev() == now.dev && m.ino() == now.ino => {}
        Ok(_) => return Err(changed()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(changed()),
        Err(e) => return Err(io_error(path, "checking")(e)),
    }
    if now != *scanned || meta.size() < scanned_len {
        return Err(changed());
    }
    let read = |at: u64, buf: &mut [u8]| -> Result<bool, MailboxError> {
        match file.read_exact_at(buf, at) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(io_error(path, "checking")(e)),
        }
    };
    let mut buf = vec![0u8; limits::SCAN_BLOCK];
    for (i, span) in spans.iter().enumerate() {
        if !deleted.get(i).copied().unwrap_or(false) {
            continue;
        }
        let hash_from = i.checked_sub(1).map_or(0, |p| spans[p].end);
        if hash_range(file, path, hash_from, span.end, &mut buf)? != span.raw_hash {
            return Err(changed());
        }
        // The blank line before the `From ` line (the hash covers the
        // message itself, not the previous one's separator).
        if span.has_from_line() && span.from_offset > 0 {
            let want: &[u8] = if span.from_offset == 1 {
                b"\n"
            } else {
                b"\n\n"
            };
            let mut got = [0u8; 2];
            let got = &mut got[..want.len()];
            if !read(span.from_offset - want.len() as u64, got)? || got != want {
                return Err(changed());
            }
        }
        // What follows is the next scanned message; mail appended after
        // the scan stays whatever it is.
        if span.end < scanned_len {
            let mut got = [0u8; 5];
            if !read(span.end, &mut got)? || &got != b"From " {
                return Err(changed());
            }
        }
    }
    Ok(())
}

/// XXH3-128 of the spool's bytes `[from, to)`.
fn hash_range(
    file: &File,
    path: &Path,
    mut from: u64,
    to: u64,
    buf: &mut [u8],
) -> Result<u128, MailboxError> {
    let mut hasher = Xxh3::new();
    while from < to {
        let n = usize::try_from(to - from).map_or(buf.len(), |n| n.min(buf.len()));
        match file.read_exact_at(&mut buf[..n], from) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(MailboxError::Changed {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(io_error(path, "checking")(e)),
        }
        hasher.update(&buf[..n]);
        from += n as u64;
    }
    Ok(hasher.digest128())
}

/// Removes the raw ranges of the deleted messages from the spool of
/// length `end` (N) and keeps every other byte, crash-safely (see the
/// module documentation). Returns the new length. Nothing is written when
/// nothing is deleted.
pub fn apply(
    state: &StateDir,
    file: &File,
    path: &Path,
    spans: &[Span],
    deleted: &[bool],
    tick: &mut dyn FnMut(),
) -> Result<u64, MailboxError> {
    let meta = file.metadata().map_err(io_error(path, "checking"))?;
    let end = meta.size();
    let is_deleted = |i: usize| deleted.get(i).copied().unwrap_or(false);
    let Some(first) = (0..spans.len()).find(|&i| is_deleted(i)) else {
        return Ok(end);
    };
    let start = spans[first].from_offset;
    let deleted_bytes: u64 = (0..spans.len())
        .filter(|&i| is_deleted(i))
        .map(|i| spans[i].end.saturating_sub(spans[i].from_offset))
        .sum();
    let Some(new_len) = end.checked_sub(deleted_bytes).filter(|&w| w >= start) else {
        return Err(MailboxError::Changed {
            path: path.to_path_buf(),
        });
    };
    if new_len == start {
        file.set_len(start)
            .and_then(|()| fault_point())
            .map_err(io_error(path, "truncating"))?;
        file.sync_all()
            .and_then(|()| fault_point())
            .map_err(io_error(path, "syncing"))?;
        return Ok(start);
    }
    let marker = make_marker(
        deleted_bytes.min(journal::MAX_MARKER as u64) as usize,
        &meta,
    );
    let header = Header {
        phase: Phase::Undo,
        dev: meta.dev(),
        ino: meta.ino(),
        start,
        orig_len: end,
        new_len,
        marker: marker.clone(),
        spool: path.to_path_buf(),
    };
    // Step 1.
    let mut journal = Journal::create(state, file, header, tick)
        .map_err(io_error(path, "writing the update journal for"))?;
    let steps = (|| {
        // Step 2.
        let copied = compact(file, path, spans, deleted, end, tick)?;
        if copied != new_len {
            return Err(MailboxError::Changed {
                path: path.to_path_buf(),
            });
        }
        // Step 3.
        file.write_all_at(&marker, new_len)
            .and_then(|()| fault_point())
            .map_err(io_error(path, "updating"))?;
        file.sync_all()
            .and_then(|()| fault_point())
            .map_err(io_error(path, "syncing"))?;
        // Only a writer ignoring our locks could have appended; the
        // truncate would destroy what it wrote.
        if file.metadata().map_err(io_error(path, "checking"))?.size() != end {
            return Err(MailboxError::Changed {
                path: path.to_path_buf(),
            });
        }
        // Step 4.
        journal
            .set_phase(Phase::Compacted)
            .and_then(|()| fault_point())
            .map_err(io_error(path, "writing the update journal for"))?;
        Ok(())
    })();
    if let Err(e) = steps {
        undo_now(journal, file, path, tick);
        return Err(e);
    }
    // Step 5.
    if let Err(e) = file.set_len(new_len).and_then(|()| fault_point()) {
        // Undoing needs the length N.
        if file.metadata().is_ok_and(|m| m.size() == end) {
            undo_now(journal, file, path, tick);
        } else {
            keep_for_recovery(&journal, path, &e);
        }
        return Err(io_error(path, "truncating")(e));
    }
    if let Err(e) = file.sync_all().and_then(|()| fault_point()) {
        // The truncate may or may not be durable: the next login recovers
        // (phase COMPACTED, the marker decides).
        keep_for_recovery(&journal, path, &e);
        return Err(io_error(path, "syncing")(e));
    }
    // Step 6. The update is complete even if this fails: recovery would
    // only remove the journal.
    let jpath = journal.path().to_path_buf();
    if let Err(e) = journal.remove() {
        log::warn!("cannot remove update journal {}: {e}", jpath.display());
    }
    Ok(new_len)
}

fn keep_for_recovery(journal: &Journal, path: &Path, e: &io::Error) {
    log::error!(
        "mailbox {}: finishing the update failed ({e}); journal {} kept, the next login completes or undoes the update",
        path.display(),
        journal.path().display()
    );
}

/// After an error in steps 2–5, with the spool length ≥ N: the journal goes
/// (back) to phase UNDO durably first — the phase byte may already say
/// COMPACTED on disk even if its sync failed, and recovery must never
/// finish a truncate over a half-undone spool — then writing the saved
/// bytes back restores the spool. If the phase cannot be recorded, nothing
/// is touched and the journal is kept: recovery sees a consistent state.
fn undo_now(mut journal: Journal, file: &File, path: &Path, tick: &mut dyn FnMut()) {
    if let Err(e) = journal.set_phase(Phase::Undo) {
        keep_for_recovery(&journal, path, &e);
        return;
    }
    match journal.undo(file, tick) {
        Ok(()) => {
            let jpath = journal.path().to_path_buf();
            if let Err(e) = journal.remove() {
                log::warn!("cannot remove update journal {}: {e}", jpath.display());
            }
        }
        Err(e) => log::error!(
            "mailbox {}: undoing a failed update failed too ({e}); journal {} kept, the next login restores the spool",
            path.display(),
            journal.path().display()
        ),
    }
}

/// NUL, then bytes no MDA will reproduce: an mbox append starts with
/// `From ` (or a newline), and the rest differs per update.
fn make_marker(len: usize, meta: &std::fs::Metadata) -> Vec<u8> {
    use md5::{Digest, Md5};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Md5::new();
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    h.update(meta.ino().to_le_bytes());
    h.update(meta.size().to_le_bytes());
    let digest = h.finalize();
    let mut marker = vec![0u8; len];
    for (dst, src) in marker.iter_mut().skip(1).zip(digest.iter()) {
        *dst = *src;
    }
    marker
}

/// Copies the kept bytes after the first deleted message down, front to
/// back (each source byte is read before anything overwrites it), within
/// `[0, end)`. Returns where the copy ended (W); truncating is the
/// caller's job.
pub fn compact(
    file: &File,
    path: &Path,
    spans: &[Span],
    deleted: &[bool],
    end: u64,
    tick: &mut dyn FnMut(),
) -> Result<u64, MailboxError> {
    let is_deleted = |i: usize| deleted.get(i).copied().unwrap_or(false);
    let Some(first) = (0..spans.len()).find(|&i| is_deleted(i)) else {
        return Ok(end);
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
                span.from_offset,
                &mut write_at,
                tick,
            )?;
            read_at = span.end;
        }
    }
    // The rest of the scanned part and all mail appended since.
    copy_down(file, path, &mut buf, read_at, end, &mut write_at, tick)?;
    Ok(write_at)
}

/// Copies `from..to` down to `*write_at`, which is ≤ `from`.
fn copy_down(
    file: &File,
    path: &Path,
    buf: &mut [u8],
    mut from: u64,
    to: u64,
    write_at: &mut u64,
    tick: &mut dyn FnMut(),
) -> Result<(), MailboxError> {
    while from < to {
        let want = usize::try_from(to - from).map_or(buf.len(), |n| n.min(buf.len()));
        let n = match file.read_at(&mut buf[..want], from) {
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
                .and_then(|()| fault_point())
                .map_err(io_error(path, "updating"))?;
        }
        from += n as u64;
        *write_at += n as u64;
        tick();
    }
    Ok(())
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
