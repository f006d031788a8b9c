//! The journal's identity check as nodes of a cluster see it: the same spool through another mount (another st_dev) is recovered, a replaced spool is left alone.
//!
//! On NFS every client mount has its own st_dev, so a journal written on
//! one node names a device the recovering node never sees; only what is
//! stable across clients may decide whether the journal is this spool's.
//! The journal stores no device number at all (`journal.rs`): the inode,
//! the lengths, the marker, the path and the hashes of the content decide.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::recovery::{recover, OpenedBy, Recovered};
use super::recovery_tests::crashed_mid_round;
use super::state::{SpoolKey, StateDir};

#[test]
fn same_spool_under_another_st_dev_is_recovered() {
    let (_dir, path, state, _, after) = crashed_mid_round();
    let journal = std::fs::read(state.journal(&SpoolKey::of(&path))).unwrap();
    let dev = std::fs::metadata(&path).unwrap().dev().to_le_bytes();
    assert!(
        !journal[..4096].windows(8).any(|w| w == dev),
        "the journal header holds the spool's st_dev"
    );
    // Recovery reads no st_dev, so another node's mount recovers the same.
    let outcome = recover_leaving(&state, &path, &after);
    assert!(
        matches!(outcome, Some(Recovered::Completed { .. })),
        "{outcome:?}"
    );
}

#[test]
fn replaced_spool_is_left_alone_and_the_journal_set_aside() {
    let (dir, path, state, before, _) = crashed_mid_round();
    // Another program replaced the spool (the old file still exists, so
    // the new one cannot reuse its inode).
    std::fs::rename(&path, dir.path().join("spool.old")).unwrap();
    std::fs::write(&path, &before).unwrap();
    let outcome = recover_leaving(&state, &path, &before);
    assert!(
        matches!(outcome, Some(Recovered::SetAside { .. })),
        "{outcome:?}"
    );
}

/// Runs recovery on the spool at `path` (opened as a session opens it);
/// the spool must then hold `want` and no journal be left for it.
fn recover_leaving(state: &StateDir, path: &Path, want: &[u8]) -> Option<Recovered> {
    let spool = File::options().read(true).write(true).open(path).unwrap();
    let outcome = recover(
        state,
        path,
        &SpoolKey::of(path),
        Some(&spool),
        OpenedBy::Daemon,
    )
    .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), want);
    assert!(!state.journal(&SpoolKey::of(path)).exists());
    outcome
}

/// A progress record whose checksum holds but whose round the plan does
/// not have (a bug, or a hand-made file) sets the journal aside and leaves
/// the spool as it is; it never panics the recovering process.
#[test]
fn a_progress_record_outside_the_plan_is_set_aside_not_a_panic() {
    use super::journal::{Journal, Progress};
    let (_dir, path, state, _, _) = crashed_mid_round();
    let journal_path = state.journal(&SpoolKey::of(&path));
    let mut journal = Journal::open(&journal_path).unwrap().unwrap();
    journal
        .record(Progress::InRound { round: 1 << 40 })
        .unwrap();
    drop(journal);
    let on_disk = std::fs::read(&path).unwrap();
    let spool = File::options().read(true).write(true).open(&path).unwrap();
    let outcome = recover(
        &state,
        &path,
        &SpoolKey::of(&path),
        Some(&spool),
        OpenedBy::Daemon,
    )
    .unwrap();
    assert!(
        matches!(outcome, Some(Recovered::SetAside { .. })),
        "{outcome:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), on_disk);
    assert!(!journal_path.exists());
}

/// The journal names the spool's account and its tail check for startup
/// recovery; a journal of an earlier version (zeros there) and a name
/// that does not fit read as "none", never as a cut or garbled value.
#[test]
fn the_account_name_and_tail_check_are_recorded_or_absent() {
    use super::journal::{Header, Journal, TailCheck};
    use super::plan::Plan;
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path());
    let write = |spool: &Path, account: Option<String>| {
        let header = Header {
            ino: 7,
            plan: Plan::new(100, vec![(0, 20)], 4096).unwrap(),
            marker: vec![1; 10],
            spool: spool.to_path_buf(),
            account,
            tail: Some(TailCheck { len: 10, hash: 77 }),
            round_hashes: vec![0],
            deleted_hashes: None,
        };
        let j = Journal::create(&state, header, false).unwrap();
        j.path().to_path_buf()
    };
    let header = |path: &Path| Journal::open(path).unwrap().unwrap().header;
    let read = |path: &Path| header(path).account;
    let spool = dir.path().join("dave.mbox");
    let path = write(&spool, Some("dave".into()));
    assert_eq!(read(&path).as_deref(), Some("dave"));
    assert_eq!(header(&path).tail, Some(TailCheck { len: 10, hash: 77 }));
    // A tail check of any other length than the writer's is damage.
    let mut bytes = std::fs::read(&path).unwrap();
    for wrong in [0u64, 9, 11] {
        bytes[3808..3816].copy_from_slice(&wrong.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(Journal::open(&path).is_err(), "tail of {wrong} bytes");
    }
    // As an older ironpop wrote it: nothing after the path.
    bytes[3800..4096].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(read(&path), None);
    assert_eq!(header(&path).tail, None);
    let path = write(&spool, Some("d".repeat(265)));
    assert_eq!(read(&path), None, "too long to record");
    // An older journal whose path reached into the account's bytes (this
    // version refuses to write one: `create` would not record it whole).
    let path = write(&spool, Some("dave".into()));
    let mut bytes = std::fs::read(&path).unwrap();
    let len = 3900u64;
    bytes[88..96].copy_from_slice(&len.to_le_bytes());
    bytes[96..4096].fill(b'z');
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(read(&path), None);
    assert_eq!(header(&path).tail, None);
}
