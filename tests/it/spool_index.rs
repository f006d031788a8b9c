//! The spool index end to end: later logins scan only new mail, and every kind of change to the spool or the index is noticed.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{self, crlf, split_mbox, ServerBuilder, TestServer, ALICE};
use crate::safety::Process;

/// A session serves exactly what the file holds: LIST sizes, RETR of
/// every message byte for byte, and UIDL as a full scan finds it; and,
/// reading only, leaves the file byte for byte as it was (the index lives
/// in `state_dir`, never in the mail).
fn serves_the_file(server: &TestServer) {
    let before = server.read_spool("alice");
    let want = split_mbox(&before);
    let mut c = server.greeted();
    c.ok("USER alice");
    let reply = c.cmd(&format!("PASS {}", ALICE.password));
    assert!(reply.starts_with("+OK"), "{reply}; log:\n{}", server.log());
    let list = c.ok_lines("LIST");
    assert_eq!(list.len(), want.len(), "LIST: {list:?}");
    for (i, msg) in want.iter().enumerate() {
        let body = c.ok_body(&format!("RETR {}", i + 1));
        harness::assert_bytes_eq(&body, &crlf(msg), &format!("RETR {}", i + 1));
        assert_eq!(list[i], format!("{} {}", i + 1, body.len()));
    }
    let uidl = c.ok_lines("UIDL");
    c.quit();
    harness::assert_bytes_eq(
        &server.read_spool("alice"),
        &before,
        "spool after a read-only session",
    );
    assert_eq!(uidl, fresh_uidl(server), "UIDL and a full scan's");
}

/// UIDL as a full scan finds it: a session with Alice's index moved
/// aside, which is then put back, so the test goes on as if this session
/// had not been.
fn fresh_uidl(server: &TestServer) -> Vec<String> {
    let index = find_index(server, "alice");
    let aside = server.dir().join("index.aside");
    if let Some(index) = &index {
        std::fs::rename(index, &aside).unwrap();
    }
    let mut c = server.login(ALICE);
    let uidl = c.ok_lines("UIDL");
    c.quit();
    let written = find_index(server, "alice");
    match (index, written) {
        (Some(index), _) => std::fs::rename(&aside, index).unwrap(),
        (None, Some(written)) => std::fs::remove_file(written).unwrap(),
        (None, None) => {}
    }
    uidl
}

/// Files the test creates as root must be the server's (nobody's).
fn owned_by_server(server: &TestServer) {
    if nix::unistd::getuid().is_root() {
        harness::give_to_nobody(server.dir());
    }
}

/// The server logged `needle` (its log reaches the test through a pipe
/// and a thread, which may lag behind the replies on a loaded machine).
fn logged(server: &TestServer, needle: &str) -> bool {
    let found = server.wait_for_log(needle, Duration::from_secs(10));
    if !found {
        eprintln!("no {needle:?} in the log:\n{}", server.log());
    }
    found
}

/// The server logged `needle` exactly `times` times (waiting for the log
/// to get there).
fn logged_times(server: &TestServer, needle: &str, times: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = server.log().matches(needle).count();
        if n == times {
            return true;
        }
        if n > times || Instant::now() >= deadline {
            eprintln!(
                "{needle:?} {n} times, not {times}, in the log:\n{}",
                server.log()
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn index_used(server: &TestServer, times: usize) -> bool {
    logged_times(server, "spool index used", times)
}

/// The index file of `user`'s spool in `state_dir`, if there is one.
fn find_index(server: &TestServer, user: &str) -> Option<PathBuf> {
    std::fs::read_dir(server.dir().join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(&format!("{user}.index")))
}

/// The index file of `user`'s spool in `state_dir`.
fn index_file(server: &TestServer, user: &str) -> PathBuf {
    find_index(server, user).unwrap_or_else(|| panic!("no index of {user}:\n{}", server.log()))
}

/// LIST and UIDL of one session of Alice's.
fn list_and_uidl(server: &TestServer) -> (Vec<String>, Vec<String>) {
    let mut c = server.login(ALICE);
    let list = c.ok_lines("LIST");
    let uidl = c.ok_lines("UIDL");
    c.quit();
    (list, uidl)
}

/// LIST and UIDL as a full scan finds them: a session after the index
/// was removed.
fn fresh_list_and_uidl(server: &TestServer) -> (Vec<String>, Vec<String>) {
    std::fs::remove_file(index_file(server, "alice")).unwrap();
    list_and_uidl(server)
}

fn server() -> TestServer {
    ServerBuilder::new()
        .set("log_level", "debug")
        .spool("alice", harness::mbox(&harness::messages(8)))
        .start()
}

#[test]
fn procmail_appends_are_scanned_alone() {
    if !harness::require_tool("procmail", &["-v"]) {
        return;
    }
    let server = server();
    serves_the_file(&server);
    let rc = server.dir().join("procmailrc");
    std::fs::write(&rc, "").unwrap();
    for n in 20..23 {
        let mut child = Command::new("procmail")
            .arg("-m")
            .arg(format!("DEFAULT={}", server.spool_path("alice").display()))
            .arg(&rc)
            .stdin(Stdio::piped())
            .spawn()
            .expect("run procmail");
        let mut msg = harness::FROM_LINE.to_vec();
        msg.extend_from_slice(&harness::message(n));
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &msg).unwrap();
        assert!(child.wait().unwrap().success());
    }
    serves_the_file(&server);
    assert!(index_used(&server, 1), "{}", server.log());
    assert!(logged(&server, "new bytes scanned"));
    assert!(!server.log().contains("spool index not used"));
}

#[test]
fn truncation_replacement_and_rewrites_are_noticed() {
    const NOT_USED: &str = "spool index not used";
    let server = server();
    let spool = server.spool_path("alice");
    serves_the_file(&server);
    // Truncated by a few bytes.
    let len = std::fs::metadata(&spool).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&spool)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    serves_the_file(&server);
    assert!(logged_times(&server, NOT_USED, 1), "after the truncation");
    // A local mail reader rewrites message 2's header in place, same size
    // (a clock tick after the last change, as in
    // a_same_length_edit_in_the_middle_is_noticed).
    std::thread::sleep(Duration::from_millis(30));
    let data = server.read_spool("alice");
    let at = harness::find(&data, b"Subject: test message 2").unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&spool)
        .unwrap();
    f.write_all_at(b"Subject: TEST MESSAGE 2\nMessage-ID: <x", at as u64)
        .unwrap();
    serves_the_file(&server);
    assert!(logged_times(&server, NOT_USED, 2), "after the rewrite");
    // Replaced by another file.
    let tmp = server.dir().join("mail/alice.new");
    std::fs::write(&tmp, harness::mbox(&harness::messages(3))).unwrap();
    std::fs::rename(&tmp, &spool).unwrap();
    owned_by_server(&server);
    serves_the_file(&server);
    assert!(logged_times(&server, NOT_USED, 3), "after the replacement");
}

/// A local program changes a header in the middle of a 300-message spool
/// in place, same length, nothing appended: sampling would miss it most
/// of the time, the stat does not.
#[test]
fn a_same_length_edit_in_the_middle_is_noticed() {
    let server = ServerBuilder::new()
        .set("log_level", "debug")
        .spool("alice", harness::mbox(&harness::messages(300)))
        .start();
    list_and_uidl(&server);
    let before = list_and_uidl(&server);
    assert!(index_used(&server, 1));
    // An edit in the same clock tick as the last change can keep the
    // file's times (the documented hole): let the tick pass.
    std::thread::sleep(Duration::from_millis(30));
    let data = server.read_spool("alice");
    let at = harness::find(&data, b"Message-ID: <150.").unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(server.spool_path("alice"))
        .unwrap();
    f.write_all_at(b"x", at as u64 + 13).unwrap();
    let after = list_and_uidl(&server);
    assert!(logged(
        &server,
        "spool index not used (the spool was written without growing)"
    ));
    assert!(index_used(&server, 1));
    assert_ne!(after.1[149], before.1[149], "UIDL 150 is the new one");
    assert_eq!(after.1[..149], before.1[..149]);
    assert_eq!(after, fresh_list_and_uidl(&server));
}

#[test]
fn damaged_or_foreign_indexes_are_not_used() {
    let server = server();
    serves_the_file(&server);
    let index = index_file(&server, "alice");
    let mut data = std::fs::read(&index).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(&index, &data).unwrap();
    // Meanwhile the spool loses its first message.
    let msgs = harness::messages(8);
    std::fs::write(server.spool_path("alice"), harness::mbox(&msgs[1..])).unwrap();
    serves_the_file(&server);
    assert!(logged(&server, "checksum"));
    // Bob's index copied over Alice's.
    std::fs::write(server.spool_path("bob"), harness::mbox(&msgs[..2])).unwrap();
    owned_by_server(&server);
    let c = server.login(harness::BOB);
    c.quit();
    std::fs::copy(index_file(&server, "bob"), &index).unwrap();
    serves_the_file(&server);
    assert!(logged(&server, "belongs to another spool"));
}

/// RETR and TOP of a message another program moved while the session
/// was open: `-ERR [SYS/TEMP]`, the index is dropped at once, and the
/// next session serves the file.
#[test]
fn retr_and_top_of_a_moved_message_are_refused_with_sys_temp() {
    let server = server();
    let msgs = harness::messages(8);
    for cmd in ["RETR 5", "TOP 5 0"] {
        std::fs::write(server.spool_path("alice"), harness::mbox(&msgs)).unwrap();
        serves_the_file(&server);
        assert!(find_index(&server, "alice").is_some(), "{cmd}: an index");
        let mut c = server.login(ALICE);
        // Another program removes message 1 while the session is open.
        std::fs::write(server.spool_path("alice"), harness::mbox(&msgs[1..])).unwrap();
        let reply = c.cmd(cmd);
        assert!(reply.starts_with("-ERR [SYS/TEMP] "), "{cmd}: {reply}");
        assert_eq!(find_index(&server, "alice"), None, "{cmd}: index dropped");
        c.quit();
        serves_the_file(&server);
    }
}

/// Random deliveries, sessions that DELE and QUIT, sessions of a second
/// daemon killed with SIGKILL in the middle or right after QUIT (in the
/// update or the index write), and edits by other programs: after each
/// step a session serves exactly what the file holds.
#[test]
fn random_histories_with_kill_9_agree_with_the_file() {
    let server = server();
    let spool = server.spool_path("alice");
    // Seed printed; IRONPOP_TEST_SEED replays a failing history.
    let mut rng = harness::Rng::seeded();
    let mut rnd = |n: u64| rng.below(n);
    let mut next = 100;
    for _ in 0..32 {
        match rnd(6) {
            0 => {
                next += 1;
                server.append_spool("alice", &harness::mbox(&[harness::message(next)]));
            }
            1 => {
                let mut c = server.login(ALICE);
                let n = c.ok_lines("LIST").len();
                for i in 1..=n {
                    if rnd(3) == 0 {
                        c.ok(&format!("DELE {i}"));
                    }
                }
                c.quit();
            }
            2 => {
                // Another daemon's session reads and deletes, then the
                // daemon dies before QUIT: nothing may change.
                let mut other = Process::start(server.config_path());
                let mut c = harness::Client::connect(other.addr);
                c.greeting();
                c.login(ALICE);
                if !c.ok_lines("LIST").is_empty() {
                    c.ok_body("RETR 1");
                    c.ok("DELE 1");
                }
                other.kill();
            }
            5 => {
                // Another daemon's session deletes and sends QUIT, and the
                // daemon is killed 0–3 ms later: before, during or after
                // the update and the index write. A restart finishes or
                // undoes the update (startup recovery).
                let mut other = Process::start(server.config_path());
                let mut c = harness::Client::connect(other.addr);
                c.greeting();
                c.login(ALICE);
                let n = c.ok_lines("LIST").len();
                for i in 1..=n {
                    if rnd(2) == 0 {
                        c.ok(&format!("DELE {i}"));
                    }
                }
                c.send("QUIT");
                std::thread::sleep(Duration::from_micros(rnd(3000)));
                other.kill();
                Process::start(server.config_path()).kill();
            }
            3 => {
                // A local program inserts a line in place (same inode).
                // After the first `From ` line: text before it is no mbox.
                let mut data = server.read_spool("alice");
                if let Some(line) = data.iter().position(|&b| b == b'\n') {
                    let at = line + 1 + rnd((data.len() - line - 1) as u64 + 1) as usize;
                    data.splice(at..at, b"X-Edited: yes\n".iter().copied());
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&spool)
                        .unwrap();
                    f.write_all_at(&data, 0).unwrap();
                }
            }
            _ => {
                let len = std::fs::metadata(&spool).unwrap().len();
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&spool)
                    .unwrap();
                f.set_len(len - rnd(len / 5 + 1)).unwrap();
            }
        }
        serves_the_file(&server);
    }
}

/// A message of about 10 KiB; every seventh with CRLF line ends.
fn ten_kib_message(n: usize) -> Vec<u8> {
    let end = if n % 7 == 0 { "\r\n" } else { "\n" };
    let mut m = format!(
        "From: Sender <sender@example.org>{end}Subject: large {n}{end}\
         Message-ID: <{n}.large@example.org>{end}{end}"
    );
    for line in 0..140 {
        m.push_str(&format!("message {n} line {line} {}{end}", "x".repeat(50)));
    }
    m.into_bytes()
}

/// `m` as RETR sends it: each bare LF as CRLF, a stored CRLF as it is.
fn as_sent(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + m.len() / 40);
    for (i, &b) in m.iter().enumerate() {
        if b == b'\n' && (i == 0 || m[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// A spool of 70 MiB, past `limits::SPLIT_SCAN_MIN_BYTES`, is scanned in
/// two halves at once at its first login. The session serves what one
/// scan finds — LIST sizes, the messages where the halves meet — and QUIT
/// deletes messages on both sides of the middle, which it does only when
/// each one's content hash from the scan still matches the file.
#[test]
fn a_spool_scanned_in_two_halves_serves_and_deletes_as_one_scan() {
    let msgs: Vec<Vec<u8>> = (1..=7000).map(ten_kib_message).collect();
    let spool = harness::mbox(&msgs);
    assert!(spool.len() > 64 << 20, "{} bytes", spool.len());
    let server = ServerBuilder::new().spool("alice", spool).start();
    let mut c = server.login(ALICE);
    let list = c.ok_lines("LIST");
    assert_eq!(list.len(), msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(list[i], format!("{} {}", i + 1, as_sent(m).len()));
    }
    for n in 3490..=3510 {
        let body = c.ok_body(&format!("RETR {n}"));
        harness::assert_bytes_eq(&body, &as_sent(&msgs[n - 1]), &format!("RETR {n}"));
    }
    let uidl = c.ok_lines("UIDL");
    let distinct: std::collections::HashSet<_> = uidl.iter().map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(distinct.len(), msgs.len(), "one UID per message");
    let deleted = [3400, 3600, 6990];
    for n in deleted {
        c.ok(&format!("DELE {n}"));
    }
    c.quit();
    harness::assert_bytes_eq(
        &server.read_spool("alice"),
        &harness::mbox_without(&msgs, &deleted),
        "spool after deleting on both sides of the middle",
    );
}
