//! TRANSACTION state: every command, message-number errors, UPDATE, abort.

use super::fakes::{
    assert_logged, capture_logs, logs_containing, messages, session_with, settings, Commits,
};
use super::{closes_with, converse, logged_in, say, talk};
use crate::pop3::{Control, Session, State};

fn body(i: usize) -> String {
    String::from_utf8(messages()[i].0.clone()).unwrap()
}

/// A session logged in as one of the fakes' users whose maildrop fails on
/// purpose (`badcommit`: at QUIT, `failing`: in the middle of a RETR),
/// capturing this thread's log lines for the failure's.
fn logged_in_as(user: &str) -> (Session, Commits) {
    capture_logs();
    let (mut s, commits) = session_with(settings(true, false));
    say(&mut s, &format!("USER {user}"));
    say(&mut s, "PASS x");
    (s, commits)
}

/// The session logged exactly one logout line, and it is `line`.
fn assert_logged_out(line: &str) {
    assert_eq!(logs_containing("logout:"), [line]);
}

#[test]
fn stat_list_uidl() {
    let (mut s, _) = logged_in();
    converse(
        &mut s,
        &[
            ("STAT", "+OK 3 115\r\n"),
            (
                "LIST",
                "+OK 3 messages (115 octets)\r\n1 28\r\n2 62\r\n3 25\r\n.\r\n",
            ),
            ("LIST 2", "+OK 2 62\r\n"),
            (
                "UIDL",
                "+OK unique-id listing follows\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n",
            ),
            ("uidl 3", "+OK 3 uid-3\r\n"),
        ],
    );
}

#[test]
fn retr_and_top_stream_the_maildrops_bytes() {
    let (mut s, _) = logged_in();
    converse(&mut s, &[
        ("RETR 2", &format!("+OK 62 octets\r\n{}.\r\n", body(1))),
        ("TOP 2 1", "+OK top of message follows\r\nSubject: two\r\nFrom: x@example.org\r\n\r\nline 1\r\n.\r\n"),
        ("TOP 1 0", "+OK top of message follows\r\nSubject: one\r\n\r\n.\r\n"),
        ("TOP 3 18446744073709551615", &format!("+OK top of message follows\r\n{}.\r\n", body(2))),
    ]);
}

#[test]
fn deleted_messages_are_invisible() {
    let (mut s, _) = logged_in();
    converse(
        &mut s,
        &[
            ("DELE 2", "+OK message 2 deleted\r\n"),
            ("STAT", "+OK 2 53\r\n"),
            (
                "LIST",
                "+OK 2 messages (53 octets)\r\n1 28\r\n3 25\r\n.\r\n",
            ),
            (
                "UIDL",
                "+OK unique-id listing follows\r\n1 uid-1\r\n3 uid-3\r\n.\r\n",
            ),
        ],
    );
    for line in ["LIST 2", "UIDL 2", "RETR 2", "TOP 2 0", "DELE 2"] {
        assert_eq!(say(&mut s, line), "-ERR message 2 is deleted\r\n", "{line}");
    }
    converse(
        &mut s,
        &[
            ("RSET", "+OK maildrop has 3 messages (115 octets)\r\n"),
            ("LIST 2", "+OK 2 62\r\n"),
            ("NOOP", "+OK\r\n"),
        ],
    );
}

#[test]
fn message_number_errors() {
    let (mut s, _) = logged_in();
    let cases = [
        ("RETR 0", "message numbers start at 1"),
        ("RETR -1", "message numbers cannot be negative"),
        ("DELE abc", "message number must be a decimal number"),
        ("LIST 4294967296", "message number is too large"),
        ("TOP 7 1", "no message 7, maildrop has 3 messages"),
        ("UIDL 4", "no message 4, maildrop has 3 messages"),
        ("TOP 1 -1", "TOP line count must not be negative"),
        ("TOP 1 x", "TOP line count must be a number"),
        ("TOP 1", "TOP needs a message number and a line count"),
        ("RETR", "RETR needs a message number"),
        ("DELE 1 2", "DELE takes one argument"),
        ("LIST 1 2", "LIST takes at most one argument"),
        ("STAT 1", "STAT takes no arguments"),
        ("NOOP 1", "NOOP takes no arguments"),
        ("RSET 1", "RSET takes no arguments"),
    ];
    for (line, want) in cases {
        assert_eq!(say(&mut s, line), format!("-ERR {want}\r\n"), "{line}");
    }
    assert_eq!(say(&mut s, "STAT"), "+OK 3 115\r\n");
}

#[test]
fn empty_maildrop() {
    let (mut s, _) = session_with(settings(true, false));
    say(&mut s, "USER bob");
    converse(
        &mut s,
        &[
            ("PASS builder", "+OK maildrop has 0 messages (0 octets)\r\n"),
            ("STAT", "+OK 0 0\r\n"),
            ("LIST", "+OK 0 messages (0 octets)\r\n.\r\n"),
            ("UIDL", "+OK unique-id listing follows\r\n.\r\n"),
            ("RETR 1", "-ERR no message 1, maildrop has 0 messages\r\n"),
        ],
    );
}

#[test]
fn quit_commits_the_deleted_flags_and_logs_the_session() {
    capture_logs();
    let (mut s, commits) = logged_in();
    say(&mut s, "RETR 1");
    say(&mut s, "RETR 2");
    say(&mut s, "TOP 3 0");
    say(&mut s, "DELE 1");
    say(&mut s, "DELE 3");
    closes_with(
        &mut s,
        "QUIT",
        "+OK ironpop signing off (1 messages left)\r\n",
    );
    assert_eq!(*commits.lock().unwrap(), vec![vec![true, false, true]]);
    assert_eq!(s.state(), State::Authorization);
    closes_with(&mut s, "STAT", "");
    s.abort("eof");
    assert_logged_out(
        "INFO logout: user=alice rip=192.0.2.7 retr=2/90 top=1 dele=2/53 kept=1/62 reason=quit",
    );
}

#[test]
fn failed_update_answers_sys_temp() {
    let (mut s, commits) = logged_in_as("badcommit");
    say(&mut s, "DELE 1");
    closes_with(
        &mut s,
        "QUIT",
        "-ERR [SYS/TEMP] could not update the mailbox; no messages were deleted\r\n",
    );
    assert_eq!(*commits.lock().unwrap(), vec![vec![true, false, false]]);
    assert_logged(&["no space left on device", "reason=update-failed"]);
}

#[test]
fn abort_changes_nothing_and_logs_once() {
    capture_logs();
    let (mut s, commits) = logged_in();
    say(&mut s, "DELE 1");
    s.abort("timeout");
    s.abort("eof");
    assert!(commits.lock().unwrap().is_empty());
    closes_with(&mut s, "QUIT", "");
    assert_logged_out(
        "INFO logout: user=alice rip=192.0.2.7 retr=0/0 top=0 dele=1/28 kept=3/115 reason=timeout",
    );
}

#[test]
fn transfer_error_after_ok_closes_without_update() {
    let (mut s, commits) = logged_in_as("failing");
    say(&mut s, "DELE 2");
    closes_with(&mut s, "RETR 1", "+OK 28 octets\r\nSubject: partial\r\n");
    closes_with(&mut s, "QUIT", "");
    assert!(commits.lock().unwrap().is_empty());
    assert_logged(&["RETR 1 failed: user=failing", "reason=transfer-error"]);
}

#[test]
fn bad_commands_in_transaction_close_without_update() {
    let (mut s, commits) = logged_in();
    say(&mut s, "DELE 1");
    for _ in 1..crate::limits::MAX_BAD_COMMANDS {
        say(&mut s, "RETR x");
    }
    // Missing messages are not the client misspeaking: no count, no reset.
    say(&mut s, "RETR 9");
    assert_eq!(talk(&mut s, "USER x").1, Control::Close);
    assert!(commits.lock().unwrap().is_empty());
}
