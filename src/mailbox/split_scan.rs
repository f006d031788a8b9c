//! The full scan of a large spool in two halves at once, joined into exactly what one scan from the start finds.
//!
//! A first login (and the daily full scan) reads every byte of the spool
//! and hashes it; on a 1 GB spool that is about 0.3 s of one core. From
//! [`limits::SPLIT_SCAN_MIN_BYTES`] on, a second thread scans from the
//! first message boundary (`"\n\nFrom "`) after the middle while the
//! session's own thread scans up to it. A boundary there splits the
//! framing cleanly: the first half ends with a blank line (the separator,
//! not part of its last message) and the second starts with a `From ` line
//! after it, which is what [`Scanner::resume_at`] expects. Anything
//! unusual — no boundary near the middle (one huge message), a first half
//! without a message (leading blank lines belong to the first message's
//! hash), no thread to be had — means one ordinary scan instead.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use memchr::memmem;

use super::index_check::scan_file;
use super::scan::{Scan, Scanner};
use crate::limits;

/// The message boundary a scan can start at: a blank line, then `From `.
const BOUNDARY: &[u8] = b"\n\nFrom ";

/// Scans `[0, until)` of `file` from its start, in two halves at once when
/// it is large. `tick` is called by the session's thread as it goes.
pub fn scan_whole(file: &File, until: u64, tick: &mut dyn FnMut()) -> io::Result<Scan> {
    scan_halves_from(file, until, limits::SPLIT_SCAN_MIN_BYTES, tick)
}

/// [`scan_whole`] with the size from which it splits (tests split small files).
fn scan_halves_from(
    file: &File,
    until: u64,
    min_bytes: u64,
    tick: &mut dyn FnMut(),
) -> io::Result<Scan> {
    let split = if until >= min_bytes {
        boundary_after(file, until / 2, until)?
    } else {
        None
    };
    let Some(split) = split else {
        return scan_file(file, Scanner::new(), until, tick);
    };
    let (first, second) = std::thread::scope(|scope| {
        let second = std::thread::Builder::new()
            .name("scan".into())
            .stack_size(limits::WORKER_STACK)
            .spawn_scoped(scope, || {
                scan_file(file, Scanner::resume_at(split), until, &mut || {})
            });
        let first = scan_file(file, Scanner::new(), split, tick);
        let second = match second {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the scan thread panicked"))),
            // No thread to be had: this one scans the second half too.
            Err(_) => scan_file(file, Scanner::resume_at(split), until, tick),
        };
        (first, second)
    });
    match join(first?, second?) {
        Some(scan) => Ok(scan),
        None => scan_file(file, Scanner::new(), until, tick),
    }
}

/// The start of the first `From ` line after a blank line at or after
/// `from`, searched at most [`limits::SPLIT_SEARCH_MAX_BYTES`] far and
/// before `until`, one [`limits::SCAN_BLOCK`] at a time.
fn boundary_after(file: &File, from: u64, until: u64) -> io::Result<Option<u64>> {
    let end = until.min(from.saturating_add(limits::SPLIT_SEARCH_MAX_BYTES));
    let finder = memmem::Finder::new(BOUNDARY);
    let mut buf = vec![0u8; limits::SCAN_BLOCK];
    let mut at = from;
    while at < end {
        let want = usize::try_from(end - at).map_or(buf.len(), |n| n.min(buf.len()));
        let got = match file.read_at(&mut buf[..want], at) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(i) = finder.find(&buf[..got]) {
            return Ok(Some(at + i as u64 + 2));
        }
        if at + (got as u64) >= end {
            return Ok(None);
        }
        // The next block starts early enough to see a boundary cut here.
        at += (got - got.min(BOUNDARY.len() - 1)).max(1) as u64;
    }
    Ok(None)
}

/// The scan of `[0, end)` from the scans of `[0, split)` (`first`, from
/// the start) and `[split, end)` (`second`, resumed at `split`, a `From `
/// line after a blank line). `None` when they do not fit together: when
/// `first` holds no message (the blank lines before `split` then belong to
/// the first message's content hash, which `second` did not see), or when
/// `second` does not start with a message at `split` (the file changed).
fn join(first: Scan, second: Scan) -> Option<Scan> {
    let split = first.scanned_len;
    if first.messages.is_empty() || second.messages.first()?.from_offset != split {
        return None;
    }
    let mut messages = first.messages;
    messages.extend(second.messages);
    Some(Scan {
        messages,
        scanned_len: second.scanned_len,
    })
}

#[cfg(test)]
#[path = "split_scan_tests.rs"]
mod tests;
