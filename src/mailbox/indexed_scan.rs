//! Scanning a spool at login with the help of its index: reuse it and scan the tail, or scan everything.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::index_check::{self, Contents};
use super::index_store;
use super::split_scan;
use super::state::{SpoolKey, StateDir};

/// How the messages were found, for the log and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanKind {
    /// The index was reused and nothing was appended: it is still current.
    Unchanged,
    /// The index was reused; only its last message and new mail were read.
    Tail,
    /// The whole spool was read.
    Full,
}

/// The canonical path of a spool as the index records it.
pub fn index_path(key: &SpoolKey) -> Vec<u8> {
    key.canonical().as_os_str().as_bytes().to_vec()
}

/// The contents of the spool `file` at `spool` (resolved as `key`).
/// `use_index`: false after journal recovery changed the file (the old
/// index describes what was there before). Never fails because of the index: a missing, damaged or
/// stale one only means a full scan.
pub fn scan(
    state: &StateDir,
    spool: &Path,
    key: &SpoolKey,
    file: &File,
    use_index: bool,
    now: i64,
    tick: &mut dyn FnMut(),
) -> io::Result<(Contents, ScanKind)> {
    // Taken before anything is read: a write after it changes the stat
    // the next login compares with.
    let meta = file.metadata()?;
    let stat = index_check::hint_of(&meta);
    let stored = if use_index {
        index_store::load(state, key).unwrap_or_else(|why| {
            log::warn!("spool index not used: {why}");
            None
        })
    } else {
        None
    };
    let path = index_path(key);
    let old = match stored {
        Some(mut index) => {
            match index_check::reuse(&mut index, &path, file, (meta.ino(), stat), now, tick)? {
                Ok(contents) => {
                    let kind = if contents.scanned_len == index.indexed_len {
                        ScanKind::Unchanged
                    } else {
                        ScanKind::Tail
                    };
                    log::debug!(
                        "mailbox {}: spool index used; {} new bytes scanned",
                        spool.display(),
                        contents.scanned_len - index.indexed_len
                    );
                    return Ok((contents, kind));
                }
                Err(why) => {
                    log::info!(
                        "mailbox {}: spool index not used ({why}); scanning it all",
                        spool.display()
                    );
                    // Retrieval times carry over only within this spool.
                    Some(index).filter(|i| i.path == path)
                }
            }
        }
        None => None,
    };
    let scan = split_scan::scan_whole(file, meta.len(), tick)?;
    let retrieved = match &old {
        Some(old) => index_check::carry_retrievals(old, &scan.messages),
        None => vec![0; scan.messages.len()],
    };
    Ok((
        Contents {
            messages: scan.messages,
            retrieved,
            scanned_len: scan.scanned_len,
            full_scan_at: now,
            stat,
        },
        ScanKind::Full,
    ))
}
