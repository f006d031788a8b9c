//! What the service survives: a flood of idle connections (eviction), a pool full of logged-in sessions (bounded queue), file-descriptor exhaustion, a helper failing one request, hanging on one, or dying.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::loopback::client_address;

const BUSY: &str = "-ERR [SYS/TEMP] server busy, try again";

#[test]
fn a_flood_of_idle_connections_cannot_lock_out_a_client_or_evict_a_logged_in_one() {
    let s = ServerBuilder::new()
        .set("max_sessions", "8")
        .set("auth_timeout", "60")
        .spool("alice", mbox(&messages(1)))
        .spool("bob", mbox(&messages(2)))
        .start();
    // Logged in first, then idle longer than anyone else.
    let mut alice = s.login(ALICE);
    let flood: Vec<TcpStream> = (0..32)
        .map(|i| {
            let c = crate::loopback::connect_from(s.addr(), client_address(i)).expect("connect");
            // Reaching the server before the next one keeps the order.
            std::thread::sleep(Duration::from_millis(20));
            c
        })
        .collect();
    let started = Instant::now();
    let mut fresh = Client::connect_from(s.addr(), client_address(1000));
    fresh.greeting();
    fresh.login(BOB);
    let body = fresh.ok_body("RETR 2");
    assert_bytes_eq(&body, &crlf(&messages(2)[1]), "RETR 2 during the flood");
    fresh.quit();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the fresh client waited {:?}",
        started.elapsed()
    );
    // The logged-in session was never the one evicted.
    alice.ok("STAT");
    alice.ok_body("RETR 1");
    alice.quit();
    // Evicted clients were told why, byte for byte, after their greeting.
    let mut told = 0;
    for stream in flood.into_iter().take(8) {
        let mut c = Client::from_stream(stream);
        c.set_read_timeout(Duration::from_secs(2));
        let lines: Vec<String> = std::iter::from_fn(|| c.read_raw_line().ok().flatten())
            .map(|l| String::from_utf8_lossy(&l).trim_end().to_string())
            .take(2)
            .collect();
        if let [greeting, busy] = lines.as_slice() {
            assert_ok(greeting, "greeting of a flood connection");
            assert_eq!(busy, BUSY, "the only other line is the eviction notice");
            told += 1;
        }
    }
    assert!(
        told > 0,
        "no early flood connection was evicted with {BUSY:?}"
    );
    assert!(
        s.wait_for_log("evicted an idle connection: rip=127.", IO_TIMEOUT),
        "{}",
        s.log()
    );
}

#[test]
fn when_every_worker_holds_a_logged_in_session_a_newcomer_waits_a_bounded_time() {
    let s = ServerBuilder::new()
        .set("max_sessions", "1")
        .spool("alice", mbox(&messages(1)))
        .start();
    let alice = s.login(ALICE);
    let mut waiting = s.connect();
    assert_eq!(
        waiting.line_within(Duration::from_millis(500)),
        None,
        "queued, not served, not refused"
    );
    let started = Instant::now();
    let line = waiting.line_within(Duration::from_secs(20));
    let waited = started.elapsed();
    assert_eq!(line.as_deref(), Some(BUSY), "after waiting {waited:?}");
    assert!(
        waited < Duration::from_secs(12),
        "queued for {waited:?}, more than the 10 s bound"
    );
    assert!(waiting.expect_closed(IO_TIMEOUT).is_empty());
    // A queued client is served as soon as the worker is free.
    let mut next = s.connect();
    assert_eq!(next.line_within(Duration::from_millis(500)), None);
    alice.quit();
    next.set_read_timeout(IO_TIMEOUT);
    next.greeting();
    next.login(ALICE);
    next.quit();
}

/// A root-run daemon (privileged helpers) for `user`, with `env` set.
fn daemon_with(
    user: &crate::system::SystemUser,
    env: &[(&str, &std::ffi::OsStr)],
) -> (crate::system::Setup, crate::system::Server) {
    let s = crate::system::setup(user, "");
    let mut cmd = std::process::Command::new(crate::system::BIN);
    cmd.arg("-F").arg("-f").arg(&s.conf);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let server = crate::system::Server::spawn(cmd);
    server.wait_log("ready:");
    (s, server)
}

fn pass(addr: &str, user: &str, password: &str) -> String {
    let mut c = crate::system::tcp(addr);
    c.cmd(&format!("USER {user}"));
    let reply = c.cmd(&format!("PASS {password}"));
    if reply.starts_with("+OK") {
        assert!(c.cmd("RETR 1").starts_with("+OK"));
        c.multi();
        assert!(c.cmd("QUIT").starts_with("+OK"));
    }
    reply
}

/// Arms the fault `marker` names: the next login fails with
/// `[SYS/TEMP]`, the fault fires once, and the login after it succeeds.
fn fault_fails_one_login(
    addr: &str,
    user: &crate::system::SystemUser,
    password: &str,
    marker: &std::path::Path,
    what: &str,
) {
    std::fs::write(marker, "").unwrap();
    let reply = pass(addr, &user.name, password);
    assert!(
        reply.starts_with("-ERR [SYS/TEMP]"),
        "login hit by the {what} fault: {reply:?}"
    );
    assert!(!marker.exists(), "the {what} fault fired once");
    let reply = pass(addr, &user.name, password);
    assert!(
        reply.starts_with("+OK"),
        "next login after {what}: {reply:?}"
    );
}

#[test]
fn a_helper_failing_one_request_fails_only_that_login() {
    require_root!();
    let user = crate::system::SystemUser::create("pw-1");
    let dir = tempfile::tempdir().unwrap();
    let (enobufs, panic) = (dir.path().join("enobufs"), dir.path().join("panic"));
    let (_s, server) = daemon_with(
        &user,
        &[
            ("IRONPOP_TEST_FAULT_REPLY_ENOBUFS", enobufs.as_os_str()),
            ("IRONPOP_TEST_FAULT_REQUEST_PANIC", panic.as_os_str()),
        ],
    );
    let addr = server.addr();
    let helpers = server.helpers();
    // The spool's descriptor cannot be passed (ENOBUFS), then a request
    // fails in the middle (a panic): each time that login only.
    for (marker, what) in [(&enobufs, "ENOBUFS"), (&panic, "panic")] {
        fault_fails_one_login(&addr, &user, "pw-1", marker, what);
    }
    assert_eq!(server.helpers(), helpers, "every helper still runs");
    server.wait_log("cannot pass a spool to the daemon");
    server.wait_log("a request failed unexpectedly (panic)");
}

#[test]
fn a_helper_hanging_on_one_request_fails_only_that_login_and_is_not_lost() {
    require_root!();
    let user = crate::system::SystemUser::create("pw-3");
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow");
    // The faulty request takes 5 s (privsep/helper.rs); the daemon waits 2.
    let (_s, server) = daemon_with(
        &user,
        &[
            ("IRONPOP_TEST_FAULT_REQUEST_SLOW", slow.as_os_str()),
            ("IRONPOP_TEST_HELPER_REPLY_TIMEOUT_MS", "2000".as_ref()),
        ],
    );
    let addr = server.addr();
    let helpers = server.helpers();
    assert!(helpers.len() >= 2, "at least two helpers: {helpers:?}");
    // Meanwhile another helper serves the next login.
    fault_fails_one_login(&addr, &user, "pw-3", &slow, "hang");
    // Its late reply is read and dropped; then it serves again.
    server.wait_log("answered late; the reply was discarded and the helper serves again");
    for _ in 0..3 {
        let reply = pass(&addr, &user.name, "pw-3");
        assert!(
            reply.starts_with("+OK"),
            "login after the late reply: {reply:?}"
        );
    }
    assert_eq!(server.helpers(), helpers, "no helper lost");
    let log = server.log();
    assert!(!log.contains("is given up"), "{log}");
    assert!(!log.contains("helpers left"), "{log}");
}

#[test]
fn the_daemon_serves_on_while_one_helper_lives() {
    require_root!();
    let user = crate::system::SystemUser::create("pw-2");
    let (_s, server) = daemon_with(&user, &[]);
    let addr = server.addr();
    let helpers = server.helpers();
    assert!(helpers.len() >= 2, "at least two helpers: {helpers:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helpers[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let line = server.wait_log("helpers left, serving on");
    assert!(line.contains(&format!("pid {}", helpers[0])), "{line}");
    for _ in 0..4 {
        let reply = pass(&addr, &user.name, "pw-2");
        assert!(
            reply.starts_with("+OK"),
            "login with one helper dead: {reply:?}"
        );
    }
    assert_eq!(server.helpers().len(), helpers.len() - 1);
}

/// The descriptor numbers the process `pid` has open, in order.
fn open_fds(pid: u32) -> Vec<u64> {
    let mut fds: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// The RLIMIT_NOFILE under which exactly `free` more descriptors can be
/// opened besides `open`. The limit bounds descriptor numbers, not their
/// count: a descriptor inherited at a high number (a build tool's pipe)
/// takes no slot below the limit, so the slots are counted, not the files.
fn limit_leaving(open: &[u64], free: usize) -> u64 {
    (0u64..)
        .filter(|n| open.binary_search(n).is_err())
        .nth(free - 1)
        .expect("a free descriptor number")
        + 1
}

#[test]
fn out_of_file_descriptors_one_login_fails_temporarily_and_the_rest_go_on() {
    if !crate::system::tool("prlimit") {
        return;
    }
    const HELD: usize = 3;
    let mut b = ServerBuilder::new().set("max_sessions", "16");
    for i in 0..=HELD {
        b = b
            .passwd_line(&format!("fd{i}:{{PLAIN}}secret-{i}"))
            .spool(&format!("fd{i}"), mbox(&messages(2)));
    }
    let s = b.start();
    let login = |i: usize| {
        let mut c = s.greeted();
        c.ok(&format!("USER fd{i}"));
        c.ok(&format!("PASS secret-{i}"));
        c
    };
    let held: Vec<Client> = (0..HELD).map(login).collect();
    // Exhausted: as many descriptors left as the update at QUIT opens
    // besides the session's own three (`limits::FDS_WHILE_LOCKED` with the
    // default lock methods): the dotlock, the journal and its directory.
    // The next connection's login runs out of them before it holds its
    // delivery locks (socket, spool, session lock: no room for the dotlock).
    const UPDATE_FDS: usize = 3;
    let settled = open_fds(s.pid());
    let limit = limit_leaving(&settled, UPDATE_FDS);
    // As root the server runs as nobody, and this root may lack
    // CAP_SYS_RESOURCE (containers): prlimit then acts as that same user.
    let mut prlimit = if crate::system::is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "prlimit",
        ]);
        c
    } else {
        std::process::Command::new("prlimit")
    };
    let set = prlimit
        .arg(format!("--pid={}", s.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .output()
        .expect("run prlimit");
    assert!(
        set.status.success(),
        "prlimit --pid --nofile: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    let mut extra = s.greeted();
    extra.ok(&format!("USER fd{HELD}"));
    let reply = extra.cmd(&format!("PASS secret-{HELD}"));
    assert!(
        reply.starts_with("-ERR [SYS/TEMP]"),
        "login past the descriptor limit: {reply:?}\n{}",
        s.log()
    );
    // Its worker notices the end of file and gives all its descriptors
    // back (not just the socket: the updates below need every spare one).
    drop(extra);
    let deadline = Instant::now() + IO_TIMEOUT;
    while open_fds(s.pid()) != settled {
        assert!(
            Instant::now() < deadline,
            "the refused connection's descriptors stay open: {:?}, before it {settled:?}",
            open_fds(s.pid())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The held sessions go on, deletions included; the daemon stays up.
    for (i, mut c) in held.into_iter().enumerate() {
        let body = c.ok_body("RETR 2");
        assert_bytes_eq(&body, &crlf(&messages(2)[1]), "RETR 2 while exhausted");
        c.ok("DELE 1");
        let reply = c.cmd("QUIT");
        assert!(
            reply.starts_with("+OK"),
            "QUIT of held session {i} under the limit {limit}: {reply:?}\n{}",
            s.log()
        );
        assert_bytes_eq(
            &s.read_spool(&format!("fd{i}")),
            &mbox_without(&messages(2), &[1]),
            "spool after QUIT while exhausted",
        );
    }
    let mut again = s.greeted();
    again.ok(&format!("USER fd{HELD}"));
    again.ok(&format!("PASS secret-{HELD}"));
    again.ok("STAT");
    again.quit();
}

/// The reply to USER/PASS, or `None` when the daemon no longer greets.
fn login_reply(addr: &str, user: &str, password: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("+OK") {
        return None;
    }
    writer
        .write_all(format!("USER {user}\r\nPASS {password}\r\n").as_bytes())
        .ok()?;
    line.clear();
    reader.read_line(&mut line).ok()?;
    line.clear();
    reader.read_line(&mut line).ok()?;
    Some(line)
}

#[test]
fn when_every_helper_hangs_for_good_the_daemon_stops_for_a_restart() {
    require_root!();
    let user = crate::system::SystemUser::create("pw-5");
    // The daemon waits 1 s for a reply, then 0.5 s more for the late one.
    let (_s, mut server) = daemon_with(
        &user,
        &[
            ("IRONPOP_TEST_HELPER_REPLY_TIMEOUT_MS", "1000".as_ref()),
            ("IRONPOP_TEST_HELPER_LATE_REPLY_MS", "500".as_ref()),
        ],
    );
    let addr = server.addr();
    let helpers = server.helpers();
    assert!(helpers.len() >= 2, "at least two helpers: {helpers:?}");
    // Every helper hangs, as on a lookup that never returns; killed at
    // the end whatever happens (a stopped process outlives its daemon).
    struct Hung(Vec<i32>);
    impl Drop for Hung {
        fn drop(&mut self) {
            for &pid in &self.0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _hung = Hung(helpers.clone());
    for &pid in &helpers {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
    }
    // Each login hangs one more helper's channel until it is given up.
    let mut refused = 0;
    while !server
        .log()
        .contains("no privileged helper answers any more")
    {
        assert!(refused < 20, "still serving:\n{}", server.log());
        let Some(reply) = login_reply(&addr, &user.name, "pw-5") else {
            break; // stopping already
        };
        assert!(
            reply.starts_with("-ERR [SYS/TEMP]"),
            "login with every helper hung: {reply:?}"
        );
        refused += 1;
    }
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", server.log());
    let log = server.log();
    assert!(
        log.contains("no privileged helper answers any more"),
        "{log}"
    );
}
