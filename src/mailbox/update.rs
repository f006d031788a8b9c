//! UPDATE: verify what the session saw, then remove the deleted messages in place, crash-safely, in journaled rounds of bounded size.
//!
//! Writing in place (not a new file renamed over the spool) keeps the
//! spool's inode, owner, group and mode, and the MDA's descriptors valid.
//! [`apply`] runs with the delivery locks held, after [`verify`].
//!
//! # Write/fsync order
//!
//! N is the spool length under the delivery locks, S the offset of the
//! first deleted message, W the length after the update; the kept bytes
//! after S move down into `[S, W)` in rounds of at most R bytes
//! (`plan.rs`). Recovery always rolls *forward*: once the journal exists,
//! the update is finished, by this process or by recovery.
//!
//! * Nothing kept after S (delete-all, or only trailing messages with
//!   nothing appended): `ftruncate(S)`, fsync. No journal: a crash leaves
//!   the old file or the truncated one.
//! * Otherwise, in steps:
//! * step 0: fsync the spool: N, and the mail the MDA appended before we took
//!   the locks, are durable before anything relies on them.
//! * step 1: hash the bytes every round will write (one read of the kept
//!   bytes); write the journal `<spool>.journal.new` (plan, hashes,
//!   marker, progress "before round 0"), allocated at full size;
//!   fsync; rename to `<spool>.journal`; fsync `state_dir`. *Crash
//!   before the rename:* no journal, the spool untouched.
//! * step 2: for each round k: (a) copy the round's destination bytes as they
//!   are now into the journal, fdatasync; (b) record "in round k",
//!   fdatasync; (c) write the round's bytes, fsync the spool; (d)
//!   record "before round k+1", fdatasync. *Crash in (a)–(b):* the
//!   record still says "before round k" (its slot is not the one being
//!   written) and the spool's round k is untouched. *Crash in (c)–(d):*
//!   "in round k": each destination byte is either its original (kept
//!   in the journal) or its new value, and the sources of round k and
//!   later are intact (a kept byte never moves up; round k's own
//!   sources that overlap its destination are in the journal).
//! * step 3: write the marker (a NUL and 15 random bytes) at W, fsync; record
//!   "truncating", fdatasync; `ftruncate(W)`, fsync. *Crash:* marker
//!   present at W means the truncate did not happen (an MDA appends
//!   `From ` lines, never our marker); absent, it did and whatever
//!   follows W was appended later.
//! * step 4: unlink the journal, fsync `state_dir`.
//!
//! Recovery (`recovery.rs`) proves the file is what this sequence left
//! before it writes anything, redoes the round in progress, runs the rest
//! and, when mail was appended at N after the crash, moves that mail down
//! too (a second journal that deletes `[W, N)`). An I/O error while the
//! journal is being created leaves no journal and the spool as it was;
//! once the journal is in place, an I/O error keeps it, and the next
//! login (or the next daemon start) completes the update, as QUIT's
//! reply says.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use super::fault::{fault_point, made_durable};
use super::journal::{self, Header, Journal, Progress, TailCheck};
use super::plan::Plan;
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

pub(super) fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl Fn(io::Error) -> MailboxError + 'a {
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
        // A spool only the privileged helper can reach (in a home
        // directory the daemon's user cannot enter): the path cannot be
        // compared, so the file itself still having its one link stands
        // in. That shows it was not removed, or renamed over; it does not
        // show it still has its name: a spool moved aside (`mv`) and
        // re-created by the MDA leaves this file one link, and the update
        // goes to the moved file.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            if meta.nlink() != 1 {
                return Err(changed());
            }
        }
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
    from: u64,
    to: u64,
    buf: &mut [u8],
) -> Result<u128, MailboxError> {
    hash_bytes(file, from, to, buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => MailboxError::Changed {
            path: path.to_path_buf(),
        },
        _ => io_error(path, "checking")(e),
    })
}

/// XXH3-128 of the file's bytes `[from, to)`, read through `buf`.
pub fn hash_bytes(file: &File, mut from: u64, to: u64, buf: &mut [u8]) -> io::Result<u128> {
    let mut hasher = Xxh3::new();
    while from < to {
        let n = usize::try_from(to - from).map_or(buf.len(), |n| n.min(buf.len()));
        file.read_exact_at(&mut buf[..n], from)?;
        hasher.update(&buf[..n]);
        from += n as u64;
    }
    Ok(hasher.digest128())
}

/// XXH3-128 of each piece of the deleted bytes of `plan` (see
/// [`Plan::deleted_pieces`]), read from the file as it is now.
pub fn deleted_hashes(file: &File, plan: &Plan, marker_len: usize) -> io::Result<Vec<u128>> {
    let mut buf = vec![0u8; limits::SCAN_BLOCK];
    plan.deleted_pieces(marker_len as u64)
        .into_iter()
        .map(|(a, b)| hash_bytes(file, a, b, &mut buf))
        .collect()
}

/// Removes the raw ranges of the deleted messages from the spool and
/// keeps every other byte, crash-safely (see the module documentation).
/// Returns the new length. Nothing is written when nothing is deleted.
/// `account` (the login's name) is recorded in the journal for startup
/// recovery.
pub fn apply(
    state: &StateDir,
    file: &File,
    path: &Path,
    account: Option<&str>,
    spans: &[Span],
    deleted: &[bool],
) -> Result<u64, MailboxError> {
    let meta = file.metadata().map_err(io_error(path, "checking"))?;
    let end = meta.size();
    let ranges: Vec<(u64, u64)> = spans
        .iter()
        .zip(deleted)
        .filter(|(_, &d)| d)
        .map(|(s, _)| (s.from_offset, s.end))
        .collect();
    if ranges.is_empty() {
        return Ok(end);
    }
    let plan =
        Plan::new(end, ranges, limits::JOURNAL_ROUND).ok_or_else(|| MailboxError::Changed {
            path: path.to_path_buf(),
        })?;
    if plan.rounds() == 0 {
        file.set_len(plan.start)
            .and_then(|()| fault_point())
            .map_err(io_error(path, "truncating"))?;
        file.sync_all().map_err(io_error(path, "syncing"))?;
        made_durable(file);
        fault_point().map_err(io_error(path, "syncing"))?;
        return Ok(plan.start);
    }
    // Step 0.
    file.sync_all().map_err(io_error(path, "syncing"))?;
    made_durable(file);
    fault_point().map_err(io_error(path, "syncing"))?;
    // Step 1.
    let marker = make_marker(
        plan.deleted_bytes().min(journal::MAX_MARKER as u64) as usize,
        &meta,
    );
    let header = Header {
        ino: meta.ino(),
        spool: path.to_path_buf(),
        account: account.map(str::to_owned),
        tail: Some(tail_check(file, &plan, marker.len()).map_err(io_error(path, "reading"))?),
        deleted_hashes: Some(
            deleted_hashes(file, &plan, marker.len()).map_err(io_error(path, "reading"))?,
        ),
        round_hashes: round_hashes(file, &plan).map_err(io_error(path, "reading"))?,
        marker,
        plan,
    };
    let journal = Journal::create(state, header, false)
        .map_err(io_error(path, "writing the update journal for"))?;
    run(journal, file, path, None)
}

/// Steps 2–4 from where `journal` stands; `original` is the journal's
/// copy of the round in progress (recovery), if any. Returns W (or what
/// the appended-mail pass left).
pub fn run(
    mut journal: Journal,
    file: &File,
    path: &Path,
    mut original: Option<Vec<u8>>,
) -> Result<u64, MailboxError> {
    let result = (|| -> io::Result<u64> {
        let plan = journal.header.plan.clone();
        let first = match journal.progress {
            Progress::Between { round } | Progress::InRound { round } => round,
            Progress::Truncating => plan.rounds(),
        };
        for k in first..plan.rounds() {
            let (from, to) = plan.destination(k);
            let new = round_bytes(file, &plan, k, original.as_deref())?;
            if original.take().is_none() {
                let mut now = vec![0u8; (to - from) as usize];
                file.read_exact_at(&mut now, from)?;
                journal.begin_round(k, &now)?;
            }
            file.write_all_at(&new, from)?;
            fault_point()?;
            file.sync_all()?;
            made_durable(file);
            fault_point()?;
            journal.record(Progress::Between { round: k + 1 })?;
        }
        finish(journal, file)
    })();
    result.map_err(|e| {
        log::error!(
            "mailbox {}: the update failed ({e}); its journal is kept and the next login or daemon start completes it",
            path.display()
        );
        io_error(path, super::UPDATE_PENDING)(e)
    })
}

/// Steps 3–4; when mail was appended after N (a crash, then an MDA),
/// first moves it down over `[W, N)` under a new journal.
fn finish(mut journal: Journal, file: &File) -> io::Result<u64> {
    let h = journal.header.clone();
    let (w, n) = (h.plan.new_len(), h.plan.orig_len);
    let len = file.metadata()?.len();
    if len > n {
        let plan = Plan::new(len, vec![(w, n)], h.plan.round).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "appended mail left no plan")
        })?;
        let next = Header {
            round_hashes: round_hashes(file, &plan)?,
            tail: Some(tail_check(file, &plan, h.marker.len())?),
            deleted_hashes: Some(deleted_hashes(file, &plan, h.marker.len())?),
            plan,
            ..h.clone()
        };
        let state = StateDir::new(journal.path().parent().unwrap_or(Path::new(".")));
        // Replaces the old journal in one rename.
        let next = Journal::create(&state, next, true)?;
        return run_inner(next, file);
    }
    if journal.progress != Progress::Truncating {
        file.write_all_at(&h.marker, w)?;
        fault_point()?;
        file.sync_all()?;
        made_durable(file);
        fault_point()?;
        journal.record(Progress::Truncating)?;
    }
    file.set_len(w)?;
    fault_point()?;
    file.sync_all()?;
    made_durable(file);
    fault_point()?;
    // The update is complete even if this fails: recovery would find the
    // marker gone and only remove the journal.
    let jpath = journal.path().to_path_buf();
    if let Err(e) = journal.remove() {
        log::warn!("cannot remove update journal {}: {e}", jpath.display());
    }
    Ok(w)
}

fn run_inner(journal: Journal, file: &File) -> io::Result<u64> {
    let path = journal.header.spool.clone();
    run(journal, file, &path, None).map_err(|e| match e {
        MailboxError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })
}

/// The tail check of `plan` (see `journal.rs`), read from the file as it
/// is now: the last bytes before N, after W and the marker (`marker_len`).
pub fn tail_check(file: &File, plan: &Plan, marker_len: usize) -> io::Result<TailCheck> {
    let n = plan.orig_len;
    let from =
        (plan.new_len() + marker_len as u64).max(n.saturating_sub(limits::JOURNAL_TAIL_CHECK));
    let mut buf = vec![0u8; n.saturating_sub(from) as usize];
    Ok(TailCheck {
        len: n.saturating_sub(from),
        hash: hash_bytes(file, from, n, &mut buf)?,
    })
}

/// XXH3-128 of the bytes each round of `plan` writes, read from the file
/// as it is now.
pub fn round_hashes(file: &File, plan: &Plan) -> io::Result<Vec<u128>> {
    (0..plan.rounds())
        .map(|k| round_bytes(file, plan, k, None).map(|b| xxh3_128(&b)))
        .collect()
}

/// The bytes round `k` writes, read from their sources; `original`: the
/// round's destination as it was before the round (sources that overlap
/// the destination are read from it).
pub fn round_bytes(
    file: &File,
    plan: &Plan,
    k: u64,
    original: Option<&[u8]>,
) -> io::Result<Vec<u8>> {
    let (from, to) = plan.destination(k);
    let mut out = Vec::with_capacity((to - from) as usize);
    for (src, len) in plan.sources(k) {
        let at = out.len();
        out.resize(at + len as usize, 0);
        file.read_exact_at(&mut out[at..], src)?;
        if let Some(orig) = original {
            // The part of this source inside the destination.
            let a = src.max(from);
            let b = (src + len).min(to);
            if a < b {
                let dst = &mut out[at + (a - src) as usize..at + (b - src) as usize];
                dst.copy_from_slice(&orig[(a - from) as usize..(b - from) as usize]);
            }
        }
    }
    Ok(out)
}

/// NUL, then bytes no MDA will reproduce: an mbox append starts with
/// `From ` (or a newline), and the rest differs per update.
fn make_marker(len: usize, meta: &std::fs::Metadata) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut seed = Vec::new();
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    seed.extend_from_slice(&now.as_nanos().to_le_bytes());
    seed.extend_from_slice(&meta.ino().to_le_bytes());
    seed.extend_from_slice(&meta.size().to_le_bytes());
    let digest = xxh3_128(&seed).to_le_bytes();
    let mut marker = vec![0u8; len];
    for (dst, src) in marker.iter_mut().skip(1).zip(digest.iter()) {
        *dst = *src;
    }
    marker
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
