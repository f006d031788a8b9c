//! Crash and failure injection at every system call of an update and of its recovery.
//!
//! A simulated crash stops the update dead between two system calls (a
//! panic that skips every cleanup), which is what SIGKILL does to a
//! process: whatever was written is in the page cache, nothing else
//! happens. After each crash, mail may arrive (an MDA appending at the
//! end) before recovery runs; recovery itself is crashed at every point
//! too. The spool must always end up either as before the update or as
//! after it, with every appended byte kept.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use super::fault::{Fault, FAULT_AFTER};
use super::recovery::{self, OpenedBy};
use super::scan::scan_bytes;
use super::state::{SpoolKey, StateDir};
use super::update::{apply, Span};

/// A spool holding `data` in a fresh scratch directory, its state
/// directory, and the spool open for an update.
pub(super) fn spool_in_scratch(
    data: &[u8],
) -> (tempfile::TempDir, std::path::PathBuf, StateDir, File) {
    spool_named_in_scratch(data, "spool")
}

/// [`spool_in_scratch`], the spool's file name being `name`.
pub(super) fn spool_named_in_scratch(
    data: &[u8],
    name: &str,
) -> (tempfile::TempDir, std::path::PathBuf, StateDir, File) {
    let dir = scratch();
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let file = File::options().read(true).write(true).open(&path).unwrap();
    (dir, path, state, file)
}

/// fsync costs nothing on tmpfs, and these tests fsync a lot.
pub(super) fn scratch() -> tempfile::TempDir {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

pub(super) fn spans_of(data: &[u8]) -> Vec<Span> {
    scan_bytes(data).messages.iter().map(Span::from).collect()
}

/// Five messages, the third one spanning several copy blocks.
pub(super) fn spool_bytes() -> Vec<u8> {
    let mut data = Vec::new();
    for i in 0..5 {
        data.extend_from_slice(
            format!("From m{i}@x Mon Jan  1 00:00:0{i} 2024\nSubject: {i}\n\n").as_bytes(),
        );
        let lines = if i == 2 { 3000 } else { 3 };
        for l in 0..lines {
            data.extend_from_slice(
                format!("message {i} line {l} ................................\n").as_bytes(),
            );
        }
        data.push(b'\n');
    }
    data
}

const APPENDED: &[u8] =
    b"From late@x Tue Jan  2 00:00:00 2024\nSubject: late\n\nappended before QUIT\n\n";
const AFTER_CRASH: &[u8] =
    b"From mda@x Tue Jan  2 00:00:09 2024\nSubject: mda\n\ndelivered after the crash\n\n";

pub(super) fn expected(data: &[u8], spans: &[Span], deleted: &[bool]) -> Vec<u8> {
    let mut out = data[..spans[0].from_offset as usize].to_vec();
    for (s, &d) in spans.iter().zip(deleted) {
        if !d {
            out.extend_from_slice(&data[s.from_offset as usize..s.end as usize]);
        }
    }
    out
}

pub(super) fn append(path: &Path, bytes: &[u8]) {
    let mut f = File::options().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// Compares spools without printing megabytes of bytes.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: spool differs: {} bytes, expected {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// Runs `f` with a fault at point `after`; also says whether it fired.
pub(super) fn with_fault<T>(
    after: u32,
    fault: Fault,
    f: impl FnOnce() -> T,
) -> (Result<T, ()>, bool) {
    FAULT_AFTER.with(|c| c.set(Some((after, fault))));
    let r = catch_unwind(AssertUnwindSafe(f)).map_err(drop);
    let fired = FAULT_AFTER.with(|c| c.take()).is_none();
    (r, fired)
}

struct Case {
    deleted: Vec<bool>,
}

fn cases() -> Vec<Case> {
    let d = |v: &[u8]| Case {
        deleted: v.iter().map(|&b| b == 1).collect(),
    };
    vec![
        d(&[1, 0, 0, 0, 0]), // delete-first: everything moves
        d(&[0, 1, 0, 1, 0]),
        d(&[0, 0, 1, 0, 0]), // the big one: a large gap
        d(&[1, 1, 0, 1, 1]),
        d(&[0, 0, 0, 0, 1]), // delete-last: a truncate unless mail was appended
        d(&[1, 1, 1, 1, 1]), // delete-all
    ]
}

/// Runs recovery, crashing it at every point in turn, and returns the
/// spool's final content.
fn recover_through_crashes(state: &StateDir, path: &Path) -> Vec<u8> {
    for j in 0.. {
        let file = File::options().read(true).write(true).open(path).unwrap();
        let (done, _) = with_fault(j, Fault::Crash, || {
            recovery::recover(
                state,
                path,
                &SpoolKey::of(path),
                Some(&file),
                OpenedBy::Daemon,
            )
            .unwrap()
        });
        if done.is_ok() {
            break;
        }
    }
    // Whatever happened, a final recovery finds nothing left to do.
    let file = File::open(path).unwrap();
    assert_eq!(
        recovery::recover(
            state,
            path,
            &SpoolKey::of(path),
            Some(&file),
            OpenedBy::Daemon
        )
        .unwrap(),
        None
    );
    std::fs::read(path).unwrap()
}

#[test]
fn a_crash_at_any_point_loses_nothing() {
    let data = spool_bytes();
    let spans = spans_of(&data);
    assert_eq!(spans.len(), 5);
    for (ci, case) in cases().iter().enumerate() {
        for appended_before in [false, true] {
            for mda_after_crash in [false, true] {
                let mut before = data.clone();
                let mut after = expected(&data, &spans, &case.deleted);
                if appended_before {
                    before.extend_from_slice(APPENDED);
                    after.extend_from_slice(APPENDED);
                }
                let mut crashes = 0;
                for k in 0.. {
                    let (_dir, path, state, file) = spool_in_scratch(&before);
                    let ino = file.metadata().unwrap().ino();
                    let (r, _) = with_fault(k, Fault::Crash, || {
                        apply(&state, &file, &path, None, &spans, &case.deleted)
                    });
                    drop(file);
                    let what = format!(
                        "case {ci} appended {appended_before} mda {mda_after_crash} crash after {k}"
                    );
                    if let Ok(r) = r {
                        assert_eq!(r.unwrap(), after.len() as u64, "{what}");
                        assert_same(&std::fs::read(&path).unwrap(), &after, &what);
                        assert!(!state.journal(&SpoolKey::of(&path)).exists(), "{what}");
                        break;
                    }
                    crashes += 1;
                    let (mut undone, mut done) = (before.clone(), after.clone());
                    if mda_after_crash {
                        append(&path, AFTER_CRASH);
                        undone.extend_from_slice(AFTER_CRASH);
                        done.extend_from_slice(AFTER_CRASH);
                    }
                    let got = recover_through_crashes(&state, &path);
                    assert!(
                        got == undone || got == done,
                        "{what}: spool corrupted: {} bytes, undone {}, done {}",
                        got.len(),
                        undone.len(),
                        done.len()
                    );
                    assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino, "{what}");
                    assert!(!state.journal(&SpoolKey::of(&path)).exists(), "{what}");
                    assert!(!state.journal_tmp(&SpoolKey::of(&path)).exists(), "{what}");
                }
                assert!(crashes > 0, "case {ci}: no fault point was reached");
            }
        }
    }
}

#[test]
fn a_failed_system_call_leaves_the_spool_as_before() {
    let data = spool_bytes();
    let spans = spans_of(&data);
    for errno in [
        nix::libc::ENOSPC,
        nix::libc::EDQUOT,
        nix::libc::EFBIG,
        nix::libc::EIO,
    ] {
        for (ci, case) in cases().iter().enumerate() {
            let mut before = data.clone();
            before.extend_from_slice(APPENDED);
            let mut after = expected(&data, &spans, &case.deleted);
            after.extend_from_slice(APPENDED);
            for k in 0.. {
                let (_dir, path, state, file) = spool_in_scratch(&before);
                let (r, fired) = with_fault(k, Fault::Fail(errno), || {
                    apply(&state, &file, &path, None, &spans, &case.deleted)
                });
                let r = r.expect("no crash injected");
                let what = format!("errno {errno} case {ci} fault after {k}");
                match r {
                    Ok(len) => {
                        assert_eq!(len, after.len() as u64, "{what}");
                        assert_same(&std::fs::read(&path).unwrap(), &after, &what);
                    }
                    Err(e) => {
                        assert!(!e.is_permanent() && !e.is_in_use(), "{what}: {e}");
                        assert!(e.to_string().contains("spool"), "{what}: {e}");
                        // The session's reply says whether the next login
                        // completes the deletions: exactly when a journal stays.
                        assert_eq!(
                            e.update_pending(),
                            state.journal(&SpoolKey::of(&path)).exists(),
                            "{what}: {e}"
                        );
                        if state.journal(&SpoolKey::of(&path)).exists() {
                            // Only when the final sync failed: the outcome is
                            // unknown until the next login recovers.
                            let got = recover_through_crashes(&state, &path);
                            assert!(got == before || got == after, "{what}");
                        } else {
                            let what = format!("{what}: {e}");
                            assert_same(&std::fs::read(&path).unwrap(), &before, &what);
                        }
                    }
                }
                assert!(!state.journal_tmp(&SpoolKey::of(&path)).exists(), "{what}");
                if !fired {
                    assert!(k > 0, "{what}: no fault point was reached");
                    break;
                }
            }
        }
    }
}

/// A spool path longer than the journal's path field (3704 bytes) cannot
/// be recorded whole, and a cut one names another file (after a crash the
/// journal would be set aside, the spool left half compacted): the update
/// is refused before anything changes.
#[test]
fn a_spool_path_too_long_for_the_journal_refuses_the_update() {
    let dir = scratch();
    let mut long = dir.path().to_path_buf();
    while long.as_os_str().len() <= 3704 {
        long.push("d".repeat(250));
    }
    std::fs::create_dir_all(&long).unwrap();
    let path = long.join("spool");
    let before = spool_bytes();
    std::fs::write(&path, &before).unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let file = File::options().read(true).write(true).open(&path).unwrap();
    let deleted = [true, false, false, true, false];
    let e = apply(&state, &file, &path, None, &spans_of(&before), &deleted).unwrap_err();
    assert!(!e.is_permanent() && !e.update_pending(), "{e}");
    assert!(
        e.to_string()
            .contains("longer than an update journal can record"),
        "{e}"
    );
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the spool is unchanged"
    );
    assert!(!state.journal(&SpoolKey::of(&path)).exists());
    assert!(!state.journal_tmp(&SpoolKey::of(&path)).exists());
}
