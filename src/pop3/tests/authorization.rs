//! AUTHORIZATION state, the wrong-state matrix, bad-command handling.

use super::fakes::{assert_logged, capture_logs, logs, session_with, settings};
use super::{closes_with, converse, logged_in, say, talk};
use crate::limits;
use crate::pop3::{Control, State};

const TRANSACTION_ONLY: [&str; 14] = [
    "STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL", "UIDL 1",
    // The state is checked before the arguments.
    "STAT x", "RETR", "top", "dele 0",
];

const AUTHORIZATION_ONLY: [&str; 8] = [
    "USER alice",
    "PASS wonder land",
    "APOP a b",
    "AUTH",
    "AUTH PLAIN",
    "STLS",
    "user",
    "pass",
];

fn keyword(line: &str) -> String {
    line.split(' ').next().unwrap().to_ascii_uppercase()
}

#[test]
fn greeting_has_no_apop_timestamp() {
    let (mut s, _) = session_with(settings(true, false));
    let mut out = Vec::new();
    s.greeting(&mut out).unwrap();
    assert_eq!(out, b"+OK ironpop ready\r\n");
    assert_eq!(s.state(), State::Authorization);
    assert_eq!(s.max_line(), 255);
}

#[test]
fn transaction_commands_in_authorization_name_the_state() {
    for line in TRANSACTION_ONLY {
        let (mut s, _) = session_with(settings(true, false));
        let want = format!(
            "-ERR {} is not valid in AUTHORIZATION state\r\n",
            keyword(line)
        );
        assert_eq!(say(&mut s, line), want, "{line}");
        assert_eq!(s.state(), State::Authorization);
    }
}

#[test]
fn authorization_commands_in_transaction_name_the_state() {
    for line in AUTHORIZATION_ONLY {
        let (mut s, commits) = logged_in();
        let want = format!(
            "-ERR {} is not valid in TRANSACTION state\r\n",
            keyword(line)
        );
        assert_eq!(say(&mut s, line), want, "{line}");
        assert_eq!(say(&mut s, "STAT"), "+OK 3 115\r\n");
        assert!(commits.lock().unwrap().is_empty());
    }
}

#[test]
fn authorization_commands_in_authorization() {
    let (mut s, _) = session_with(settings(true, false));
    converse(
        &mut s,
        &[
            ("APOP a b", "-ERR APOP is not supported\r\n"),
            ("AUTH", "+OK SASL mechanisms follow\r\nPLAIN\r\n.\r\n"),
        ],
    );
    assert_eq!(
        talk(&mut s, "AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q="),
        (
            "-ERR [AUTH] invalid user name or password\r\n".into(),
            Control::AuthFailed { then_close: false }
        )
    );
    converse(
        &mut s,
        &[
            ("STLS", "-ERR TLS is not available on this connection\r\n"),
            ("user alice", "+OK send PASS\r\n"),
            (
                "pass wonder land",
                "+OK maildrop has 3 messages (115 octets)\r\n",
            ),
        ],
    );
    assert_eq!(s.state(), State::Transaction);
}

#[test]
fn stls_when_tls_is_already_active() {
    let mut st = settings(true, true);
    st.tls_active = true;
    let (mut s, _) = session_with(st);
    assert_eq!(say(&mut s, "STLS"), "-ERR TLS is already active\r\n");
    assert!(!say(&mut s, "CAPA").contains("STLS"));
}

#[test]
fn quit_in_authorization_closes_without_touching_a_maildrop() {
    let (mut s, commits) = session_with(settings(true, false));
    closes_with(&mut s, "QUIT", "+OK ironpop signing off\r\n");
    closes_with(&mut s, "NOOP", "");
    assert!(commits.lock().unwrap().is_empty());
}

#[test]
fn pass_must_follow_user_immediately() {
    let (mut s, _) = session_with(settings(true, false));
    let must = "-ERR PASS must follow a successful USER\r\n";
    assert_eq!(say(&mut s, "PASS wonder land"), must);
    say(&mut s, "USER alice");
    say(&mut s, "CAPA");
    assert_eq!(say(&mut s, "PASS wonder land"), must);
    say(&mut s, "USER alice");
    s.handle_too_long(&mut Vec::new()).unwrap();
    assert_eq!(say(&mut s, "PASS wonder land"), must);
    // A failed PASS uses the USER up as well.
    say(&mut s, "USER alice");
    assert_eq!(
        talk(&mut s, "PASS wrong").1,
        Control::AuthFailed { then_close: false }
    );
    assert_eq!(say(&mut s, "PASS wonder land"), must);
    // A second USER replaces the first.
    say(&mut s, "USER bob");
    say(&mut s, "USER alice");
    assert_eq!(
        say(&mut s, "PASS wonder land"),
        "+OK maildrop has 3 messages (115 octets)\r\n"
    );
}

#[test]
fn plaintext_refused_when_not_allowed() {
    let (mut s, _) = session_with(settings(false, true));
    let with_hint =
        "-ERR [AUTH] plaintext authentication is not allowed on this connection; use STLS\r\n";
    converse(
        &mut s,
        &[("USER alice", with_hint), ("PASS wonder land", with_hint)],
    );
    let capa = say(&mut s, "CAPA");
    assert!(
        capa.contains("\r\nSTLS\r\n") && !capa.contains("USER"),
        "{capa}"
    );

    let (mut s, _) = session_with(settings(false, false));
    assert_eq!(
        say(&mut s, "USER alice"),
        "-ERR [AUTH] plaintext authentication is not allowed on this connection\r\n"
    );
    assert_eq!(s.state(), State::Authorization);
}

#[test]
fn capa_in_each_state_advertises_only_what_works() {
    let version = env!("CARGO_PKG_VERSION");
    let tail = format!(
        "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION ironpop-{version}\r\n.\r\n"
    );
    let (mut s, _) = session_with(settings(true, true));
    assert_eq!(
        say(&mut s, "capa"),
        format!(
            "+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\nSTLS\r\n{tail}"
        )
    );
    let (mut s, _) = logged_in();
    assert_eq!(
        say(&mut s, "CAPA"),
        format!("+OK capability list follows\r\nTOP\r\nUIDL\r\n{tail}")
    );
}

#[test]
fn unknown_user_and_bad_password_look_identical() {
    capture_logs();
    let mut replies = Vec::new();
    for (user, pass) in [("alice", "wonderland"), ("mallory", "wonder land")] {
        let (mut s, _) = session_with(settings(true, false));
        let user_reply = say(&mut s, &format!("USER {user}"));
        let (reply, control) = talk(&mut s, &format!("PASS {pass}"));
        assert_eq!(control, Control::AuthFailed { then_close: false });
        replies.push((user_reply, reply));
    }
    assert_eq!(replies[0], replies[1]);
    assert_eq!(
        replies[0].1,
        "-ERR [AUTH] invalid user name or password\r\n"
    );
    assert_logged_without_the_password("auth failed: user=mallory method=USER rip=192.0.2.7");
}

#[test]
fn auth_failures_close_after_the_limit() {
    let (mut s, _) = session_with(settings(true, false));
    for i in 1..=limits::MAX_AUTH_FAILURES {
        say(&mut s, "USER alice");
        let (reply, control) = talk(&mut s, "PASS nope");
        assert_eq!(reply, "-ERR [AUTH] invalid user name or password\r\n");
        let then_close = i == limits::MAX_AUTH_FAILURES;
        assert_eq!(control, Control::AuthFailed { then_close });
    }
    closes_with(&mut s, "USER alice", "");
}

#[test]
fn successful_login_is_logged_without_the_password() {
    capture_logs();
    let (mut s, _) = logged_in();
    assert_eq!(s.state(), State::Transaction);
    say(&mut s, "NOOP");
    assert_logged_without_the_password(
        "INFO login: user=alice method=USER rip=192.0.2.7 lip=192.0.2.1 tls=no",
    );
}

/// The captured log has `line` and nowhere alice's password ("wonder land").
fn assert_logged_without_the_password(line: &str) {
    let logs = logs().join("\n");
    assert!(logs.contains(line), "{logs}");
    assert!(
        !logs.contains("wonder"),
        "a password reached the log: {logs}"
    );
}

#[test]
fn backend_and_maildrop_failures() {
    capture_logs();
    let cases = [
        (
            "broken",
            "-ERR [SYS/TEMP] authentication is temporarily unavailable; try again later\r\n",
        ),
        (
            "busy",
            "-ERR [IN-USE] mailbox is in use by another POP3 session\r\n",
        ),
        (
            "refused",
            "-ERR [SYS/PERM] mailbox cannot be opened; please contact the administrator\r\n",
        ),
        (
            "ioerr",
            "-ERR [SYS/TEMP] mailbox is temporarily unavailable; try again later\r\n",
        ),
    ];
    for (user, want) in cases {
        let (mut s, _) = session_with(settings(true, false));
        say(&mut s, &format!("USER {user}"));
        assert_eq!(say(&mut s, "PASS x"), want, "{user}");
        assert_eq!(s.state(), State::Authorization);
    }
    assert_logged(&[
        "passwd file unreadable",
        "/var/mail/busy is locked by another POP3 session",
        "/var/mail/refused cannot be served: it is a symbolic link",
        "error reading mailbox /var/mail/ioerr: disk on fire",
    ]);
}

#[test]
fn line_errors_and_too_long_lines() {
    let (mut s, _) = session_with(settings(true, false));
    converse(
        &mut s,
        &[
            ("", "-ERR empty command line\r\n"),
            ("US\0ER a", "-ERR NUL byte in command line\r\n"),
            (" USER a", "-ERR command keyword must be ASCII letters\r\n"),
            ("HELO x", "-ERR unknown command\r\n"),
            ("USER", "-ERR USER needs a user name\r\n"),
            ("USER a b", "-ERR USER takes one argument\r\n"),
            ("QUIT now", "-ERR QUIT takes no arguments\r\n"),
        ],
    );
    let mut out = Vec::new();
    assert_eq!(s.handle_too_long(&mut out).unwrap(), Control::Continue);
    assert_eq!(
        out,
        b"-ERR line too long (at most 255 octets including CRLF)\r\n"
    );
}

#[test]
fn too_many_bad_commands_in_a_row_close_the_connection() {
    let (mut s, _) = session_with(settings(true, false));
    for _ in 1..limits::MAX_BAD_COMMANDS {
        say(&mut s, "BOGUS");
    }
    say(&mut s, "CAPA"); // resets the count
    for _ in 1..limits::MAX_BAD_COMMANDS {
        say(&mut s, "STAT");
    }
    closes_with(&mut s, "BOGUS", "-ERR unknown command\r\n");
    closes_with(&mut s, "CAPA", "");
}

#[test]
fn too_long_lines_count_as_bad_commands() {
    let (mut s, _) = session_with(settings(true, false));
    let mut last = Control::Continue;
    for _ in 0..limits::MAX_BAD_COMMANDS {
        last = s.handle_too_long(&mut Vec::new()).unwrap();
    }
    assert_eq!(last, Control::Close);
}
