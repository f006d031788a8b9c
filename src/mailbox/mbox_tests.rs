//! Unit tests of the mbox maildrop (open, scan, RETR/TOP, commit, locks).

use super::*;
use crate::account::{Login, Principal};
use crate::config::LockMethod;
use crate::limits;
use crate::mailbox::transfer::encode_all;
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const SPOOL: &[u8] = b"From a@x Mon Jan  1 00:00:00 2024\nMessage-ID: <1@x>\nSubject: one\n\n\
.dot line\nbody\n\nFrom b@x Mon Jan  1 00:00:01 2024\nMessage-ID: <2@x>\n\n>From quoted\n\n\
From c@x Mon Jan  1 00:00:02 2024\nMessage-ID: <1@x>\nSubject: one\n\ndup, no final newline";

fn spool(data: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = crate::test_support::scratch_file("bob", data);
    (dir, path)
}

fn settings(dir: &Path) -> Arc<MboxSettings> {
    Arc::new(MboxSettings {
        state: StateDir::new(dir.join("state")),
        locks: LockPolicy {
            methods: vec![LockMethod::Fcntl, LockMethod::Dotlock],
            timeout: std::time::Duration::from_millis(200),
        },
        policy: crate::mailbox::MailPolicy::default(),
    })
}

/// Opens for a session, with the state directory next to the spool.
fn open(path: &Path) -> Result<MboxMaildrop, MailboxError> {
    MboxMaildrop::open_locked(path, settings(path.parent().unwrap()))
}

fn retr(md: &mut MboxMaildrop, i: usize, top: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    md.write_message(i, top, &mut out).unwrap();
    out
}

#[test]
fn missing_spool_is_an_empty_maildrop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody");
    let md = open(&path).unwrap();
    assert!(md.messages().is_empty());
    let report = Box::new(md).commit(&[]).unwrap();
    assert_eq!(report, CommitReport::default());
    assert!(!path.exists(), "commit must not create the spool");
}

#[test]
fn symlinks_and_directories_are_refused() {
    let (dir, path) = spool(SPOOL);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let e = MboxMaildrop::open(&link).err().unwrap();
    assert!(e.is_permanent(), "{e}");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let e = MboxMaildrop::open(dir.path()).err().unwrap();
    assert!(e.is_permanent(), "{e}");
}

#[test]
fn lists_sizes_equal_to_retr_octets_and_unique_uids() {
    let (_dir, path) = spool(SPOOL);
    let mut md = open(&path).unwrap();
    assert_eq!(md.messages().len(), 3);
    assert_eq!(md.scanned_len(), SPOOL.len() as u64);
    let first = retr(&mut md, 0, None);
    assert_eq!(
        first,
        b"Message-ID: <1@x>\r\nSubject: one\r\n\r\n..dot line\r\nbody\r\n"
    );
    for i in 0..3 {
        let body = retr(&mut md, i, None);
        let unstuffed = body.len() - body.windows(3).filter(|w| *w == b"\n..").count();
        assert_eq!(md.messages()[i].size, unstuffed as u64, "message {}", i + 1);
    }
    assert_eq!(
        retr(&mut md, 1, None),
        b"Message-ID: <2@x>\r\n\r\n>From quoted\r\n"
    );
    assert!(retr(&mut md, 2, None).ends_with(b"dup, no final newline\r\n"));
    let uids: Vec<&str> = md.messages().iter().map(|m| m.uid.as_str()).collect();
    assert_eq!(uids[2], format!("{}-2", uids[0]));
    assert_ne!(uids[0], uids[1]);
}

#[test]
fn top_streams_header_and_n_lines() {
    let (_dir, path) = spool(SPOOL);
    let mut md = open(&path).unwrap();
    assert_eq!(
        retr(&mut md, 0, Some(0)),
        b"Message-ID: <1@x>\r\nSubject: one\r\n\r\n"
    );
    assert_eq!(
        retr(&mut md, 0, Some(1)),
        b"Message-ID: <1@x>\r\nSubject: one\r\n\r\n..dot line\r\n"
    );
}

#[test]
fn large_message_streams_through_small_buffers() {
    let mut data = b"From big\nSubject: big\n\n".to_vec();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\n";
    while data.len() < 3 * limits::SCAN_BLOCK + 17 {
        data.extend_from_slice(line);
    }
    let (_dir, path) = spool(&data);
    let mut md = open(&path).unwrap();
    let body = retr(&mut md, 0, None);
    assert_eq!(body, encode_all(&data[9..], None));
    assert_eq!(md.messages()[0].size, body.len() as u64);
}

#[test]
fn commit_removes_deleted_keeps_appended_and_the_inode() {
    let (_dir, path) = spool(SPOOL);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(&path).unwrap();
    let md = open(&path).unwrap();
    let appended = b"\nFrom new@x Tue Jan  2 00:00:00 2024\nSubject: new\n\nnew mail\n";
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    io::Write::write_all(&mut f, appended).unwrap();
    let sizes: Vec<u64> = md.messages().iter().map(|m| m.size).collect();
    let report = Box::new(md).commit(&[true, false, true]).unwrap();
    assert_eq!(
        report,
        CommitReport {
            deleted: 2,
            deleted_bytes: sizes[0] + sizes[2],
            kept: 1,
            kept_bytes: sizes[1],
        }
    );
    let start = SPOOL.windows(7).position(|w| w == b"From b@").unwrap();
    let end = SPOOL.windows(7).position(|w| w == b"From c@").unwrap();
    let mut expected = SPOOL[start..end].to_vec();
    expected.extend_from_slice(appended);
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (after.ino(), after.mode(), after.uid()),
        (before.ino(), before.mode(), before.uid())
    );
    let md = open(&path).unwrap();
    assert_eq!(md.messages().len(), 2);
}

#[test]
fn commit_without_deletions_does_not_write() {
    let (_dir, path) = spool(SPOOL);
    let md = open(&path).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    // Even a changed spool is left alone when nothing is deleted.
    std::fs::write(&path, b"replaced").unwrap();
    let report = Box::new(md).commit(&[false, false, false]).unwrap();
    assert_eq!((report.deleted, report.kept), (0, 3));
    assert_eq!(std::fs::read(&path).unwrap(), b"replaced");
    assert!(std::fs::metadata(&path).unwrap().modified().unwrap() >= mtime);
}

#[test]
fn commit_refuses_when_the_scanned_part_changed() {
    let (_dir, path) = spool(SPOOL);
    let mut md = open(&path).unwrap();
    let mut changed = SPOOL.to_vec();
    changed[0] = b'X';
    std::fs::write(&path, &changed).unwrap();
    assert!(matches!(
        md.write_message(0, None, &mut Vec::new()),
        Err(TransferError::Mailbox(MailboxError::Changed { .. }))
    ));
    let e = Box::new(md).commit(&[true, false, false]).unwrap_err();
    assert!(matches!(e, MailboxError::Changed { .. }), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), changed);
}

#[test]
fn delete_all_is_a_truncate() {
    let (_dir, path) = spool(SPOOL);
    let md = open(&path).unwrap();
    Box::new(md).commit(&[true, true, true]).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn opener_uses_the_principal_mailbox() {
    let (dir, path) = spool(SPOOL);
    let opener = MboxOpener::with_settings((*settings(dir.path())).clone());
    let p = Principal {
        user: "bob".into(),
        mailbox: path,
    };
    assert_eq!(opener.open(Login::by_path(p)).unwrap().messages().len(), 3);
}

#[test]
fn one_session_per_mailbox_until_the_first_ends() {
    let (_dir, path) = spool(SPOOL);
    let first = open(&path).unwrap();
    let e = open(&path).err().unwrap();
    assert!(e.is_in_use(), "{e}");
    drop(first);
    let second = open(&path).unwrap();
    let e = open(&path).err().unwrap();
    assert!(e.is_in_use(), "{e}");
    // QUIT ends the session too.
    Box::new(second).commit(&[false, false, false]).unwrap();
    drop(open(&path).unwrap());
}

#[test]
fn delivery_locks_are_not_held_during_the_session() {
    let (dir, path) = spool(SPOOL);
    let md = open(&path).unwrap();
    assert!(!crate::mailbox::dotlock::lock_path(&path).exists());
    let mda = File::options().read(true).write(true).open(&path).unwrap();
    assert!(
        crate::mailbox::ofd::try_lock(&mda).unwrap(),
        "fcntl lock left behind"
    );
    // While the MDA holds its lock, QUIT waits, then gives up: [SYS/TEMP].
    let e = Box::new(md).commit(&[true, false, false]).unwrap_err();
    assert!(matches!(e, MailboxError::Locked { .. }), "{e}");
    assert!(!e.is_permanent() && !e.is_in_use());
    assert_eq!(std::fs::read(&path).unwrap(), SPOOL);
    // ... and the failed QUIT still ended the session.
    drop(mda);
    let md = open(&path).unwrap();
    assert_eq!(md.messages().len(), 3);
    assert!(dir.path().join("state").is_dir());
}

#[test]
fn login_waits_for_the_mda_then_times_out() {
    let (_dir, path) = spool(SPOOL);
    let lock = crate::mailbox::dotlock::lock_path(&path);
    std::fs::write(&lock, b"1\n").unwrap();
    let e = open(&path).err().unwrap();
    assert!(matches!(e, MailboxError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("bob.lock"), "{e}");
    std::fs::remove_file(&lock).unwrap();
    // The failed login did not keep the session lock.
    assert_eq!(open(&path).unwrap().messages().len(), 3);
}

#[test]
fn an_interrupted_update_is_completed_before_the_scan() {
    use crate::mailbox::fault::{Fault, FAULT_AFTER};
    let (dir, path) = spool(SPOOL);
    let md = open(&path).unwrap();
    let first_end = crate::mailbox::scan::scan_bytes(SPOOL).messages[0].end as usize;
    // Crash right after the round's write to the spool, before its fsync.
    FAULT_AFTER.with(|c| c.set(Some((10, Fault::Crash))));
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Box::new(md).commit(&[true, false, false])
    }));
    FAULT_AFTER.with(|c| c.set(None));
    assert!(crashed.is_err(), "the update should have crashed");
    let journal = StateDir::new(dir.path().join("state")).journal(&SpoolKey::of(&path));
    assert!(journal.exists());
    assert_ne!(std::fs::read(&path).unwrap(), SPOOL, "partly compacted");
    let md = open(&path).unwrap();
    assert!(!journal.exists());
    assert_eq!(std::fs::read(&path).unwrap(), &SPOOL[first_end..]);
    assert_eq!(md.messages().len(), 2);
}

/// Finding 2/7/8: a journal that does not fit the spool never refuses the
/// login: it is set aside and the spool is served as it is.
#[test]
fn a_journal_that_does_not_fit_is_set_aside_and_the_spool_served() {
    let (dir, path) = spool(SPOOL);
    let state = StateDir::new(dir.path().join("state"));
    state.ensure().unwrap();
    let set_aside = || {
        std::fs::read_dir(state.path())
            .unwrap()
            .filter(|e| {
                let e = e.as_ref().unwrap();
                e.file_name()
                    .to_string_lossy()
                    .contains(".journal.set-aside-")
            })
            .count()
    };
    std::fs::write(state.journal(&SpoolKey::of(&path)), b"whatever").unwrap();
    assert_eq!(open(&path).unwrap().messages().len(), 3);
    assert!(!state.journal(&SpoolKey::of(&path)).exists());
    assert_eq!(set_aside(), 1);
    assert_eq!(std::fs::read(&path).unwrap(), SPOOL);
    std::fs::write(state.journal(&SpoolKey::of(&path)), b"whatever").unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(open(&path).unwrap().messages().len(), 0);
    assert!(!state.journal(&SpoolKey::of(&path)).exists());
    assert_eq!(set_aside(), 2);
}

/// Dots added by dot-stuffing.
fn stuffed(out: &[u8]) -> u64 {
    let first = u64::from(out.starts_with(b"."));
    first + out.windows(3).filter(|w| *w == b"\n..").count() as u64
}

#[test]
fn odd_spools_are_served_and_updated_without_damage() {
    let cases: &[&[u8]] = &[
        b"",
        b"no From_ line at all\njust text\n",
        b"leading text\n\nFrom a\n\nbody\n\nFrom b\n\nno final newline",
        b"From a\r\rCR-only\rlines\r\rFrom b\r\r",
        b"From a\n\nNUL\0in\0body\n\nFrom b\n\n\0\0\0\n",
        b"From a\r\nX: 1\r\n\r\nCRLF stored\r\n\r\nFrom b\r\n\r\nsecond\r\n",
        b"\n\n\nFrom a\n\nafter blank lines\n",
    ];
    for (i, data) in cases.iter().enumerate() {
        let (_dir, path) = spool(data);
        let mut md = open(&path).unwrap();
        let n = md.messages().len();
        let mut bodies = Vec::new();
        for m in 0..n {
            let mut out = Vec::new();
            md.write_message(m, None, &mut out).unwrap();
            assert!(
                out.is_empty() || out.ends_with(b"\r\n"),
                "case {i} message {m}"
            );
            assert_eq!(
                out.len() as u64,
                md.messages()[m].size + stuffed(&out),
                "case {i}"
            );
            bodies.push(out);
        }
        // Delete the first message; the rest must be served unchanged.
        let deleted: Vec<bool> = (0..n).map(|m| m == 0).collect();
        Box::new(md).commit(&deleted).unwrap();
        let mut md = open(&path).unwrap();
        assert_eq!(md.messages().len(), n.saturating_sub(1), "case {i}");
        for m in 0..md.messages().len() {
            let mut out = Vec::new();
            md.write_message(m, None, &mut out).unwrap();
            assert_eq!(out, bodies[m + 1], "case {i} message {m}");
        }
        Box::new(md)
            .commit(&vec![true; n.saturating_sub(1)])
            .unwrap();
        // Bytes outside every message (blank lines before the first
        // From_) are kept, like everything else not deleted.
        assert!(open(&path).unwrap().messages().is_empty(), "case {i}");
        assert!(std::fs::metadata(&path).unwrap().len() <= 3, "case {i}");
    }
}
