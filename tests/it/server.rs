//! The daemon around the sessions: admission limits, timeouts, listeners, command line.

use crate::harness::*;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

#[test]
fn per_address_limit_refuses_the_extra_connection() {
    let s = ServerBuilder::new()
        .set("max_sessions", "8")
        .set("max_sessions_per_ip", "2")
        .start();
    let a = s.greeted();
    let b = s.greeted();
    let mut c = s.connect();
    let reply = c.line();
    assert_err(
        &reply,
        "third connection from one address with max_sessions_per_ip = 2",
    );
    c.expect_closed(IO_TIMEOUT);
    a.quit();
    // b's slot is still taken; a's has been freed once the server notices.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = s.connect();
        let l = d.line();
        if l.starts_with("+OK") {
            d.quit();
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed: {l:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.quit();
}

#[test]
fn auth_timeout_closes_an_idle_unauthenticated_session() {
    let s = ServerBuilder::new().set("auth_timeout", "1").start();
    let mut c = s.greeted();
    let start = Instant::now();
    let lines = c.expect_closed(Duration::from_secs(8));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "closed after {took:?}, before the timeout"
    );
    assert!(
        lines.len() <= 1,
        "more than one line before closing: {lines:?}"
    );
    for l in &lines {
        assert!(l.starts_with("-ERR"), "{l:?}");
    }
}

#[test]
fn idle_timeout_closes_a_transaction_session_without_update() {
    let msgs = messages(2);
    let s = ServerBuilder::new()
        .set("idle_timeout", "1")
        .spool("alice", mbox(&msgs))
        .start();
    let mut c = s.login(ALICE);
    c.ok("DELE 1");
    let start = Instant::now();
    let lines = c.expect_closed(Duration::from_secs(8));
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "closed too early"
    );
    assert!(lines.len() <= 1, "{lines:?}");
    assert_eq!(
        s.read_spool("alice"),
        mbox(&msgs),
        "autologout deleted mail"
    );
}

#[test]
fn ipv6_and_ipv4_listeners_side_by_side() {
    if TcpListener::bind("[::1]:0").is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("no IPv6 loopback (::1) on this CI machine");
        }
        crate::system::not_run("this machine has no IPv6 loopback (::1)");
        return;
    }
    let s = ServerBuilder::new()
        .listen(&["127.0.0.1:0", "[::1]:0"])
        .spool("alice", mbox(&messages(1)))
        .start();
    let v4: Vec<SocketAddr> = s.addrs().iter().copied().filter(|a| a.is_ipv4()).collect();
    let v6: Vec<SocketAddr> = s.addrs().iter().copied().filter(|a| a.is_ipv6()).collect();
    assert_eq!((v4.len(), v6.len()), (1, 1), "listeners: {:?}", s.addrs());
    for addr in [v4[0], v6[0]] {
        let mut c = Client::connect(addr);
        c.greeting();
        // ::1 is loopback too, so plaintext_auth = localhost allows it.
        c.login(ALICE);
        c.ok("STAT");
        c.quit();
    }
}

/// Server CPU seconds (helpers included) for `attempts` failed USER/PASS
/// of `user`, each from its own loopback address so the throttle never
/// blocks one (`first` numbers the addresses).
fn failure_cpu(s: &TestServer, user: &str, attempts: u8, first: u8) -> f64 {
    let before = s.cpu_seconds();
    for k in 0..attempts {
        let src = std::net::Ipv4Addr::new(127, 11, first, k + 1);
        let mut c = Client::from_stream(crate::cluster::connect_from(s.addr(), src));
        c.greeting();
        c.ok(&format!("USER {user}"));
        let r = c.cmd("PASS wrong-password");
        assert!(r.starts_with("-ERR [AUTH]"), "{r:?}");
    }
    // The check is done when the reply is sent; the accounting is current.
    s.cpu_seconds() - before
}

// What is compared is the server's CPU time, not the wall clock, so the
// load of the machine does not decide it: a real yescrypt hash for alice,
// the decoy for an unknown user, a locked entry and an entry whose scheme
// ironpop cannot verify. Without the decoy each of those would cost ~100x
// less; a 2x margin each way leaves room for tick rounding.
#[test]
fn unknown_users_cost_what_a_wrong_password_costs() {
    let s = ServerBuilder::new()
        .set("auth_fail_delay", "0")
        .passwd_line("locked:!$y$j9T$abcdefghijklmnop$0123456789012345678901234567890123456789012")
        .passwd_line("unusable:{MD5}X03MO1qnZdYdgyfeuILPmQ==")
        .start();
    let users = ["alice", "nobody-here", "locked", "unusable"];
    let mut cpu = [0.0; 4];
    for round in 0..2u8 {
        for (i, user) in (0u8..).zip(users) {
            cpu[usize::from(i)] += failure_cpu(&s, user, 8, 4 * round + i);
        }
    }
    let known = cpu[0];
    for (user, other) in users.iter().zip(cpu).skip(1) {
        assert!(
            other * 2.0 >= known && known * 2.0 >= other,
            "CPU for 16 failures of a known user {known:.3} s, of {user:?} {other:.3} s"
        );
    }
    assert!(
        s.log().contains("unknown users cost a $y$j9T check"),
        "{}",
        s.log()
    );
}

// A passwd file of mostly {PLAIN} entries: an unknown user costs a
// compare, not a hash (no login pays for a hash its entry does not have),
// and so does a {PLAIN} entry's wrong password; alice's yescrypt entry
// still costs its hash.
#[test]
fn a_plain_passwd_file_answers_without_hashing() {
    let mut b = ServerBuilder::new().set("auth_fail_delay", "0");
    for i in 0..4 {
        b = b.passwd_line(&format!("plain{i}:{{PLAIN}}secret-{i}"));
    }
    let s = b.start();
    let hashed = failure_cpu(&s, "alice", 8, 10);
    let unknown = failure_cpu(&s, "nobody-here", 8, 11);
    let plain = failure_cpu(&s, "plain0", 8, 12);
    assert!(
        unknown * 4.0 < hashed && plain * 4.0 < hashed,
        "CPU for 8 failures: yescrypt entry {hashed:.3} s, unknown user {unknown:.3} s, \
         {{PLAIN}} entry {plain:.3} s"
    );
    assert!(
        s.log().contains("unknown users cost a {PLAIN} check"),
        "{}",
        s.log()
    );
    let mut c = s.greeted();
    c.ok("USER plain3");
    c.ok("PASS secret-3");
    c.quit();
}

#[test]
fn failure_replies_wait_auth_fail_delay_for_known_and_unknown_users() {
    let s = ServerBuilder::new().set("auth_fail_delay", "1").start();
    let mut c = s.greeted();
    for user in ["alice", "nobody-here"] {
        c.ok(&format!("USER {user}"));
        let start = Instant::now();
        let r = c.cmd("PASS wrong-password");
        let took = start.elapsed();
        assert!(r.starts_with("-ERR [AUTH]"), "{r:?}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(6),
            "failure reply for {user} after {took:?}, auth_fail_delay = 1"
        );
    }
}

#[test]
fn hashed_passwords_from_hash_password_log_in() {
    let h1 = hash_password("s3cret pass");
    let h2 = hash_password("s3cret pass");
    assert_ne!(h1, h2, "two hashes of one password are equal: no salt?");
    let s = ServerBuilder::new()
        .passwd_line(&format!("dave:{h1}"))
        .passwd_line(&format!("erin:{{CRYPT}}{h2}"))
        .start();
    for user in ["dave", "erin"] {
        let mut c = s.greeted();
        c.ok(&format!("USER {user}"));
        c.ok("PASS s3cret pass");
        c.quit();
        let mut c = s.greeted();
        c.ok(&format!("USER {user}"));
        assert!(c.cmd("PASS s3cret pas").starts_with("-ERR [AUTH]"));
    }
}

// Fixed hashes made with `openssl passwd -6` and libxcrypt's bcrypt.
const SHA512_HASH: &str = "$6$ironpoptestsalt$PHzvZhNyaU/spC6BH3A6/yiRo0HVOH6WS3fh8vcrSuF8D9YSUccpNnucdtlqq/nUlY/FzNcRenhDR7grVEXI8.";
const BCRYPT_HASH: &str = "$2b$05$abcdefghijklmnopqrstuuWp3GZVuDcmowH58GUC1m3Zb.EZQERc6";

#[test]
fn sha512_bcrypt_dovecot_schemes_and_plain_entries_log_in() {
    let s = ServerBuilder::new()
        .passwd_line(&format!("sha:{SHA512_HASH}"))
        .passwd_line(&format!("shadove:{{SHA512-CRYPT}}{SHA512_HASH}"))
        .passwd_line(&format!("bf:{BCRYPT_HASH}"))
        // Dovecot's documented layout with the optional fields left empty.
        .passwd_line(&format!("bfdove:{{BLF-CRYPT}}{BCRYPT_HASH}::::::"))
        .passwd_line("cleartext-user:{PLAIN}plain-secret")
        .start();
    for (user, pw) in [
        ("sha", "sha-secret"),
        ("shadove", "sha-secret"),
        ("bf", "bf-secret"),
        ("bfdove", "bf-secret"),
        ("cleartext-user", "plain-secret"),
    ] {
        let mut c = s.greeted();
        c.ok(&format!("USER {user}"));
        let r = c.cmd(&format!("PASS {pw}"));
        assert!(r.starts_with("+OK"), "{user}: {r:?}");
        c.quit();
        let mut c = s.greeted();
        c.ok(&format!("USER {user}"));
        let r = c.cmd(&format!("PASS {pw}x"));
        assert!(
            r.starts_with("-ERR [AUTH]"),
            "{user} with a wrong password: {r:?}"
        );
    }
    // The warning may be logged at load time or at the first use.
    let warned = || {
        s.log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("cleartext-user"))
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !warned() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        warned(),
        "a {{PLAIN}} password was accepted without a warning in the log:\n{}",
        s.log()
    );
}

// ------------------------------------------------------------- command line

fn write_conf(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("ironpop.conf");
    let mut f = std::fs::File::create(&p).expect("create config");
    f.write_all(text.as_bytes()).expect("write config");
    p
}

#[test]
fn check_config_prints_every_key_with_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_conf(
        dir.path(),
        &format!(
            "# a comment\n\nlisten = 127.0.0.1:1110\nlisten = [::1]:1110\nmax_sessions = 3\n\
             {}",
            crate::check_config::usable_lines(dir.path()).replace("listen = 127.0.0.1:0\n", "")
        ),
    );
    let out = ironpop(&["-t", "-f", conf.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "ironpop -t on a valid config: {out:?}"
    );
    let text = out.stdout_text();
    let keys = [
        "listen",
        "listen_tls",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "tls_cert_user",
        "plaintext_auth",
        "user",
        "group",
        "passdb",
        "mailbox",
        "state_dir",
        "pid_file",
        "max_sessions",
        "max_sessions_per_ip",
        "auth_timeout",
        "idle_timeout",
        "auth_fail_delay",
        "lock_methods",
        "lock_timeout",
        "proxy_protocol_from",
        "syslog_facility",
        "log_level",
    ];
    for key in keys {
        assert!(
            text.lines().any(|l| {
                // An unset key may be printed as a comment naming it.
                let l = l.trim_start_matches(['#', ' ']);
                l.split([' ', '=']).next() == Some(key)
            }),
            "`ironpop -t` does not print {key}:\n{text}"
        );
    }
    let has = |line: &str| text.lines().any(|l| l.trim() == line);
    assert!(has("max_sessions = 3"), "{text}");
    assert!(has("plaintext_auth = localhost"), "{text}");
    for addr in ["127.0.0.1:1110", "[::1]:1110"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("listen ") && l.contains(addr)),
            "listen {addr} not printed:\n{text}"
        );
    }
    assert!(
        has("max_sessions_per_ip = 16"),
        "default not printed:\n{text}"
    );
    assert!(has("lock_timeout = 30"), "default not printed:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("idle_timeout") && l.contains("600")),
        "{text}"
    );
}

#[test]
fn check_config_names_file_and_line_of_a_typo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_conf(
        dir.path(),
        "listen = 127.0.0.1:1110\n# fine so far\nmax_sessions = 3\nmax_sesions = 4\n",
    );
    let path = conf.to_str().expect("utf-8 path");
    let out = ironpop(&["-t", "-f", path]);
    assert!(!out.status.success(), "a typo was accepted: {out:?}");
    let text = out.all_text();
    assert!(
        text.contains(&format!("{path}:4")),
        "error does not name {path}:4:\n{text}"
    );
    assert!(
        text.contains("max_sesions"),
        "error does not name the key:\n{text}"
    );
}

#[test]
fn check_config_names_file_and_line_of_a_bad_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (body, line) in [
        ("max_sessions = many\n", 1),
        ("# c\nplaintext_auth = sometimes\n", 2),
        ("listen = 127.0.0.1:1110\n\nauth_timeout = -5\n", 3),
        ("listen = not-an-address\n", 1),
        ("this line has no equals sign\n", 1),
    ] {
        let conf = write_conf(dir.path(), body);
        let path = conf.to_str().expect("utf-8 path");
        let out = ironpop(&["-t", "-f", path]);
        assert!(!out.status.success(), "{body:?} accepted: {out:?}");
        assert!(
            out.all_text().contains(&format!("{path}:{line}")),
            "error for {body:?} does not name {path}:{line}:\n{}",
            out.all_text()
        );
    }
}

#[test]
fn check_config_fails_on_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.conf");
    let p = path.to_str().expect("utf-8 path");
    let out = ironpop(&["-t", "-f", p]);
    assert!(!out.status.success(), "missing config accepted: {out:?}");
    assert!(
        out.all_text().contains(p),
        "error does not name {p}:\n{}",
        out.all_text()
    );
}

#[test]
fn daemon_refuses_to_start_on_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_conf(dir.path(), "listen = 127.0.0.1:0\nbogus_key = 1\n");
    let path = conf.to_str().expect("utf-8 path");
    let out = ironpop(&["-F", "-f", path]);
    assert!(
        !out.status.success(),
        "daemon started on a bad config: {out:?}"
    );
    assert!(
        out.all_text().contains(&format!("{path}:2")),
        "{}",
        out.all_text()
    );
}

#[test]
fn help_and_version() {
    let out = ironpop(&["-h"]);
    assert!(out.status.success(), "-h: {out:?}");
    let help = out.all_text();
    for opt in ["-f", "-F", "-t", "--demo", "--hash-password", "-V", "-h"] {
        assert!(help.contains(opt), "-h does not mention {opt}:\n{help}");
    }
    let out = ironpop(&["-V"]);
    assert!(out.status.success(), "-V: {out:?}");
    let v = out.all_text();
    assert!(
        v.contains("ironpop") && v.contains(env!("CARGO_PKG_VERSION")),
        "-V printed {v:?}"
    );
    let out = ironpop(&["--no-such-option"]);
    assert!(!out.status.success(), "an unknown option was accepted");
    assert!(out.all_text().contains("ironpop -h"), "{}", out.all_text());
}

#[test]
fn the_test_config_itself_passes_check_config() {
    let s = ServerBuilder::new().set("max_sessions", "7").start();
    let out = ironpop(&["-t", "-f", s.config_path().to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout_text()
            .lines()
            .any(|l| l.trim() == "max_sessions = 7"),
        "{}",
        out.stdout_text()
    );
}

#[test]
fn sigterm_stops_an_idle_server() {
    let mut s = ServerBuilder::new().start();
    s.login(ALICE).quit();
    let pid = nix::unistd::Pid::from_raw(s.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.is_running() {
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::net::TcpStream::connect_timeout(&s.addr(), Duration::from_secs(2)).is_err(),
        "still accepting after SIGTERM"
    );
}

#[test]
fn sigterm_closes_open_sessions_without_update() {
    let msgs = messages(2);
    let mut s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let mut c = s.login(ALICE);
    c.ok("DELE 1");
    let pid = nix::unistd::Pid::from_raw(s.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    // The session is idle: after the grace period it is cut, not updated.
    c.expect_closed(Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.is_running() {
        assert!(
            Instant::now() < deadline,
            "still running after SIGTERM:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        s.read_spool("alice"),
        mbox(&msgs),
        "shutdown applied a deletion"
    );
}

/// A free loopback port no parallel test's port-0 bind can take.
fn free_port() -> u16 {
    crate::ports::unassigned_port(&[std::net::Ipv4Addr::LOCALHOST], &[])
}

#[test]
fn without_f_the_daemon_detaches_and_writes_its_pid_file() {
    let s = ServerBuilder::new()
        .spool("alice", mbox(&messages(1)))
        .start();
    // Same accounts and spools, but a fixed port and no -F.
    let port = free_port();
    let conf = s.dir().join("detached.conf");
    let text = std::fs::read_to_string(s.config_path())
        .expect("config")
        .replace(
            "listen = 127.0.0.1:0",
            &format!("listen = 127.0.0.1:{port}"),
        )
        .replace("ironpop.pid", "detached.pid");
    std::fs::write(&conf, text).expect("write config");
    let out = ironpop(&["-f", conf.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "ironpop without -F: {out:?}");
    let pid_file = s.dir().join("detached.pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no pid file {}",
            pid_file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    // Stop the detached daemon whatever happens below.
    struct Reaper(nix::unistd::Pid);
    impl Drop for Reaper {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _reaper = Reaper(pid);
    assert!(
        nix::sys::signal::kill(pid, None).is_ok(),
        "pid {pid} from the pid file is not running"
    );
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    c.greeting();
    c.login(ALICE);
    c.ok("STAT");
    // Nothing it holds leaks into a program it runs (the pid file keeper's
    // pipe included: an heir holding it would keep a dead daemon's pid file).
    // (What this test process hands down itself, a job server's pipe say,
    // the daemon inherits as it is; only its own descriptors count.)
    let handed_down = descriptors_without_cloexec(std::process::id() as i32);
    let leaking: Vec<_> = descriptors_without_cloexec(pid.as_raw())
        .into_iter()
        .filter(|d| !handed_down.contains(d))
        .collect();
    assert!(
        leaking.is_empty(),
        "descriptors without O_CLOEXEC: {leaking:?}"
    );
    c.quit();
    // The daemon left the foreground process group: it is its own session.
    let sid = nix::unistd::getsid(Some(pid)).expect("getsid");
    assert_ne!(
        sid,
        nix::unistd::getsid(None).expect("getsid"),
        "daemon shares our session"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while nix::sys::signal::kill(pid, None).is_ok() {
        assert!(Instant::now() < deadline, "detached daemon ignores SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The descriptors above stderr of process `pid` that a program it
/// executes would inherit, with what they are.
fn descriptors_without_cloexec(pid: i32) -> Vec<String> {
    const O_CLOEXEC: u32 = 0o2_000_000;
    let mut leaking = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd") {
        let name = entry.expect("fd entry").file_name();
        let fd: u32 = name
            .to_str()
            .and_then(|n| n.parse().ok())
            .expect("fd number");
        // Gone in between (a descriptor closed meanwhile): nothing to check.
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .expect("flags in fdinfo");
        if fd > 2 && flags & O_CLOEXEC == 0 {
            let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"));
            leaking.push(format!("{fd} -> {target:?}"));
        }
    }
    leaking
}
