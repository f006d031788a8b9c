//! Whether a stored spool index still describes the spool, and the scan of what was appended since.
//!
//! The index describes the prefix `[0, L)`. It is used only if all of
//! these hold; any doubt means a full scan:
//!
//! 1. the file decodes: magic, version, checksum, ordered offsets (`index`);
//! 2. it names this spool (canonical path) and this file (inode), and the
//!    file is at least L long;
//! 3. it was built by a full scan less than a day ago
//!    (`limits::INDEX_FULL_SCAN_AFTER`): whatever the checks below miss
//!    lives at most that long;
//! 4. a spool that has not grown (size L) still shows the stat recorded
//!    just before its bytes were read: the same size, mtime and ctime. Any
//!    write sets both, so an in-place edit that keeps the length (a mail
//!    reader changing a header) means a full scan. An append always grows
//!    the file, so the common case costs nothing;
//! 5. sampled messages — the first, the one before the last and
//!    [`limits::INDEX_SAMPLES_QUIET`] or [`limits::INDEX_SAMPLES_CHANGED`] random others — are
//!    re-read and re-scanned: each must start with `From ` after a blank
//!    line, end where the next `From ` starts, and scan to the same
//!    content range, POP3 size and UID digest. More samples when the
//!    spool grew, or its stat was taken within a second of a change;
//! 6. the last indexed message and everything after it are scanned again
//!    (a new message can only start after it): the rescan must find the
//!    last message where the index has it, and, when the file has not
//!    grown, exactly as the index has it.
//!
//! What this cannot catch: a spool that grew (mail was appended) *and*
//! was rewritten in place since the last login without moving any byte
//! offset, where the rewritten message is neither sampled nor the last
//! one; or an in-place edit in the same clock tick (a few milliseconds;
//! a second where the file system keeps whole seconds) as the write
//! before the recorded stat, which leaves mtime and ctime as they were. The LIST
//! size and UIDL of that message are then served from the index until
//! the next full scan; RETR and TOP re-scan the message before sending it
//! (up to [`limits::RETR_CHECK_MAX_BYTES`]; a longer one only at its
//! boundaries), refuse it with `-ERR [SYS/TEMP]` and drop the index.

use std::collections::hash_map::RandomState;
use std::fs::{File, Metadata};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use super::index::{Entry, Index, StatHint};
use super::scan::{Scan, ScannedMessage, Scanner};
use crate::limits;

/// The messages of a spool and their retrieval times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub messages: Vec<ScannedMessage>,
    /// One per message: unix time of its first retrieval, 0 for never.
    pub retrieved: Vec<i64>,
    /// L: bytes described.
    pub scanned_len: u64,
    /// When the messages before the tail were last found by a full scan.
    pub full_scan_at: i64,
    /// The spool's stat taken before the bytes described were read.
    pub stat: StatHint,
}

/// The stat of an open spool (`meta`), taken now.
pub fn hint_of(meta: &Metadata) -> StatHint {
    // The real clock, not the test clock: it is compared with the file's
    // own timestamps.
    let taken_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    StatHint {
        size: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
        taken_at,
    }
}

/// Reads and scans `[scanner.offset(), until)` of the spool.
pub fn scan_file(
    file: &File,
    mut scanner: Scanner,
    until: u64,
    tick: &mut dyn FnMut(),
) -> io::Result<Scan> {
    let mut buf = vec![0u8; limits::SCAN_BLOCK];
    while scanner.offset() < until {
        let want =
            usize::try_from(until - scanner.offset()).map_or(buf.len(), |n| n.min(buf.len()));
        match file.read_at(&mut buf[..want], scanner.offset()) {
            Ok(0) => break,
            Ok(n) => scanner.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        tick();
    }
    Ok(scanner.finish())
}

/// Uses `index` for the spool `file` (whose canonical path is `path`,
/// inode `inode` and stat `stat`, taken before any of it was read),
/// scanning only its last message and what follows. `Ok(Err(why))`: the
/// index cannot be trusted, scan it all.
pub fn reuse(
    index: &mut Index,
    path: &[u8],
    file: &File,
    (inode, stat): (u64, StatHint),
    now: i64,
    tick: &mut dyn FnMut(),
) -> io::Result<Result<Contents, &'static str>> {
    if index.path != path {
        return Ok(Err("it belongs to another spool"));
    }
    if index.inode != inode {
        return Ok(Err("the spool was replaced by another file"));
    }
    if stat.size < index.indexed_len {
        return Ok(Err("the spool is shorter than the index"));
    }
    let age = now.saturating_sub(index.full_scan_at);
    if !(0..limits::INDEX_FULL_SCAN_AFTER.as_secs() as i64).contains(&age) {
        return Ok(Err("its last full scan is a day old"));
    }
    let unchanged = stat.same_file_stat(&index.hint);
    if stat.size == index.indexed_len && !unchanged {
        return Ok(Err("the spool was written without growing"));
    }
    let samples = if unchanged && !index.hint.racy() {
        limits::INDEX_SAMPLES_QUIET
    } else {
        limits::INDEX_SAMPLES_CHANGED
    };
    for i in sample_indices(index.entries.len(), samples) {
        if !message_matches(
            file,
            &index.entries[i].message,
            false,
            limits::INDEX_SAMPLE_MAX_BYTES,
        )? {
            return Ok(Err("a sampled message is not where the index has it"));
        }
    }
    rescan_tail(index, file, stat, tick)
}

/// Entry 0, the one before the last, and `random` others below the last
/// (the last is rescanned anyway).
fn sample_indices(count: usize, random: usize) -> Vec<usize> {
    let below_last = count.saturating_sub(1);
    if below_last <= random + 2 {
        return (0..below_last).collect();
    }
    let mut state = RandomState::new().build_hasher().finish() | 1;
    let mut picks = vec![0, below_last - 1];
    for _ in 0..random {
        // xorshift64: sampling needs spread, not secrecy.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        picks.push((state % below_last as u64) as usize);
    }
    picks
}

/// Re-reads one message: the blank line before its `From ` line, the next
/// `From ` line after it (unless it is the `last` scanned), and, when it is
/// at most `limit` long, a scan of it that must agree with `m`.
pub fn message_matches(
    file: &File,
    m: &ScannedMessage,
    last: bool,
    limit: u64,
) -> io::Result<bool> {
    let before = u64::from(m.from_offset > 0);
    let len = m.end - m.from_offset;
    let whole = len <= limit;
    let next = if last { 0 } else { 5 };
    let read_len = before + if whole { len + next } else { 5 };
    let mut buf = vec![0u8; read_len as usize];
    match file.read_exact_at(&mut buf, m.from_offset - before) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    if before == 1 && buf[0] != b'\n' {
        return Ok(false);
    }
    let body = &buf[before as usize..];
    if m.has_from_line() && !body.starts_with(b"From ") {
        return Ok(false);
    }
    if !whole && last {
        return Ok(true);
    }
    if !whole {
        let mut next = [0u8; 6];
        match file.read_exact_at(&mut next, m.end - 1) {
            Ok(()) => return Ok(&next == b"\nFrom "),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    let (message, next) = body.split_at(len as usize);
    if !last && next != b"From " {
        return Ok(false);
    }
    let mut scanner = if m.from_offset == 0 {
        Scanner::new()
    } else {
        Scanner::resume_at(m.from_offset)
    };
    scanner.feed(message);
    Ok(scanner.finish().messages.as_slice() == std::slice::from_ref(m))
}

/// Scans from the last indexed message to the end the spool's `stat`
/// shows and joins the result to the rest of the index.
fn rescan_tail(
    index: &mut Index,
    file: &File,
    stat: StatHint,
    tick: &mut dyn FnMut(),
) -> io::Result<Result<Contents, &'static str>> {
    let size = stat.size;
    let last = index.entries.last();
    let scanner = match &last {
        Some(l) if l.message.from_offset > 0 => Scanner::resume_at(l.message.from_offset),
        _ => Scanner::new(),
    };
    let tail = scan_file(file, scanner, size, tick)?;
    if tail.scanned_len != size {
        return Ok(Err("the spool shrank while it was scanned"));
    }
    let mut carried = 0;
    if let Some(l) = &last {
        let Some(first) = tail.messages.first() else {
            return Ok(Err("its last message is gone"));
        };
        if first.from_offset != l.message.from_offset
            || first.content_offset != l.message.content_offset
        {
            return Ok(Err("its last message moved"));
        }
        if size == index.indexed_len && *first != l.message {
            return Ok(Err("its last message was rewritten"));
        }
        if first.digest == l.message.digest {
            carried = l.retrieved_at;
        }
    }
    // Taken only now: until here the caller may still use the index.
    let mut entries = std::mem::take(&mut index.entries);
    entries.pop();
    let mut retrieved: Vec<i64> = entries.iter().map(|e| e.retrieved_at).collect();
    let mut messages: Vec<ScannedMessage> = entries.into_iter().map(|e| e.message).collect();
    retrieved.extend((0..tail.messages.len()).map(|i| if i == 0 { carried } else { 0 }));
    messages.extend(tail.messages);
    Ok(Ok(Contents {
        messages,
        retrieved,
        scanned_len: size,
        full_scan_at: index.full_scan_at,
        stat,
    }))
}

/// The index that describes `contents` of the spool `file` (`meta`: its
/// metadata now, for the inode; the stat it records is the one taken
/// before `contents` were read).
pub fn build(path: &[u8], meta: &Metadata, contents: &Contents) -> Index {
    Index {
        path: path.to_vec(),
        inode: meta.ino(),
        indexed_len: contents.scanned_len,
        hint: contents.stat,
        full_scan_at: contents.full_scan_at,
        entries: contents
            .messages
            .iter()
            .zip(&contents.retrieved)
            .map(|(m, &retrieved_at)| Entry {
                message: m.clone(),
                retrieved_at,
            })
            .collect(),
    }
}

/// Retrieval times of a stale index, by UID digest in mailbox order, for
/// a full rescan: a message keeps its retrieval time when its digest (and
/// occurrence among equal digests) is found again.
pub fn carry_retrievals(old: &Index, messages: &[ScannedMessage]) -> Vec<i64> {
    use std::collections::HashMap;
    let mut times: HashMap<[u8; 16], Vec<i64>> = HashMap::new();
    for e in &old.entries {
        times
            .entry(e.message.digest)
            .or_default()
            .push(e.retrieved_at);
    }
    let mut seen: HashMap<[u8; 16], usize> = HashMap::new();
    messages
        .iter()
        .map(|m| {
            let n = seen.entry(m.digest).or_insert(0);
            let t = times.get(&m.digest).and_then(|v| v.get(*n)).copied();
            *n += 1;
            t.unwrap_or(0)
        })
        .collect()
}
