//! Recovery against what others do to a spool after a crash (findings 2, 6, 7, 8 of issue 9): foreign rewrites, re-created, replaced and removed spools, power loss.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fault::{Fault, DURABLE};
use super::journal::{Journal, Progress};
use super::recovery::{recover, OpenedBy, Recovered};
use super::state::{SpoolKey, StateDir};
use super::update::apply;
use super::update_crash_tests::{
    append, expected, spans_of, spool_bytes, spool_in_scratch, spool_named_in_scratch, with_fault,
};
use crate::limits;

/// A spool whose update (delete messages 1 and 4) was killed in the middle
/// of a round that had already written the spool: (dir, spool, state,
/// before, after).
pub(super) fn crashed_mid_round() -> (tempfile::TempDir, PathBuf, StateDir, Vec<u8>, Vec<u8>) {
    crashed_mid_round_named("spool")
}

/// [`crashed_mid_round`], the spool's file name being `name`.
fn crashed_mid_round_named(name: &str) -> (tempfile::TempDir, PathBuf, StateDir, Vec<u8>, Vec<u8>) {
    let before = spool_bytes();
    let spans = spans_of(&before);
    let deleted = [true, false, false, true, false];
    let after = expected(&before, &spans, &deleted);
    for k in 0.. {
        let (dir, path, state, file) = spool_named_in_scratch(&before, name);
        let (r, _) = with_fault(k, Fault::Crash, || {
            apply(&state, &file, &path, None, &spans, &deleted)
        });
        assert!(r.is_err(), "no crash point inside a round");
        let now = std::fs::read(&path).unwrap();
        if state.journal(&SpoolKey::of(&path)).exists()
            && now != before
            && now.len() == before.len()
        {
            return (dir, path, state, before, after);
        }
    }
    unreachable!()
}

fn recover_now(state: &StateDir, path: &Path) -> Option<Recovered> {
    let file = File::options().read(true).write(true).open(path).ok();
    recover(
        state,
        path,
        &SpoolKey::of(path),
        file.as_ref(),
        OpenedBy::Daemon,
    )
    .expect("recovery never refuses")
}

fn assert_set_aside(r: Option<Recovered>, state: &StateDir, path: &Path, what: &str) {
    match r {
        Some(Recovered::SetAside { aside, reason }) => {
            assert!(aside.exists(), "{what}: {reason}");
            assert!(!state.journal(&SpoolKey::of(path)).exists(), "{what}");
            assert!(Recovered::SetAside { aside, reason }
                .describe(path)
                .contains("NOT completed"));
        }
        other => panic!("{what}: expected the journal set aside, got {other:?}"),
    }
}

#[test]
fn a_foreign_rewrite_after_a_crash_is_left_as_it_is() {
    let shorter = |b: &[u8]| b[..b.len() / 2].to_vec();
    let longer = |_: &[u8]| {
        // One 400 KB message written over the whole file, in place.
        let mut m = b"From big@x Mon Jan  1 00:00:00 2024\nSubject: big\n\n".to_vec();
        m.resize(400_000, b'x');
        m
    };
    let same_length = |b: &[u8]| {
        let mut m = b.to_vec();
        let mid = m.len() / 2;
        m[mid..mid + 6].copy_from_slice(b"EDITED");
        m
    };
    type Rewrite<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;
    let rewrites: [(&str, Rewrite); 3] = [
        ("shorter", &shorter),
        ("longer", &longer),
        ("same length", &same_length),
    ];
    for (what, rewrite) in rewrites {
        let (_dir, path, state, _, _) = crashed_mid_round();
        let ino = std::fs::metadata(&path).unwrap().ino();
        let theirs = rewrite(&std::fs::read(&path).unwrap());
        // In place, as `cat > spool` or a local reader's rewrite does.
        let f = File::options()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &theirs, 0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        assert_set_aside(recover_now(&state, &path), &state, &path, what);
        assert_eq!(std::fs::read(&path).unwrap(), theirs, "{what}: their bytes");
        assert_eq!(recover_now(&state, &path), None, "{what}: nothing left");
    }
    // Mail appended by an MDA is no foreign rewrite: the update completes
    // and the new mail is kept.
    let (_dir, path, state, _, after) = crashed_mid_round();
    let mail = b"From mda@x Tue Jan  2 00:00:09 2024\nSubject: mda\n\nnew\n\n";
    append(&path, mail);
    assert!(matches!(
        recover_now(&state, &path),
        Some(Recovered::Completed { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), [&after[..], mail].concat());
}

#[test]
fn a_spool_recreated_replaced_or_removed_after_a_crash_is_never_written() {
    let new_mail = b"From new@x Tue Jan  2 00:00:09 2024\nSubject: new\n\nnew\n\n".to_vec();
    for what in ["re-created", "replaced by rename", "removed"] {
        let (dir, path, state, _, _) = crashed_mid_round();
        match what {
            "re-created" => {
                // A reader removes the "empty" mailbox, an MDA creates it
                // anew (tmpfs and ext4 reuse the freed inode number).
                std::fs::remove_file(&path).unwrap();
                std::fs::write(&path, &new_mail).unwrap();
            }
            "replaced by rename" => {
                let tmp = dir.path().join("restored");
                std::fs::write(&tmp, &new_mail).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            _ => std::fs::remove_file(&path).unwrap(),
        }
        assert_set_aside(recover_now(&state, &path), &state, &path, what);
        if what == "removed" {
            assert!(!path.exists(), "{what}: created by recovery");
        } else {
            assert_eq!(std::fs::read(&path).unwrap(), new_mail, "{what}");
        }
    }
}

/// Finding 6: power lost at any step of the update — every write that was
/// not yet made durable is lost (the spool back to its last fsync, the
/// journal too, or gone if it never was) — then recovery: the spool is as
/// before or as after, never refused, never anything else.
#[test]
fn power_loss_at_every_step_leaves_the_spool_before_or_after() {
    let before = spool_bytes();
    let spans = spans_of(&before);
    let deleted = [false, true, false, true, false];
    let after = expected(&before, &spans, &deleted);
    let (mut outcomes_before, mut outcomes_after) = (0, 0);
    for k in 0.. {
        let (_dir, path, state, file) = spool_in_scratch(&before);
        DURABLE.with(|d| *d.borrow_mut() = Some(Default::default()));
        let (r, fired) = with_fault(k, Fault::Crash, || {
            apply(&state, &file, &path, None, &spans, &deleted)
        });
        let durable = DURABLE.with(|d| d.borrow_mut().take()).unwrap();
        if !fired {
            r.unwrap().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), after);
            break;
        }
        // The power cut: only what was synced survives.
        let spool_ino = file.metadata().unwrap().ino();
        std::fs::write(&path, durable.get(&spool_ino).unwrap_or(&before)).unwrap();
        let _ = std::fs::remove_file(state.journal_tmp(&SpoolKey::of(&path)));
        if let Ok(meta) = std::fs::metadata(state.journal(&SpoolKey::of(&path))) {
            match durable.get(&meta.ino()) {
                Some(synced) => {
                    std::fs::write(state.journal(&SpoolKey::of(&path)), synced).unwrap()
                }
                None => std::fs::remove_file(state.journal(&SpoolKey::of(&path))).unwrap(),
            }
        }
        let r = recover_now(&state, &path);
        assert!(
            !matches!(r, Some(Recovered::SetAside { .. })),
            "crash {k}: {r:?}"
        );
        let now = std::fs::read(&path).unwrap();
        if now == before {
            outcomes_before += 1;
        } else {
            assert!(now == after, "crash {k}: neither before nor after ({r:?})");
            outcomes_after += 1;
        }
    }
    assert!(outcomes_before > 0 && outcomes_after > 0);
}

/// A journal that cannot be read now (EMFILE, EIO; here: EISDIR) is not
/// set aside: it may be a valid journal whose update must still finish.
/// The login fails temporarily and the journal stays.
#[test]
fn a_journal_that_cannot_be_read_now_stays() {
    let (_dir, path, state, _, _) = crashed_mid_round();
    let journal = state.journal(&SpoolKey::of(&path));
    let real = journal.with_extension("real");
    std::fs::rename(&journal, &real).unwrap();
    std::fs::create_dir(&journal).unwrap();
    let file = File::options().read(true).write(true).open(&path).unwrap();
    let e = recover(
        &state,
        &path,
        &SpoolKey::of(&path),
        Some(&file),
        OpenedBy::Daemon,
    )
    .unwrap_err();
    assert!(!e.is_permanent(), "{e}");
    assert!(journal.is_dir(), "set aside: {e}");
    std::fs::remove_dir(&journal).unwrap();
    std::fs::rename(&real, &journal).unwrap();
    assert!(matches!(
        recover(
            &state,
            &path,
            &SpoolKey::of(&path),
            Some(&file),
            OpenedBy::Daemon
        )
        .unwrap(),
        Some(Recovered::Completed { .. })
    ));
}

/// Writes the journal whoever owns `state_dir` can make without reading
/// the spool at `path` (`len` bytes), knowing only its inode and length: a
/// plan that deletes all of it and so moves nothing (no round hash), with
/// a tail check of the writer's length whose hash is `tail` (guessed), or
/// none, for `account`.
fn forge(state: &StateDir, path: &Path, len: u64, account: Option<&str>, tail: Option<u128>) {
    use super::journal::{Header, Journal, TailCheck};
    use super::plan::Plan;
    let header = Header {
        ino: std::fs::metadata(path).unwrap().ino(),
        plan: Plan::new(len, vec![(0, len)], 1 << 16).unwrap(),
        marker: b"forged".to_vec(),
        spool: path.to_path_buf(),
        account: account.map(str::to_owned),
        tail: tail.map(|hash| TailCheck {
            len: (len - 6).min(crate::limits::JOURNAL_TAIL_CHECK),
            hash,
        }),
        round_hashes: Vec::new(),
        deleted_hashes: None,
    };
    Journal::create(state, header, false).unwrap();
}

/// A journal written by whoever owns `state_dir` without reading the spool
/// (a compromised daemon that knows its inode and length): a plan that
/// moves nothing, so no round hash is needed, and would truncate the
/// spool to nothing. The tail check stops it; the same journal with the
/// right tail hash, as only a reader of the spool could make it, would be
/// applied.
#[test]
fn a_journal_made_without_reading_the_spool_is_set_aside() {
    let before = spool_bytes();
    let len = before.len() as u64;
    let (_dir, path, state, _file) = spool_in_scratch(&before);
    let tail = (before.len() - 6).min(crate::limits::JOURNAL_TAIL_CHECK as usize);
    // Knowing everything but the bytes.
    for guess in [0, xxhash_rust::xxh3::xxh3_128(&vec![b'\n'; tail])] {
        forge(&state, &path, len, Some("dave"), Some(guess));
        let r = recover_now(&state, &path);
        assert_set_aside(r, &state, &path, "forged");
        assert_eq!(std::fs::read(&path).unwrap(), before, "spool untouched");
    }
    // A journal that names its account always has a tail check.
    forge(&state, &path, len, Some("dave"), None);
    let r = recover_now(&state, &path);
    assert_set_aside(r, &state, &path, "an account without a tail check");
    assert_eq!(std::fs::read(&path).unwrap(), before, "spool untouched");
    let right = xxhash_rust::xxh3::xxh3_128(&before[before.len() - tail..]);
    forge(&state, &path, len, Some("dave"), Some(right));
    let r = recover_now(&state, &path);
    assert!(matches!(r, Some(Recovered::Completed { .. })), "{r:?}");
    assert!(
        std::fs::read(&path).unwrap().is_empty(),
        "what the plan said"
    );
}

/// A journal without a tail check (the format before it) is applied only
/// to a spool the daemon opened itself, never to one the privileged
/// helper opened.
#[test]
fn a_journal_without_a_tail_check_is_never_applied_to_a_spool_the_helper_opened() {
    let before = spool_bytes();
    let len = before.len() as u64;
    let (_dir, path, state, file) = spool_in_scratch(&before);
    let recover_by = |by| {
        forge(&state, &path, len, None, None);
        recover(&state, &path, &SpoolKey::of(&path), Some(&file), by)
    };
    let r = recover_by(OpenedBy::Helper);
    assert_set_aside(r.unwrap(), &state, &path, "helper");
    assert!(std::fs::read(&path).unwrap() == before, "spool untouched");
    let r = recover_by(OpenedBy::Daemon);
    assert!(matches!(r, Ok(Some(Recovered::Completed { .. }))), "{r:?}");
    assert!(std::fs::read(&path).unwrap().is_empty(), "the older proof");
}

/// Startup recovery reads a journal once: a journal renamed into its place
/// after the check that lets the privileged helper open the spool (here,
/// while the helper opens it) is never what recovery applies. The swapped-in
/// journal, with no tail check, would truncate the spool to nothing.
#[test]
fn a_journal_swapped_after_the_startup_check_is_never_applied() {
    use super::startup::recover_all;
    use crate::account::{AuthOutcome, Login, Principal, Spool};
    let before = spool_bytes();
    let len = before.len() as u64;
    let (dir, path, state, _file) = spool_in_scratch(&before);
    let jpath = state.journal(&SpoolKey::of(&path));
    forge(&state, &path, len, None, None);
    let swapped = dir.path().join("swapped-in");
    std::fs::rename(&jpath, &swapped).unwrap();
    // What the check sees: the account and a tail check (a wrong guess).
    forge(&state, &path, len, Some("bob"), Some(0));
    let asked = std::cell::Cell::new(false);
    let helper = |user: &str, spool: &Path| {
        asked.set(true);
        std::fs::rename(&swapped, &jpath).unwrap();
        let file = File::options().read(true).write(true).open(spool).unwrap();
        AuthOutcome::Accepted(Login {
            principal: Principal {
                user: user.into(),
                mailbox: spool.into(),
            },
            spool: Spool::Opened(Some(file)),
        })
    };
    recover_all(&settings_in(dir.path()), &[], Some(&helper));
    assert!(asked.get(), "the helper was not asked: no swap happened");
    assert!(std::fs::read(&path).unwrap() == before, "spool untouched");
    // The checked journal's verdict (its tail check fails) sets aside
    // whatever has its name: the swapped-in one, unapplied.
    assert!(!swapped.exists() && !jpath.exists());
}

/// Startup recovery's settings, `state_dir` being `dir/state`.
fn settings_in(dir: &Path) -> super::mbox::MboxSettings {
    super::mbox::MboxSettings {
        state: StateDir::new(dir.join("state")),
        locks: super::delivery_lock::LockPolicy {
            methods: vec![crate::config::LockMethod::Fcntl],
            timeout: std::time::Duration::from_millis(200),
        },
        policy: super::MailPolicy::default(),
    }
}

/// A `.journal.new` may be a journal another process (`-i`) is writing
/// under its session lock: startup recovery, which holds no lock for it,
/// leaves it; the spool's next login removes it under the lock.
#[test]
fn startup_recovery_leaves_a_journal_being_written() {
    let before = spool_bytes();
    let (dir, path, state, _file) = spool_in_scratch(&before);
    state.ensure().unwrap();
    let tmp = state.journal_tmp(&SpoolKey::of(&path));
    std::fs::write(&tmp, b"being written").unwrap();
    super::startup::recover_all(&settings_in(dir.path()), &[], None);
    assert_eq!(std::fs::read(&tmp).unwrap(), b"being written");
    assert_eq!(recover_now(&state, &path), None);
    assert!(!tmp.exists(), "the login removes it");
}

/// A spool whose path is too long for a readable state file name has a
/// hashed journal name, which does not say the spool: startup recovery
/// learns it from the journal and completes the update all the same.
#[test]
fn startup_recovery_completes_a_journal_with_a_hashed_name() {
    let (dir, path, state, _, after) = crashed_mid_round_named(&"s".repeat(220));
    let journal = state.journal(&SpoolKey::of(&path));
    let name = journal.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("md5-"), "{name}");
    super::startup::recover_all(&settings_in(dir.path()), &[], None);
    assert!(std::fs::read(&path).unwrap() == after, "completed");
    assert!(!journal.exists());
}

/// Every crash of the update deleting `deleted` from [`spool_bytes`]
/// whose journal then stands at `at`: (dir, spool, state, before, after).
type Crashed = (tempfile::TempDir, PathBuf, StateDir, Vec<u8>, Vec<u8>);
fn crashes_at(deleted: &[bool], at: Progress) -> Vec<Crashed> {
    let before = spool_bytes();
    let spans = spans_of(&before);
    let after = expected(&before, &spans, deleted);
    let mut out = Vec::new();
    for k in 0.. {
        let (dir, path, state, file) = spool_in_scratch(&before);
        let (_, fired) = with_fault(k, Fault::Crash, || {
            apply(&state, &file, &path, None, &spans, deleted)
        });
        if !fired {
            break;
        }
        if let Ok(Some(j)) = Journal::open(&state.journal(&SpoolKey::of(&path))) {
            if j.progress == at {
                out.push((dir, path, state, before.clone(), after.clone()));
            }
        }
    }
    assert!(!out.is_empty(), "no crash leaves the journal at {at:?}");
    out
}

/// A same-length change in place of bytes past the write frontier
/// (deleted ones no round has overwritten yet, or kept ones a finished
/// round copied), outside the tail check, sets the journal aside and
/// leaves the spool as the other program left it; unchanged, the update
/// completes.
fn edit_past_the_write_frontier_is_noticed(deleted: &[bool], at: Progress, offset: usize) {
    for (_dir, path, state, before, _) in crashes_at(deleted, at) {
        let n = before.len();
        assert!(offset + 6 < n - limits::JOURNAL_TAIL_CHECK as usize);
        let mut theirs = std::fs::read(&path).unwrap();
        theirs[offset..offset + 6].copy_from_slice(b"EDITED");
        let f = File::options().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &theirs, 0).unwrap();
        assert_set_aside(recover_now(&state, &path), &state, &path, "edited");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            theirs,
            "their bytes, all of them"
        );
    }
    for (_dir, path, state, _, after) in crashes_at(deleted, at) {
        assert!(matches!(
            recover_now(&state, &path),
            Some(Recovered::Completed { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), after);
    }
}

#[test]
fn an_edit_of_deleted_bytes_past_the_write_frontier_is_never_removed() {
    // Before round 0: message 0 (deleted) is past the frontier, far
    // before the tail check.
    let deleted = [true, false, false, true, false];
    edit_past_the_write_frontier_is_noticed(&deleted, Progress::Between { round: 0 }, 40);
    // After the last round (with the marker at W or not yet): message 2
    // (deleted) is partly overwritten; its part past W and the marker is
    // checked.
    let deleted = [true, false, true, false, false];
    edit_past_the_write_frontier_is_noticed(&deleted, Progress::Between { round: 1 }, 2000);
}

#[test]
fn an_edit_of_kept_bytes_a_finished_round_copied_is_never_overwritten() {
    // Message 0 deleted: round 0 copied the first 64 KiB of what follows
    // down by its length. The kept bytes just past round 0's destination
    // are still at their old place, copied but not yet overwritten (round
    // 1 writes there next), far before the tail check.
    let deleted = [true, false, false, false, false];
    let round = limits::JOURNAL_ROUND as usize;
    edit_past_the_write_frontier_is_noticed(&deleted, Progress::Between { round: 1 }, round + 10);
}
