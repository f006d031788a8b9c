//! RFC 1939/2449 protocol behaviour: the state matrix, argument errors, line limits, pipelining.

use crate::harness::*;
use std::time::Duration;

/// alice has three messages, bob none.
fn server() -> TestServer {
    ServerBuilder::new()
        .spool("alice", mbox(&messages(3)))
        .start()
}

/// Sends `cmd` and NOOP in one write: `cmd` must get exactly one `-ERR`
/// line (NOOP's `+OK` comes next) and the session must go on.
fn single_err_in_transaction(c: &mut Client, cmd: &str) -> String {
    c.send_raw(format!("{cmd}\r\nNOOP\r\n").as_bytes());
    let reply = c.line();
    assert_err(&reply, cmd);
    let next = c.line();
    assert_ok(
        &next,
        &format!("NOOP after {cmd:?} (was there a second reply line?)"),
    );
    reply
}

/// As above in AUTHORIZATION, where CAPA is the harmless follower.
fn single_err_in_authorization(c: &mut Client, cmd: &[u8]) -> String {
    let mut data = cmd.to_vec();
    data.extend_from_slice(b"\r\nCAPA\r\n");
    c.send_raw(&data);
    let reply = c.line();
    assert_err(&reply, &String::from_utf8_lossy(cmd));
    let next = c.line();
    assert_ok(
        &next,
        &format!(
            "CAPA after {:?} (was there a second reply line?)",
            String::from_utf8_lossy(cmd)
        ),
    );
    let caps = c.multi_lines();
    assert!(!caps.is_empty(), "CAPA listed nothing");
    reply
}

#[test]
fn greeting_is_one_ok_line() {
    let s = server();
    let mut c = s.connect();
    let g = c.greeting();
    assert!(g.len() <= 512, "greeting too long: {g:?}");
    c.quit();
}

#[test]
fn transaction_commands_are_refused_in_authorization_by_name() {
    let s = server();
    let mut c = s.greeted();
    for cmd in [
        "STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 0", "UIDL", "UIDL 1",
    ] {
        let verb = cmd.split(' ').next().unwrap_or(cmd);
        let reply = single_err_in_authorization(&mut c, cmd.as_bytes());
        assert_eq!(
            reply,
            format!("-ERR {verb} is not valid in AUTHORIZATION state"),
            "reply to {cmd}"
        );
    }
    // The session went on through all of that: logging in still works.
    c.login(ALICE);
    assert_eq!(c.ok("STAT"), format!("+OK 3 {}", total_size(3)));
    c.quit();
    assert_eq!(s.read_spool("alice"), mbox(&messages(3)), "spool changed");
}

#[test]
fn transaction_commands_are_refused_between_user_and_pass() {
    let s = server();
    let mut c = s.greeted();
    c.ok("USER alice");
    for cmd in ["STAT", "RETR 1", "DELE 1", "UIDL"] {
        let reply = c.err(cmd);
        assert!(
            reply.contains("AUTHORIZATION"),
            "{cmd}: {reply:?} does not name the state"
        );
    }
    // A fresh USER/PASS pair still logs in.
    c.login(ALICE);
    c.ok("NOOP");
    c.quit();
}

#[test]
fn lower_and_mixed_case_commands_work() {
    let s = server();
    let mut c = s.greeted();
    c.ok("user alice");
    c.ok(&format!("pAsS {}", ALICE.password));
    assert_eq!(c.ok("stat"), format!("+OK 3 {}", total_size(3)));
    assert_eq!(c.ok("List 2"), format!("+OK 2 {}", crlf(&message(2)).len()));
    assert_bytes_eq(&c.ok_body("rEtR 1"), &crlf(&message(1)), "rEtR 1");
    c.ok("noop");
    c.quit();
}

#[test]
fn authorization_commands_are_refused_in_transaction_by_name() {
    let s = server();
    let mut c = s.login(ALICE);
    for (cmd, verb) in [
        ("USER alice", "USER"),
        (&*format!("PASS {}", ALICE.password), "PASS"),
    ] {
        let reply = single_err_in_transaction(&mut c, cmd);
        assert_eq!(
            reply,
            format!("-ERR {verb} is not valid in TRANSACTION state")
        );
    }
    assert_eq!(c.ok("STAT"), format!("+OK 3 {}", total_size(3)));
    c.quit();
}

#[test]
fn every_transaction_command_works_in_transaction() {
    let s = server();
    let mut c = s.login(ALICE);
    let sizes: Vec<usize> = messages(3).iter().map(|m| crlf(m).len()).collect();
    assert_eq!(c.ok("STAT"), format!("+OK 3 {}", total_size(3)));
    let list = c.ok_lines("LIST");
    let want: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} {n}", i + 1))
        .collect();
    assert_eq!(list, want);
    assert_eq!(c.ok("LIST 3"), format!("+OK 3 {}", sizes[2]));
    assert_bytes_eq(&c.ok_body("RETR 2"), &crlf(&message(2)), "RETR 2");
    assert_bytes_eq(&c.ok_body("TOP 2 1"), &top(&message(2), 1), "TOP 2 1");
    let uidl = c.ok_lines("UIDL");
    assert_eq!(uidl.len(), 3);
    assert_eq!(c.ok("UIDL 2"), format!("+OK {}", uidl[1]));
    c.ok("NOOP");
    c.ok("DELE 1");
    assert_eq!(c.ok("STAT"), format!("+OK 2 {}", sizes[1] + sizes[2]));
    c.ok("RSET");
    assert_eq!(c.ok("STAT"), format!("+OK 3 {}", total_size(3)));
    assert!(!c.capa().is_empty());
    c.quit();
    assert_eq!(
        s.read_spool("alice"),
        mbox(&messages(3)),
        "RSET undid nothing"
    );
}

#[test]
fn quit_in_authorization_closes_without_touching_mail() {
    let s = server();
    let mut c = s.greeted();
    c.ok("USER alice");
    c.quit();
    assert_eq!(s.read_spool("alice"), mbox(&messages(3)));
}

#[test]
fn pass_without_user_is_refused_and_the_session_goes_on() {
    let s = server();
    let mut c = s.greeted();
    single_err_in_authorization(&mut c, format!("PASS {}", ALICE.password).as_bytes());
    c.login(ALICE);
    c.quit();
}

#[test]
fn unknown_and_empty_commands_get_one_err_in_both_states() {
    let s = server();
    let mut c = s.greeted();
    for cmd in ["FROB", "XYZZY 1 2", "", "APOPX alice 0123"] {
        single_err_in_authorization(&mut c, cmd.as_bytes());
    }
    c.login(ALICE);
    for cmd in ["FROB", "XYZZY 1 2", "", "RETRX 1"] {
        single_err_in_transaction(&mut c, cmd);
    }
    c.quit();
}

#[test]
fn missing_and_extra_arguments_are_refused() {
    let s = server();
    let mut c = s.greeted();
    single_err_in_authorization(&mut c, b"USER");
    c.ok("USER alice");
    single_err_in_authorization(&mut c, b"PASS");
    c.login(ALICE);
    for cmd in [
        "STAT 1",
        "NOOP now",
        "RSET 1",
        "LIST 1 2",
        "UIDL 1 2",
        "RETR",
        "RETR 1 2",
        "DELE",
        "DELE 1 2",
        "TOP",
        "TOP 1",
        "TOP 1 2 3",
        "TOP 1 x",
        "TOP 1 -1",
        "TOP 1 99999999999999999999999",
    ] {
        single_err_in_transaction(&mut c, cmd);
    }
    // Nothing above deleted anything.
    assert_eq!(c.ok("STAT"), format!("+OK 3 {}", total_size(3)));
    c.quit();
    assert_eq!(s.read_spool("alice"), mbox(&messages(3)));
}

#[test]
fn bad_message_numbers_are_refused() {
    let s = server();
    let mut c = s.login(ALICE);
    let bad = [
        "0",
        "-1",
        "abc",
        "1x",
        "0x1",
        "4",
        "4294967295",
        "4294967296",
        "18446744073709551616",
        "99999999999999999999999999999999999",
    ];
    for n in bad {
        for cmd in [
            format!("RETR {n}"),
            format!("DELE {n}"),
            format!("LIST {n}"),
            format!("UIDL {n}"),
            format!("TOP {n} 0"),
        ] {
            single_err_in_transaction(&mut c, &cmd);
        }
    }
    assert_eq!(c.ok("STAT"), format!("+OK 3 {}", total_size(3)));
    c.quit();
    assert_eq!(s.read_spool("alice"), mbox(&messages(3)));
}

#[test]
fn deleted_messages_are_invisible() {
    let s = server();
    let mut c = s.login(ALICE);
    let sizes: Vec<usize> = messages(3).iter().map(|m| crlf(m).len()).collect();
    c.ok("DELE 2");
    for cmd in ["RETR 2", "DELE 2", "LIST 2", "UIDL 2", "TOP 2 0"] {
        single_err_in_transaction(&mut c, cmd);
    }
    assert_eq!(c.ok("STAT"), format!("+OK 2 {}", sizes[0] + sizes[2]));
    // Listings skip it but keep the other messages' numbers.
    assert_eq!(
        c.ok_lines("LIST"),
        vec![format!("1 {}", sizes[0]), format!("3 {}", sizes[2])]
    );
    let uidl = c.ok_lines("UIDL");
    assert_eq!(uidl.len(), 2);
    assert!(
        uidl[0].starts_with("1 ") && uidl[1].starts_with("3 "),
        "{uidl:?}"
    );
    assert_bytes_eq(&c.ok_body("RETR 3"), &crlf(&message(3)), "RETR 3");
    c.ok("RSET");
    assert_eq!(c.ok("LIST 2"), format!("+OK 2 {}", sizes[1]));
    c.quit();
    assert_eq!(s.read_spool("alice"), mbox(&messages(3)));
}

#[test]
fn overlong_lines_are_refused_and_skipped() {
    let s = server();
    let mut c = s.greeted();
    // 300 octets in AUTHORIZATION: more than RFC 2449's 255.
    let long_user = format!("USER {}", "a".repeat(295));
    single_err_in_authorization(&mut c, long_user.as_bytes());
    c.login(ALICE);
    // 1 MB in one line: refused once, never buffered whole, session goes on.
    let huge = format!("NOOP {}", "x".repeat(1 << 20));
    single_err_in_transaction(&mut c, &huge);
    // An overlong DELE is not executed, not even in part.
    let long_dele = format!("DELE 1{}", " ".repeat(400));
    single_err_in_transaction(&mut c, &long_dele);
    assert_eq!(c.ok("STAT"), format!("+OK 3 {}", total_size(3)));
    c.quit();
    assert_eq!(s.read_spool("alice"), mbox(&messages(3)));
}

#[test]
fn nul_bytes_are_an_error_not_a_crash() {
    let mut s = server();
    let mut c = s.greeted();
    single_err_in_authorization(&mut c, b"US\0ER alice");
    single_err_in_authorization(&mut c, b"\0");
    c.ok("USER alice");
    single_err_in_authorization(&mut c, format!("PASS {}\0", ALICE.password).as_bytes());
    c.login(ALICE);
    single_err_in_transaction(&mut c, "NO\0OP");
    single_err_in_transaction(&mut c, "RETR 1\0");
    c.quit();
    assert!(s.is_running(), "server died; log:\n{}", s.log());
    // The server still serves new sessions.
    s.login(ALICE).quit();
}

#[test]
fn bare_lf_ends_a_line() {
    let s = server();
    let mut c = s.greeted();
    c.send_raw(b"USER alice\n");
    assert_ok(&c.line(), "USER with bare LF");
    c.send_raw(format!("PASS {}\n", ALICE.password).as_bytes());
    assert_ok(&c.line(), "PASS with bare LF");
    c.send_raw(b"STAT\nLIST 1\n");
    assert_eq!(c.line(), format!("+OK 3 {}", total_size(3)));
    assert_eq!(c.line(), format!("+OK 1 {}", crlf(&message(1)).len()));
    c.quit();
}

#[test]
fn password_with_spaces_logs_in() {
    let s = ServerBuilder::new()
        .spool("carol", mbox(&messages(1)))
        .start();
    let mut c = s.greeted();
    c.login(CAROL);
    assert_eq!(c.ok("STAT"), format!("+OK 1 {}", crlf(&message(1)).len()));
    c.quit();
}

#[test]
fn failed_logins_get_auth_code_and_the_same_reply_for_unknown_users() {
    let s = server();
    let mut c = s.greeted();
    c.ok("USER alice");
    let wrong_pw = c.cmd("PASS not-the-password");
    assert!(
        wrong_pw.starts_with("-ERR [AUTH]"),
        "wrong password: {wrong_pw:?}"
    );
    let user_reply = c.cmd("USER nosuchuser");
    assert_ok(&user_reply, "USER of an unknown user (must not reveal it)");
    let unknown = c.cmd("PASS not-the-password");
    assert_eq!(
        unknown, wrong_pw,
        "unknown user and wrong password must look alike"
    );
    // A failure is not the end: the right password still works.
    c.login(ALICE);
    assert_eq!(c.ok("STAT"), format!("+OK 3 {}", total_size(3)));
    c.quit();
    assert!(
        !s.log().contains("not-the-password") && !s.log().contains(ALICE.password),
        "a password appeared in the log:\n{}",
        s.log()
    );
}

#[test]
fn capa_lists_what_works_in_each_state() {
    let s = server();
    let mut c = s.greeted();
    let auth_caps = c.capa();
    let names = |caps: &[String]| -> Vec<String> {
        caps.iter()
            .map(|l| l.split(' ').next().unwrap_or("").to_ascii_uppercase())
            .collect()
    };
    let auth_names = names(&auth_caps);
    for want in [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "PIPELINING",
        "AUTH-RESP-CODE",
        "IMPLEMENTATION",
    ] {
        assert!(
            auth_names.contains(&want.to_string()),
            "CAPA lacks {want}: {auth_caps:?}"
        );
    }
    // No TLS is configured, so STLS must not be offered.
    assert!(
        !auth_names.contains(&"STLS".to_string()),
        "STLS offered without TLS: {auth_caps:?}"
    );
    c.login(ALICE);
    let tx_caps = c.capa();
    let tx_names = names(&tx_caps);
    for want in ["TOP", "UIDL", "RESP-CODES", "PIPELINING"] {
        assert!(
            tx_names.contains(&want.to_string()),
            "CAPA in TRANSACTION lacks {want}: {tx_caps:?}"
        );
    }
    assert!(
        !tx_names.contains(&"USER".to_string()),
        "USER does not work in TRANSACTION but is advertised: {tx_caps:?}"
    );
    c.quit();
}

#[test]
fn plaintext_login_is_refused_when_policy_is_tls_only() {
    let s = ServerBuilder::new()
        .set("plaintext_auth", "tls-only")
        .spool("alice", mbox(&messages(1)))
        .start();
    let mut c = s.greeted();
    let caps = c.capa();
    assert!(
        !caps.iter().any(|l| l.eq_ignore_ascii_case("USER")),
        "USER advertised although plaintext logins are refused: {caps:?}"
    );
    let user = c.cmd("USER alice");
    if user.starts_with("+OK") {
        let pass = c.cmd(&format!("PASS {}", ALICE.password));
        assert_err(
            &pass,
            "PASS on a cleartext connection with plaintext_auth = tls-only",
        );
    } else {
        assert_err(&user, "USER with plaintext_auth = tls-only");
    }
    // Still in AUTHORIZATION.
    let stat = c.err("STAT");
    assert!(stat.contains("AUTHORIZATION"), "{stat:?}");
}

#[test]
fn a_whole_pipelined_session_in_one_write_is_answered_in_order() {
    let s = server();
    let msgs = messages(3);
    let sizes: Vec<usize> = msgs.iter().map(|m| crlf(m).len()).collect();
    let mut c = s.greeted();
    let script = format!(
        "CAPA\r\nUSER alice\r\nPASS {}\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\n\
         LIST 3\r\nDELE 1\r\nSTAT\r\nRETR 1\r\nRSET\r\nDELE 3\r\nNOOP\r\nQUIT\r\n",
        ALICE.password
    );
    c.send_raw(script.as_bytes());
    assert_ok(&c.line(), "CAPA");
    assert!(!c.multi_lines().is_empty());
    assert_ok(&c.line(), "USER");
    assert_ok(&c.line(), "PASS");
    assert_eq!(c.line(), format!("+OK 3 {}", total_size(3)));
    assert_ok(&c.line(), "LIST");
    assert_eq!(c.multi_lines().len(), 3);
    assert_ok(&c.line(), "UIDL");
    assert_eq!(c.multi_lines().len(), 3);
    assert_ok(&c.line(), "RETR 1");
    assert_bytes_eq(&c.multi_body(), &crlf(&msgs[0]), "pipelined RETR 1");
    assert_ok(&c.line(), "TOP 2 0");
    assert_bytes_eq(&c.multi_body(), &top(&msgs[1], 0), "pipelined TOP 2 0");
    assert_eq!(c.line(), format!("+OK 3 {}", sizes[2]));
    assert_ok(&c.line(), "DELE 1");
    assert_eq!(c.line(), format!("+OK 2 {}", sizes[1] + sizes[2]));
    assert_err(&c.line(), "RETR of a deleted message");
    assert_ok(&c.line(), "RSET");
    assert_ok(&c.line(), "DELE 3");
    assert_ok(&c.line(), "NOOP");
    assert_ok(&c.line(), "QUIT");
    let rest = c.expect_closed(IO_TIMEOUT);
    assert!(rest.is_empty(), "data after QUIT: {rest:?}");
    assert_eq!(s.read_spool("alice"), mbox_without(&msgs, &[3]));
}

#[test]
fn pipelined_commands_split_across_writes_are_answered_in_order() {
    let s = server();
    let mut c = s.login(ALICE);
    // A command cut in the middle, then finished together with the next one.
    c.send_raw(b"ST");
    std::thread::sleep(Duration::from_millis(50));
    c.send_raw(b"AT\r\nLIST 2\r\nNO");
    assert_eq!(c.line(), format!("+OK 3 {}", total_size(3)));
    assert_eq!(c.line(), format!("+OK 2 {}", crlf(&message(2)).len()));
    c.send_raw(b"OP\r\n");
    assert_ok(&c.line(), "NOOP");
    c.quit();
}

/// Total octets of messages 1..=n as sent.
fn total_size(n: usize) -> usize {
    messages(n).iter().map(|m| crlf(m).len()).sum()
}

#[test]
fn a_thousand_pipelined_commands_are_answered_in_order() {
    let s = server();
    let mut c = s.login(ALICE);
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!("LIST {}\r\n", i % 3 + 1));
    }
    batch.push_str("RETR 1\r\n");
    c.send_raw(batch.as_bytes());
    for i in 0..1000 {
        let n = i % 3 + 1;
        assert_eq!(
            c.line(),
            format!("+OK {n} {}", crlf(&message(n)).len()),
            "reply {i}"
        );
    }
    assert_ok(&c.line(), "RETR 1");
    assert_bytes_eq(
        &c.multi_body(),
        &crlf(&message(1)),
        "RETR 1 after 1000 LISTs",
    );
    c.quit();
}

#[test]
fn three_failed_logins_close_the_connection() {
    let s = server();
    let mut c = s.greeted();
    for i in 1..=3 {
        c.ok("USER alice");
        let r = c.cmd("PASS wrong");
        assert!(r.starts_with("-ERR [AUTH]"), "failure {i}: {r:?}");
    }
    let rest = c.expect_closed(IO_TIMEOUT);
    assert!(rest.is_empty(), "{rest:?}");
    // fail2ban needs the user and the client address on the failure lines.
    // The log reaches us through a pipe: give the last line a moment.
    let failures = || {
        s.log()
            .lines()
            .filter(|l| l.contains("fail") && l.contains("alice") && l.contains("127.0.0.1"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while failures() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        failures() >= 3,
        "failures not logged with user and address:\n{}",
        s.log()
    );
}
