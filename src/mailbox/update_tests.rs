//! Unit tests of verify and apply (every subset of deletions, truncate, nothing to do).

use super::*;
use crate::mailbox::scan::scan_bytes;
use crate::mailbox::state::SpoolKey;
use std::io::Write;

const SPOOL: &[u8] = b"leading text\n\nFrom a\nA: 1\n\none\n\nFrom b\nB: 2\n\n\
two\n\nFrom c\nC: 3\n\nthree\n\nFrom d\nD: 4\n\nfour, no final newline";

fn spans_of(data: &[u8]) -> Vec<Span> {
    scan_bytes(data).messages.iter().map(Span::from).collect()
}

fn spool_file(data: &[u8]) -> (tempfile::NamedTempFile, File) {
    let mut t = tempfile::NamedTempFile::new().unwrap();
    t.write_all(data).unwrap();
    let f = File::options()
        .read(true)
        .write(true)
        .open(t.path())
        .unwrap();
    (t, f)
}

#[test]
fn every_subset_of_deletions_keeps_exactly_the_rest() {
    let appended = b"\nFrom late\nL: 1\n\nappended after the scan\n";
    let spans = spans_of(SPOOL);
    assert_eq!(spans.len(), 5);
    for mask in 0u32..(1 << spans.len()) {
        let deleted: Vec<bool> = (0..spans.len()).map(|i| mask & (1 << i) != 0).collect();
        let mut expected = Vec::new();
        for (s, &d) in spans.iter().zip(&deleted) {
            if !d {
                expected.extend_from_slice(&SPOOL[s.from_offset as usize..s.end as usize]);
            }
        }
        expected.extend_from_slice(appended);
        let mut data = SPOOL.to_vec();
        data.extend_from_slice(appended);
        let (t, f) = spool_file(&data);
        let ino = f.metadata().unwrap().ino();
        let state = tempfile::tempdir().unwrap();
        let state = StateDir::new(state.path());
        let len = apply(&state, &f, t.path(), None, &spans, &deleted).unwrap();
        assert!(!state.journal(&SpoolKey::of(t.path())).exists());
        let got = std::fs::read(t.path()).unwrap();
        assert_eq!(got, expected, "mask {mask:05b}");
        assert_eq!(len, expected.len() as u64);
        assert_eq!(std::fs::metadata(t.path()).unwrap().ino(), ino);
    }
}

#[test]
fn delete_all_without_new_mail_truncates_to_zero() {
    let data = b"From a\n\nx\n\nFrom b\n\ny\n";
    let (t, f) = spool_file(data);
    let spans = spans_of(data);
    let state = tempfile::tempdir().unwrap();
    let state = StateDir::new(state.path().join("never-created"));
    let len = apply(&state, &f, t.path(), None, &spans, &[true, true]).unwrap();
    assert_eq!(len, 0);
    assert!(!state.path().exists(), "a truncate needs no journal");
    assert_eq!(std::fs::metadata(t.path()).unwrap().len(), 0);
}

#[test]
fn nothing_deleted_writes_nothing() {
    let (t, f) = spool_file(SPOOL);
    let before = std::fs::metadata(t.path()).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let spans = spans_of(SPOOL);
    let state = StateDir::new(t.path().with_extension("state"));
    let len = apply(&state, &f, t.path(), None, &spans, &[false; 5]).unwrap();
    assert_eq!(len, SPOOL.len() as u64);
    let after = std::fs::metadata(t.path()).unwrap().modified().unwrap();
    assert_eq!(before, after);
    assert_eq!(std::fs::read(t.path()).unwrap(), SPOOL);
}

#[test]
fn verify_accepts_growth_and_rejects_other_changes() {
    let spans = spans_of(SPOOL);
    let len = SPOOL.len() as u64;
    let all = [true; 5];
    let (t, f) = spool_file(SPOOL);
    let id = Identity::of(&f.metadata().unwrap());
    verify(&f, t.path(), &id, len, &spans, &all).unwrap();
    // Appended mail is fine.
    f.write_all_at(b"\nFrom new\n\nz\n", len).unwrap();
    verify(&f, t.path(), &id, len, &spans, &all).unwrap();
    // A From_ line that moved is not.
    f.write_all_at(b"X", spans[2].from_offset).unwrap();
    assert!(matches!(
        verify(&f, t.path(), &id, len, &spans, &all),
        Err(MailboxError::Changed { .. })
    ));
    // ... unless only kept messages changed: they are moved as they are.
    let only_first = [true, false, false, false, false];
    verify(&f, t.path(), &id, len, &spans, &only_first).unwrap();
    f.write_all_at(b"F", spans[2].from_offset).unwrap();
    verify(&f, t.path(), &id, len, &spans, &all).unwrap();
    // One changed byte inside a deleted message, same length, same mtime
    // second: refused.
    let inside = spans[0].content_offset + 1;
    f.write_all_at(b"#", inside).unwrap();
    assert!(matches!(
        verify(&f, t.path(), &id, len, &spans, &only_first),
        Err(MailboxError::Changed { .. })
    ));
    f.write_all_at(&SPOOL[inside as usize..inside as usize + 1], inside)
        .unwrap();
    // Shrinking is not.
    f.set_len(len - 1).unwrap();
    assert!(matches!(
        verify(&f, t.path(), &id, len, &spans, &all),
        Err(MailboxError::Changed { .. })
    ));
}

/// Finding 5: a local reader expunges the message the session deleted and
/// an MDA delivers one of the same length (or longer) into its place: a
/// `From ` line sits exactly where the old one was, size and mtime may look
/// the same, and QUIT must still refuse.
#[test]
fn verify_refuses_a_new_message_in_the_deleted_ones_place() {
    let old = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: old\n\nold body\n\n";
    let same = b"From b@x Mon Jan  1 00:00:00 2024\nSubject: new\n\nnew body\n\n";
    let longer = b"From b@x Mon Jan  1 00:00:00 2024\nSubject: new\n\nnew, longer body\n\n";
    assert_eq!(old.len(), same.len());
    let keep = b"From k@x Mon Jan  1 00:00:00 2024\nSubject: keep\n\nkept\n\n";
    for (data, deleted, replaced_at) in [
        ([&keep[..], old].concat(), vec![false, true], keep.len()),
        (old.to_vec(), vec![true], 0), // delete-all: the new one would be truncated away
    ] {
        for new in [&same[..], &longer[..]] {
            let (t, f) = spool_file(&data);
            let spans = spans_of(&data);
            let id = Identity::of(&f.metadata().unwrap());
            verify(&f, t.path(), &id, data.len() as u64, &spans, &deleted).unwrap();
            f.set_len(replaced_at as u64).unwrap(); // the local reader's expunge
            f.write_all_at(new, replaced_at as u64).unwrap(); // the delivery
            let r = verify(&f, t.path(), &id, data.len() as u64, &spans, &deleted);
            assert!(matches!(r, Err(MailboxError::Changed { .. })), "{r:?}");
        }
    }
}

#[test]
fn verify_rejects_a_replaced_or_removed_spool() {
    let spans = spans_of(SPOOL);
    let all = [true; 5];
    let (t, f) = spool_file(SPOOL);
    let id = Identity::of(&f.metadata().unwrap());
    let other = tempfile::NamedTempFile::new_in(t.path().parent().unwrap()).unwrap();
    std::fs::write(other.path(), SPOOL).unwrap();
    std::fs::rename(other.path(), t.path()).unwrap();
    let r = verify(&f, t.path(), &id, SPOOL.len() as u64, &spans, &all);
    assert!(matches!(r, Err(MailboxError::Changed { .. })));
    std::fs::remove_file(t.path()).unwrap();
    let r = verify(&f, t.path(), &id, SPOOL.len() as u64, &spans, &all);
    assert!(matches!(r, Err(MailboxError::Changed { .. })));
}
