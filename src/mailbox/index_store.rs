//! Reading, atomically replacing and dropping a spool's index file under `state_dir`.
//!
//! The index is written to `<key>.index.new` and renamed over
//! `<key>.index`, so a reader sees the old file or the new one, never a
//! mix. It is not fsynced: after a crash a half-written file fails its
//! checksum and the next login scans the spool (the index is a cache, the
//! spool is the truth). Only the session that holds the spool's session
//! lock writes it, and no lock the MDA waits for is held meanwhile.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;

use super::index::Index;
use super::state::{self, SpoolKey, StateDir};
use crate::limits;

/// The stored index of `spool`: `Ok(None)` when there is none, `Err` with
/// the reason when it cannot be used (logged by the caller, then replaced).
pub fn load(state: &StateDir, spool: &SpoolKey) -> Result<Option<Index>, String> {
    let path = state.index(spool);
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    // Sized from the file: one read, no growing copies of megabytes.
    let len = file
        .metadata()
        .map_or(0, |m| m.len().min(limits::MAX_INDEX_BYTES));
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0) + 1);
    file.take(limits::MAX_INDEX_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if data.len() as u64 > limits::MAX_INDEX_BYTES {
        return Err(format!("{} is larger than any index", path.display()));
    }
    Index::decode(&data)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces the stored index of `spool` by `index`.
pub fn store(state: &StateDir, spool: &SpoolKey, index: &Index) -> io::Result<()> {
    let data = index.encode();
    if data.len() as u64 > limits::MAX_INDEX_BYTES {
        // Not worth caching: the next login scans, as it would anyway.
        return remove(state, spool);
    }
    state::replace_file(&state.index_tmp(spool), &state.index(spool), &data)
}

/// Drops the stored index of `spool` (none is fine).
pub fn remove(state: &StateDir, spool: &SpoolKey) -> io::Result<()> {
    match fs::remove_file(state.index(spool)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
