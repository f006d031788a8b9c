//! The mbox maildrop as clients see it: sizes, TOP, UIDL, and the spool bytes after UPDATE.

use crate::harness::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Messages that exercise the transfer encoding: dots, `From ` lookalikes,
/// 8-bit data, long lines, an empty body.
fn tricky_messages() -> Vec<Vec<u8>> {
    vec![
        b"Subject: dots\nMessage-ID: <dots@example.org>\n\n.\n..\n.leading dot\nend.\n.\n".to_vec(),
        b"Subject: from lines\nMessage-ID: <from@example.org>\n\n>From the archive, quoted\n\
          >>From twice quoted\nnot a separator:\nFrom inside a paragraph is not a separator\n"
            .to_vec(),
        [
            &b"Subject: 8bit\nMessage-ID: <8bit@example.org>\nContent-Type: text/plain; charset=latin1\n\n"[..],
            &[0xe4, 0xf6, 0xfc, 0xdf, 0x80, 0xff, b'\n'],
            "gr\u{fc}\u{df}e in UTF-8\n".as_bytes(),
        ]
        .concat(),
        format!(
            "Subject: long line\nMessage-ID: <long@example.org>\n\n{}\n",
            "0123456789".repeat(2000)
        )
        .into_bytes(),
        b"Subject: no body\nMessage-ID: <empty@example.org>\n\n".to_vec(),
        b"Subject: lying length\nMessage-ID: <cl@example.org>\nContent-Length: 3\n\n\
          The Content-Length header is wrong and must be ignored.\n"
            .to_vec(),
    ]
}

#[test]
fn list_sizes_equal_received_retr_octets_and_bytes_are_exact() {
    let msgs = tricky_messages();
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    let total: usize = msgs.iter().map(|m| crlf(m).len()).sum();
    assert_eq!(c.ok("STAT"), format!("+OK {} {total}", msgs.len()));
    let list = c.ok_lines("LIST");
    assert_eq!(list.len(), msgs.len(), "LIST: {list:?}");
    for (i, m) in msgs.iter().enumerate() {
        let n = i + 1;
        let body = c.ok_body(&format!("RETR {n}"));
        assert_eq!(
            list[i],
            format!("{n} {}", body.len()),
            "LIST size vs RETR octets of {n}"
        );
        assert_bytes_eq(&body, &crlf(m), &format!("RETR {n}"));
    }
    c.quit();
    assert_eq!(
        s.read_spool("alice"),
        mbox(&msgs),
        "reading changed the spool"
    );
}

#[test]
fn dot_lines_are_stuffed_on_the_wire() {
    let msgs = tricky_messages();
    let s = ServerBuilder::new()
        .spool("alice", mbox(&msgs[..1]))
        .start();
    let mut c = s.login(ALICE);
    c.ok("RETR 1");
    let mut wire = Vec::new();
    loop {
        let l = c.read_raw_line().expect("read").expect("open");
        if l == b".\r\n" {
            break;
        }
        wire.extend_from_slice(&l);
    }
    let want = b"Subject: dots\r\nMessage-ID: <dots@example.org>\r\n\r\n..\r\n...\r\n..leading dot\r\nend.\r\n..\r\n";
    assert_bytes_eq(&wire, want, "RETR on the wire");
    c.quit();
}

#[test]
fn top_returns_headers_blank_line_and_n_body_lines() {
    let msgs = [
        message(1),
        tricky_messages().swap_remove(0),
        tricky_messages().swap_remove(4),
    ];
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    for (i, m) in msgs.iter().enumerate() {
        let n = i + 1;
        for lines in [0, 1, 2, 3, 1000] {
            let got = c.ok_body(&format!("TOP {n} {lines}"));
            assert_bytes_eq(&got, &top(m, lines), &format!("TOP {n} {lines}"));
        }
    }
    // TOP n 0 is exactly the header and the blank line.
    let head = c.ok_body("TOP 1 0");
    assert!(
        head.ends_with(b"Message-ID: <1.ironpop-test@example.org>\r\n\r\n"),
        "{head:?}"
    );
    // TOP with more lines than the body is the whole message.
    assert_bytes_eq(
        &c.ok_body("TOP 1 4000000000"),
        &crlf(&msgs[0]),
        "TOP 1 huge",
    );
    c.quit();
}

fn uidl_map(c: &mut Client) -> Vec<(usize, String)> {
    c.ok_lines("UIDL")
        .into_iter()
        .map(|l| {
            let (n, uid) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("UIDL line {l:?}"));
            (
                n.parse().unwrap_or_else(|_| panic!("UIDL line {l:?}")),
                uid.to_string(),
            )
        })
        .collect()
}

fn assert_valid_uid(uid: &str) {
    assert!(
        (1..=70).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "UID {uid:?} is not 1-70 printable characters"
    );
}

#[test]
fn uidl_is_stable_across_sessions_and_unique_with_duplicates() {
    let mut msgs = messages(4);
    // An exact duplicate of message 2 (a resent or doubly delivered mail),
    // and a third copy.
    msgs.push(message(2));
    msgs.push(message(2));
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();

    let mut c = s.login(ALICE);
    let first = uidl_map(&mut c);
    assert_eq!(
        first.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    for (n, uid) in &first {
        assert_valid_uid(uid);
        assert_eq!(c.ok(&format!("UIDL {n}")), format!("+OK {n} {uid}"));
    }
    let unique: HashSet<&String> = first.iter().map(|(_, u)| u).collect();
    assert_eq!(unique.len(), 6, "UIDs not unique: {first:?}");
    c.quit();

    let mut c = s.login(ALICE);
    assert_eq!(uidl_map(&mut c), first, "UIDs changed between sessions");
    // Deleting message 1 must not change the others' UIDs in the next session.
    c.ok("DELE 1");
    c.quit();
    let mut c = s.login(ALICE);
    let after: Vec<String> = uidl_map(&mut c).into_iter().map(|(_, u)| u).collect();
    let want: Vec<String> = first[1..].iter().map(|(_, u)| u.clone()).collect();
    assert_eq!(
        after, want,
        "UIDs changed when an earlier message was deleted"
    );
    c.quit();
}

#[test]
fn uidl_differs_for_different_messages_with_identical_headers() {
    let a =
        b"From: x@example.org\nSubject: same\nDate: Mon, 5 Jan 2026 09:00:00 +0000\n\nbody one\n";
    let b = b"From: x@example.org\nSubject: same\nDate: Mon, 5 Jan 2026 09:00:00 +0000\n\nbody two, longer\n";
    let s = ServerBuilder::new()
        .spool("alice", mbox(&[&a[..], &b[..]]))
        .start();
    let mut c = s.login(ALICE);
    let uids = uidl_map(&mut c);
    assert_eq!(uids.len(), 2);
    assert_ne!(uids[0].1, uids[1].1, "two different messages share a UID");
    c.quit();
}

#[test]
fn dele_then_quit_removes_exactly_those_messages() {
    let msgs = messages(5);
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    c.ok("DELE 2");
    c.ok("DELE 5");
    c.quit();
    assert_bytes_eq(
        &s.read_spool("alice"),
        &mbox_without(&msgs, &[2, 5]),
        "spool after QUIT",
    );
    // The next session sees the rest, renumbered.
    let mut c = s.login(ALICE);
    let rest = [&msgs[0], &msgs[2], &msgs[3]];
    let total: usize = rest.iter().map(|m| crlf(m).len()).sum();
    assert_eq!(c.ok("STAT"), format!("+OK 3 {total}"));
    assert_bytes_eq(&c.ok_body("RETR 2"), &crlf(&msgs[2]), "RETR 2 after update");
    c.quit();
}

#[test]
fn dele_first_and_only_middle_keep_every_other_byte() {
    for deleted in [vec![1], vec![3], vec![1, 2, 3, 4], vec![2, 4]] {
        let msgs = tricky_messages();
        let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
        let mut c = s.login(ALICE);
        for n in &deleted {
            c.ok(&format!("DELE {n}"));
        }
        c.quit();
        assert_bytes_eq(
            &s.read_spool("alice"),
            &mbox_without(&msgs, &deleted),
            &format!("spool after deleting {deleted:?}"),
        );
    }
}

#[test]
fn delete_all_leaves_an_empty_spool() {
    let msgs = messages(3);
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    for n in 1..=3 {
        c.ok(&format!("DELE {n}"));
    }
    assert_eq!(c.ok("STAT"), "+OK 0 0");
    c.quit();
    assert_eq!(s.read_spool("alice"), b"", "spool not empty");
    let mut c = s.login(ALICE);
    assert_eq!(c.ok("STAT"), "+OK 0 0");
    assert!(c.ok_lines("LIST").is_empty());
    c.quit();
}

#[test]
fn rset_undoes_deletions() {
    let msgs = messages(3);
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    c.ok("DELE 1");
    c.ok("DELE 3");
    c.ok("RSET");
    let total: usize = msgs.iter().map(|m| crlf(m).len()).sum();
    assert_eq!(c.ok("STAT"), format!("+OK 3 {total}"));
    c.ok("DELE 2");
    c.quit();
    assert_bytes_eq(
        &s.read_spool("alice"),
        &mbox_without(&msgs, &[2]),
        "spool after RSET, DELE 2",
    );
}

#[test]
fn mail_appended_during_the_session_survives_quit() {
    let msgs = messages(3);
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    let new = message(99);
    s.append_spool("alice", &mbox_chunk(&new));
    // The session still sees its own scan.
    let total: usize = msgs.iter().map(|m| crlf(m).len()).sum();
    assert_eq!(c.ok("STAT"), format!("+OK 3 {total}"));
    c.ok("DELE 1");
    c.ok("DELE 3");
    c.quit();
    let mut want = mbox_without(&msgs, &[1, 3]);
    want.extend_from_slice(&mbox_chunk(&new));
    assert_bytes_eq(&s.read_spool("alice"), &want, "spool after QUIT");
    let mut c = s.login(ALICE);
    assert_eq!(c.ok_lines("LIST").len(), 2);
    assert_bytes_eq(&c.ok_body("RETR 2"), &crlf(&new), "appended message");
    c.quit();
}

#[test]
fn delete_all_with_mail_appended_keeps_the_new_mail() {
    let msgs = messages(2);
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    c.ok("DELE 1");
    c.ok("DELE 2");
    let new = message(7);
    s.append_spool("alice", &mbox_chunk(&new));
    c.quit();
    assert_bytes_eq(
        &s.read_spool("alice"),
        &mbox_chunk(&new),
        "spool after delete-all",
    );
}

/// Logs in, retrying while the previous session of the same mailbox is
/// still being torn down by the server.
fn login_when_free(s: &TestServer) -> Client {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = s.greeted();
        c.ok("USER alice");
        let r = c.cmd(&format!("PASS {}", ALICE.password));
        if r.starts_with("+OK") {
            return c;
        }
        assert!(
            r.starts_with("-ERR [IN-USE]") && Instant::now() < deadline,
            "login after a dropped session: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn disconnect_without_quit_changes_nothing() {
    let msgs = messages(3);
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    c.ok("DELE 1");
    c.ok("DELE 2");
    drop(c);
    let mut c = login_when_free(&s);
    let total: usize = msgs.iter().map(|m| crlf(m).len()).sum();
    assert_eq!(c.ok("STAT"), format!("+OK 3 {total}"));
    c.quit();
    assert_eq!(
        s.read_spool("alice"),
        mbox(&msgs),
        "a dropped session changed the spool"
    );
}

#[test]
fn missing_spool_is_an_empty_maildrop() {
    let s = ServerBuilder::new().start();
    let mut c = s.login(BOB);
    assert_eq!(c.ok("STAT"), "+OK 0 0");
    assert!(c.ok_lines("LIST").is_empty());
    assert!(c.ok_lines("UIDL").is_empty());
    c.err("RETR 1");
    c.quit();
    assert!(
        !s.spool_path("bob").exists() || s.read_spool("bob").is_empty(),
        "QUIT on an empty maildrop wrote mail"
    );
}

#[test]
fn missing_final_newline_is_served_with_a_line_end() {
    let mut spool = mbox(&messages(1));
    let last = b"Subject: cut short\nMessage-ID: <cut@example.org>\n\nno newline at the end";
    spool.extend_from_slice(FROM_LINE);
    spool.extend_from_slice(last);
    let s = ServerBuilder::new().spool("alice", spool.clone()).start();
    let mut c = s.login(ALICE);
    let list = c.ok_lines("LIST");
    assert_eq!(list.len(), 2, "{list:?}");
    let body = c.ok_body("RETR 2");
    assert_bytes_eq(
        &body,
        &crlf(last),
        "RETR of a message without final newline",
    );
    assert_eq!(list[1], format!("2 {}", body.len()));
    // Deleting the first message keeps the unterminated one byte for byte.
    c.ok("DELE 1");
    c.quit();
    let mut want = FROM_LINE.to_vec();
    want.extend_from_slice(last);
    assert_bytes_eq(
        &s.read_spool("alice"),
        &want,
        "spool after deleting message 1",
    );
}

#[test]
fn ten_thousand_messages() {
    const N: usize = 10_000;
    let msgs = messages(N);
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    let sizes: Vec<usize> = msgs.iter().map(|m| crlf(m).len()).collect();
    assert_eq!(
        c.ok("STAT"),
        format!("+OK {N} {}", sizes.iter().sum::<usize>())
    );
    let list = c.ok_lines("LIST");
    assert_eq!(list.len(), N);
    for (i, line) in list.iter().enumerate() {
        assert_eq!(*line, format!("{} {}", i + 1, sizes[i]));
    }
    let uids = uidl_map(&mut c);
    assert_eq!(uids.len(), N);
    assert_eq!(
        uids.iter().map(|(_, u)| u).collect::<HashSet<_>>().len(),
        N,
        "UIDs not unique"
    );
    assert_bytes_eq(
        &c.ok_body(&format!("RETR {N}")),
        &crlf(&msgs[N - 1]),
        "RETR last",
    );
    assert_bytes_eq(&c.ok_body("RETR 5000"), &crlf(&msgs[4999]), "RETR 5000");
    let deleted = [1, 2, 5000, 9999, N];
    for n in deleted {
        c.ok(&format!("DELE {n}"));
    }
    c.quit();
    assert_bytes_eq(
        &s.read_spool("alice"),
        &mbox_without(&msgs, &deleted),
        "spool after QUIT",
    );
}

#[test]
fn text_before_the_first_from_line_is_served_as_message_one() {
    let junk =
        b"Subject: no From_ line\nMessage-ID: <junk@example.org>\n\nleft here by some tool\n";
    let mut spool = junk.to_vec();
    spool.push(b'\n');
    spool.extend_from_slice(&mbox(&messages(2)));
    let s = ServerBuilder::new().spool("alice", spool.clone()).start();
    let mut c = s.login(ALICE);
    assert_eq!(c.ok_lines("LIST").len(), 3);
    assert_bytes_eq(
        &c.ok_body("RETR 1"),
        &crlf(junk),
        "leading text as message 1",
    );
    assert_bytes_eq(&c.ok_body("RETR 2"), &crlf(&message(1)), "RETR 2");
    // Deleting a real message keeps the leading text byte for byte.
    c.ok("DELE 3");
    c.quit();
    let mut want = junk.to_vec();
    want.push(b'\n');
    want.extend_from_slice(&mbox(&messages(1)));
    assert_bytes_eq(&s.read_spool("alice"), &want, "spool after DELE 3");
}

#[test]
fn stored_crlf_line_ends_are_served_unchanged() {
    let m = b"Subject: crlf\r\nMessage-ID: <crlf@example.org>\r\n\r\nstored with CRLF\r\n.dot\r\n";
    let s = ServerBuilder::new()
        .spool("alice", mbox(&[&m[..], &message(2)[..]]))
        .start();
    let mut c = s.login(ALICE);
    let body = c.ok_body("RETR 1");
    let want =
        b"Subject: crlf\r\nMessage-ID: <crlf@example.org>\r\n\r\nstored with CRLF\r\n.dot\r\n";
    assert_bytes_eq(&body, want, "RETR of a CRLF message");
    assert_eq!(c.ok("LIST 1"), format!("+OK 1 {}", want.len()));
    assert_bytes_eq(
        &c.ok_body("TOP 1 0"),
        b"Subject: crlf\r\nMessage-ID: <crlf@example.org>\r\n\r\n",
        "TOP 1 0",
    );
    c.quit();
}

#[test]
fn large_message_streams_exactly() {
    // 8 MiB in 100-octet lines, some of them starting with a dot.
    let mut big = b"Subject: big\nMessage-ID: <big@example.org>\n\n".to_vec();
    for i in 0..(8 << 20) / 100 {
        let lead = if i % 7 == 0 { "." } else { "x" };
        big.extend_from_slice(format!("{lead}{:098}\n", i).as_bytes());
    }
    let msgs = [message(1), big, message(3)];
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    let want = crlf(&msgs[1]);
    assert_eq!(c.ok("LIST 2"), format!("+OK 2 {}", want.len()));
    assert_bytes_eq(&c.ok_body("RETR 2"), &want, "RETR of 8 MiB");
    c.ok("DELE 2");
    c.quit();
    assert_bytes_eq(
        &s.read_spool("alice"),
        &mbox_without(&msgs, &[2]),
        "spool after deleting 8 MiB",
    );
}

#[test]
fn spool_rewritten_by_another_program_is_not_updated() {
    let msgs = messages(3);
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    // A local mail reader removes message 1 behind the session's back.
    let rewritten = mbox_without(&msgs, &[1]);
    std::fs::write(s.spool_path("alice"), &rewritten).expect("rewrite spool");
    c.ok("DELE 2");
    let reply = c.cmd("QUIT");
    assert!(
        reply.starts_with("-ERR [SYS/TEMP]"),
        "QUIT after the spool changed: {reply:?}"
    );
    c.expect_closed(IO_TIMEOUT);
    assert_bytes_eq(
        &s.read_spool("alice"),
        &rewritten,
        "the other program's spool",
    );
}

#[test]
fn exact_duplicates_get_a_numbered_suffix() {
    let msgs = [message(1), message(1), message(2), message(1)];
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    let uids: Vec<String> = uidl_map(&mut c).into_iter().map(|(_, u)| u).collect();
    assert_eq!(uids.len(), 4);
    let base = &uids[0];
    for dup in [&uids[1], &uids[3]] {
        let suffix = dup
            .strip_prefix(base.as_str())
            .and_then(|r| r.strip_prefix('-'))
            .unwrap_or_else(|| panic!("duplicate UID {dup:?} is not {base:?}-N"));
        assert!(
            !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()),
            "{dup:?}"
        );
    }
    assert_ne!(uids[1], uids[3]);
    assert!(!uids[2].starts_with(base.as_str()), "{uids:?}");
    c.quit();
}

#[test]
fn two_sessions_on_one_mailbox_never_lose_mail() {
    let msgs = messages(4);
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut a = s.login(ALICE);
    let mut b = s.greeted();
    b.ok("USER alice");
    let b_login = b.cmd(&format!("PASS {}", ALICE.password));
    if b_login.starts_with("-ERR") {
        // A session lock ([IN-USE]) is the other correct answer.
        assert!(b_login.starts_with("-ERR [IN-USE]"), "{b_login:?}");
        a.ok("DELE 1");
        a.quit();
        assert_bytes_eq(&s.read_spool("alice"), &mbox_without(&msgs, &[1]), "spool");
        return;
    }
    a.ok("DELE 1");
    b.ok("DELE 3");
    a.quit();
    assert_bytes_eq(
        &s.read_spool("alice"),
        &mbox_without(&msgs, &[1]),
        "spool after A's QUIT",
    );
    // B's scan is stale now: it must either refuse the update or apply
    // exactly its own deletion to the current spool.
    let reply = b.cmd("QUIT");
    let spool = s.read_spool("alice");
    if reply.starts_with("+OK") {
        assert_bytes_eq(
            &spool,
            &mbox_without(&msgs, &[1, 3]),
            "spool after B's QUIT",
        );
    } else {
        assert!(reply.starts_with("-ERR [SYS/TEMP]"), "B's QUIT: {reply:?}");
        assert_bytes_eq(
            &spool,
            &mbox_without(&msgs, &[1]),
            "spool after B's refused QUIT",
        );
    }
}
