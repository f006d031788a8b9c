//! The spool index as sessions use it: reuse, every kind of doubt, RETR checks, EXPIRE, random histories.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Expire;
use crate::config::LockMethod;
use crate::mailbox::delivery_lock::LockPolicy;
use crate::mailbox::indexed_scan::ScanKind;
use crate::mailbox::mbox::{MboxMaildrop, MboxSettings};
use crate::mailbox::state::{SpoolKey, StateDir};
use crate::mailbox::{MailPolicy, Maildrop};

fn message(n: usize, body: &str) -> String {
    format!(
        "From sender{n}@example.org Mon Jan  1 00:00:00 2024\nMessage-ID: <{n}@x>\n\
         Subject: message {n}\n\n{body}\n\n"
    )
}

fn spool_of(messages: usize) -> String {
    (0..messages)
        .map(|n| message(n, &format!("body {n}\nline two")))
        .collect()
}

fn settings(dir: &Path, expire: Expire) -> Arc<MboxSettings> {
    Arc::new(MboxSettings {
        state: StateDir::new(dir.join("state")),
        locks: LockPolicy {
            methods: vec![LockMethod::Fcntl],
            timeout: std::time::Duration::from_millis(200),
        },
        policy: MailPolicy {
            expire,
            login_delay: 0,
        },
    })
}

fn setup(data: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = crate::test_support::scratch_file("bob", data);
    (dir, path)
}

fn session(path: &Path) -> MboxMaildrop {
    MboxMaildrop::open_locked(path, settings(path.parent().unwrap(), Expire::Never)).unwrap()
}

fn retr_all(md: &mut MboxMaildrop) -> Vec<Vec<u8>> {
    (0..md.messages().len())
        .map(|i| {
            let mut out = Vec::new();
            md.check_message(i).unwrap();
            md.write_message(i, None, &mut out).unwrap();
            out
        })
        .collect()
}

/// A session sees exactly what a fresh scan of the file sees; returns how
/// it found the messages.
fn agrees_with_fresh_scan(path: &Path) -> ScanKind {
    let mut fresh = MboxMaildrop::open(path).unwrap();
    let mut md = session(path);
    assert_eq!(md.messages(), fresh.messages(), "LIST/UIDL");
    assert_eq!(md.scanned_len(), fresh.scanned_len());
    assert_eq!(retr_all(&mut md), retr_all(&mut fresh), "RETR");
    md.scan_kind().unwrap()
}

fn append(path: &Path, data: &str) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(data.as_bytes()).unwrap();
}

/// Overwrites bytes in place, keeping the file's size and inode.
fn overwrite(path: &Path, at: u64, data: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, at).unwrap();
}

#[test]
fn later_sessions_reuse_the_index_and_scan_only_new_mail() {
    let (_dir, path) = setup(&spool_of(5));
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Full);
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Unchanged);
    append(&path, &message(5, "new"));
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Tail);
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Unchanged);
    // Appended text that is not a new message continues the last one.
    append(&path, "more of message 5, no From line\n");
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Tail);
}

#[test]
fn truncation_replacement_and_rewrites_mean_a_full_scan() {
    let data = spool_of(6);
    let (dir, path) = setup(&data);
    agrees_with_fresh_scan(&path);
    // Truncated in the middle of the last message.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(data.len() as u64 - 10).unwrap();
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Full);
    // Replaced by another file (another inode), even of the same length.
    let other = dir.path().join("other");
    std::fs::write(&other, spool_of(6).replace("body", "BODY")).unwrap();
    std::fs::rename(&other, &path).unwrap();
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Full);
    // A local reader rewrites message 3 in place, same size: new headers
    // (so a new UID) and a new body.
    agrees_with_fresh_scan(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("Message-ID: <3@x>").unwrap();
    overwrite(&path, at as u64, b"Message-ID: <9@x>");
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Full);
    // A rewrite that shifts everything after it, plus new mail so that
    // the file is longer than the index.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("Subject: message 1", "Subject: message one", 1),
    )
    .unwrap();
    append(&path, &message(7, "new"));
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Full);
}

/// A same-length in-place edit of a spool that did not grow is found by
/// its stat, not by luck: with 1000 messages, 66 samples would miss a
/// message in the middle most of the time.
#[test]
fn a_same_length_edit_anywhere_means_a_full_scan() {
    let (_dir, path) = setup(&spool_of(1000));
    agrees_with_fresh_scan(&path);
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Unchanged);
    for n in [500, 271, 808] {
        // A change in the same clock tick as the last one can keep mtime
        // and ctime (the documented hole): let the tick pass.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text.find(&format!("Message-ID: <{n}@x>")).unwrap();
        overwrite(&path, at as u64 + 13, b"X");
        assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Full, "message {n}");
        assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Unchanged);
    }
}

#[test]
fn damaged_or_foreign_indexes_are_not_used() {
    let (dir, path) = setup(&spool_of(4));
    agrees_with_fresh_scan(&path);
    let state = StateDir::new(dir.path().join("state"));
    let index = state.index(&SpoolKey::of(&path));
    let good = std::fs::read(&index).unwrap();
    for at in [0, 20, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        std::fs::write(&index, &bad).unwrap();
        assert_eq!(
            agrees_with_fresh_scan(&path),
            ScanKind::Full,
            "flip at {at}"
        );
    }
    // Another spool's index, copied under this spool's name.
    let alice = dir.path().join("alice");
    std::fs::write(&alice, spool_of(4)).unwrap();
    agrees_with_fresh_scan(&alice);
    std::fs::copy(state.index(&SpoolKey::of(&alice)), &index).unwrap();
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Full);
}

#[test]
fn retr_refuses_a_message_that_moved_and_drops_the_index() {
    let (dir, path) = setup(&spool_of(3));
    agrees_with_fresh_scan(&path);
    let mut md = session(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    // Someone removes two bytes from message 1 behind our back.
    std::fs::write(&path, text.replacen("body 1", "bod1", 1)).unwrap();
    md.check_message(0).unwrap();
    assert!(md.check_message(1).is_err(), "message 2 moved");
    assert!(md.check_message(2).is_err(), "message 3 moved");
    drop(md);
    let state = StateDir::new(dir.path().join("state"));
    assert!(
        !state.index(&SpoolKey::of(&path)).exists(),
        "the doubted index is gone"
    );
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Full);
}

#[test]
fn the_index_after_quit_describes_the_compacted_spool() {
    let (_dir, path) = setup(&spool_of(6));
    agrees_with_fresh_scan(&path);
    let md = session(&path);
    append(&path, &message(6, "arrived during the session"));
    Box::new(md)
        .commit(&[false, true, false, true, false, true])
        .unwrap();
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Tail);
    assert_eq!(MboxMaildrop::open(&path).unwrap().messages().len(), 4);
}

#[test]
fn expire_zero_deletes_what_was_retrieved_in_the_session() {
    let (dir, path) = setup(&spool_of(3));
    let open = |expire| MboxMaildrop::open_locked(&path, settings(dir.path(), expire)).unwrap();
    let mut md = open(Expire::Days(0));
    md.write_message(1, None, &mut Vec::new()).unwrap();
    md.write_message(2, Some(0), &mut Vec::new()).unwrap();
    let report = Box::new(md).commit(&[false; 3]).unwrap();
    assert_eq!(
        (report.deleted, report.kept),
        (1, 2),
        "RETR counts, TOP does not"
    );
    // EXPIRE 30: retrieved now, kept; the retrieval time is in the index.
    let mut md = open(Expire::Days(30));
    md.write_message(0, None, &mut Vec::new()).unwrap();
    assert_eq!(Box::new(md).commit(&[false; 2]).unwrap().deleted, 0);
    let md = open(Expire::Days(30));
    assert_eq!(md.scan_kind(), Some(ScanKind::Unchanged));
    assert!(md.contents.retrieved[0] > 0 && md.contents.retrieved[1] == 0);
    // Without QUIT nothing is recorded.
    drop(md);
    let mut md = open(Expire::Days(0));
    md.write_message(1, None, &mut Vec::new()).unwrap();
    drop(md);
    let md = open(Expire::Days(0));
    assert_eq!(md.contents.retrieved[1], 0);
    // The message retrieved at the EXPIRE 30 session goes at once with EXPIRE 0.
    assert_eq!(Box::new(md).commit(&[false; 2]).unwrap().deleted, 1);
}

proptest::proptest! {
    #![proptest_config(crate::test_support::proptest_cases(24))]

    /// Random histories: deliveries, sessions that delete and QUIT or just
    /// end, a byte inserted anywhere by another program, truncation, a
    /// crashed session's half-written index; after every step a session
    /// agrees with a fresh scan (LIST, UIDL, RETR of every message).
    #[test]
    fn random_histories_agree_with_fresh_scans(
        steps in proptest::collection::vec((0u8..6, 0u32..100_000), 1..40),
    ) {
        let (dir, path) = setup(&spool_of(3));
        let mut next = 100;
        for (op, arg) in steps {
            let arg = u64::from(arg);
            match op {
                0 => {
                    next += 1;
                    append(&path, &message(next, &"x".repeat((arg % 300) as usize)));
                }
                1 => {
                    let md = session(&path);
                    let deleted: Vec<bool> =
                        (0..md.messages().len()).map(|i| (arg >> (i % 16)) & 3 == 0).collect();
                    Box::new(md).commit(&deleted).unwrap();
                }
                2 => drop(session(&path)),
                3 => {
                    let mut data = std::fs::read(&path).unwrap();
                    let at = (arg % (data.len() as u64 + 1)) as usize;
                    data.insert(at, b'#');
                    std::fs::write(&path, data).unwrap();
                }
                4 => {
                    let len = std::fs::metadata(&path).unwrap().len();
                    let f = OpenOptions::new().write(true).open(&path).unwrap();
                    f.set_len(len - arg % (len / 4 + 1)).unwrap();
                }
                _ => {
                    let state = StateDir::new(dir.path().join("state"));
                    state.ensure().unwrap();
                    std::fs::write(state.index_tmp(&SpoolKey::of(&path)), b"IRONPOPX\x02").unwrap();
                }
            }
            agrees_with_fresh_scan(&path);
        }
    }
}

#[test]
fn a_refused_update_drops_the_index() {
    let (dir, path) = setup(&spool_of(4));
    agrees_with_fresh_scan(&path);
    let md = session(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("body 0", "b0", 1)).unwrap();
    assert!(Box::new(md).commit(&[false, true, false, false]).is_err());
    let state = StateDir::new(dir.path().join("state"));
    assert!(
        !state.index(&SpoolKey::of(&path)).exists(),
        "no index of a spool that changed"
    );
    assert_eq!(agrees_with_fresh_scan(&path), ScanKind::Full);
}
