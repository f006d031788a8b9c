//! The journal's identity check as nodes of a cluster see it: the same spool through another mount (another st_dev) is recovered, a replaced spool is refused.
//!
//! On NFS every client mount has its own st_dev, so a journal written on
//! one node names a device the recovering node never sees; only what is
//! stable across clients may decide whether the journal is this spool's.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::journal::{self, Header, Journal, Phase, Recovered};
use super::state::StateDir;
use super::MailboxError;

const ONE: &[u8] = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\nfirst\n\n";
const REST: &[u8] = b"From b@x Mon Jan  1 00:00:01 2024\nSubject: two\n\nsecond\n\n\
From c@x Mon Jan  1 00:00:02 2024\nSubject: three\n\nthird\n\n";

fn original() -> Vec<u8> {
    [ONE, REST].concat()
}

/// An update deleting the first message, interrupted halfway through its
/// compaction (phase UNDO), its journal written by a node whose mount of
/// the store has another st_dev.
fn interrupted_on_another_node(state: &StateDir, path: &Path) -> File {
    std::fs::write(path, original()).unwrap();
    let spool = File::options().read(true).write(true).open(path).unwrap();
    let meta = spool.metadata().unwrap();
    let header = Header {
        phase: Phase::Undo,
        dev: meta.dev() ^ 0x5a5a,
        ino: meta.ino(),
        start: 0,
        orig_len: meta.len(),
        new_len: REST.len() as u64,
        marker: vec![0; journal::MAX_MARKER],
        spool: path.to_path_buf(),
    };
    let journal = Journal::create(state, &spool, header, &mut || {}).unwrap();
    drop(journal);
    spool.write_all_at(&REST[..REST.len() / 2], 0).unwrap();
    spool
}

#[test]
fn same_spool_under_another_st_dev_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let path = dir.path().join("zoe");
    let spool = interrupted_on_another_node(&state, &path);
    let outcome = journal::recover(&state, &path, Some(&spool), &mut || {}).unwrap();
    assert_eq!(outcome, Some(Recovered::Undone));
    assert_eq!(std::fs::read(&path).unwrap(), original());
    assert!(!state.journal(&path).exists());
}

#[test]
fn replaced_spool_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let path = dir.path().join("zoe");
    let old = interrupted_on_another_node(&state, &path);
    // Another program replaced the spool (the old file still exists, so
    // the new one cannot reuse its inode).
    std::fs::rename(&path, dir.path().join("zoe.old")).unwrap();
    let replacement = [REST, ONE].concat();
    std::fs::write(&path, &replacement).unwrap();
    let new = File::options().read(true).write(true).open(&path).unwrap();
    let e = journal::recover(&state, &path, Some(&new), &mut || {}).unwrap_err();
    assert!(matches!(e, MailboxError::Refused { .. }), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), replacement);
    assert!(state.journal(&path).exists(), "the journal is kept");
    drop(old);
}
