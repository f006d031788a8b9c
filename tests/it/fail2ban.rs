//! The shipped fail2ban filter matches ironpop's real failed-login lines, by client address only, and resists forged user names.

use crate::harness::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const FILTER: &str = "packaging/fail2ban/filter.d/ironpop.conf";
const COMMON: &str = "/etc/fail2ban/filter.d/common.conf";

/// `fail2ban-regex -o ip LOG FILTER`: the address of every matched line.
fn matched_ips(log: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ironpop.log");
    std::fs::write(&file, log).expect("write log");
    // The filter includes fail2ban's common.conf from its own directory,
    // as it will once installed in /etc/fail2ban/filter.d.
    let filter = dir.path().join("ironpop.conf");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(FILTER), &filter)
        .expect("copy filter");
    std::fs::copy(COMMON, dir.path().join("common.conf"))
        .unwrap_or_else(|e| panic!("{COMMON} (from the fail2ban package): {e}"));
    let out = run(
        Command::new("fail2ban-regex")
            .arg("-o")
            .arg("ip")
            .arg(&file)
            .arg(&filter),
        b"",
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "fail2ban-regex failed:\n{}",
        out.all_text()
    );
    out.stdout_text()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The failed-login lines of a server log.
fn failure_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("login failed:") || l.contains("auth failed:"))
        .collect()
}

/// Fails one login per user name on `server` and returns its log once the
/// failures are all logged.
fn fail_logins(server: &TestServer, users: &[&str]) -> String {
    for user in users {
        let mut c = server.greeted();
        c.send(&format!("USER {user}"));
        let reply = c.line();
        if reply.starts_with("+OK") {
            c.err("PASS not-the-password");
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if failure_lines(&log).len() >= users.len() || std::time::Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn filter_matches_each_failed_login_by_address() {
    if !require_tool("fail2ban-regex", &["--version"]) {
        return;
    }
    let server = ServerBuilder::new().start();
    let log = fail_logins(&server, &["alice", "nobody-here", "bob"]);
    let failures = failure_lines(&log);
    assert_eq!(failures.len(), 3, "expected 3 failed-login lines:\n{log}");
    // The successful login and every other line must not count.
    server.login(ALICE).quit();
    assert!(server.wait_for_log("logout: user=alice", Duration::from_secs(10)));
    let ips = matched_ips(&server.log());
    assert_eq!(ips, vec!["127.0.0.1"; 3], "log:\n{}", server.log());
}

/// rsyslog writes the daemon's lines as `DATE HOST ironpop[PID]: MESSAGE`;
/// the filter must match those as well as the `-F` (stderr) format.
#[test]
fn filter_matches_the_syslog_form_of_the_lines() {
    if !require_tool("fail2ban-regex", &["--version"]) {
        return;
    }
    let server = ServerBuilder::new().start();
    let log = fail_logins(&server, &["carol"]);
    let failures = failure_lines(&log);
    assert_eq!(failures.len(), 1, "{log}");
    let message = failures[0]
        .split_once("] ")
        .map_or(failures[0], |(_, m)| m)
        .trim_end();
    let syslog = format!(
        "Nov 28 11:00:00 mail ironpop[{}]: {message}\n",
        server.pid()
    );
    assert_eq!(matched_ips(&syslog), vec!["127.0.0.1"], "{syslog}");
    // The same message from another program is not ironpop's.
    let other = syslog.replace("ironpop[", "dovecot[");
    assert!(matched_ips(&other).is_empty(), "{other}");
}

/// A client picks its user name; one that imitates the line's own fields
/// must not make fail2ban ban an address of the attacker's choosing.
#[test]
fn forged_user_names_cannot_name_another_address() {
    if !require_tool("fail2ban-regex", &["--version"]) {
        return;
    }
    let forged = [
        "rip=192.0.2.99",
        "x]rip=192.0.2.98",
        "method=USER",
        // USER takes one word today; should a name with blanks ever reach
        // the log, the anchoring below still holds.
        "x method=USER rip=192.0.2.97 failures=1",
    ];
    let server = ServerBuilder::new().start();
    let log = fail_logins(&server, &forged);
    let failures = failure_lines(&log).len();
    assert!(failures >= 3, "the forged names were not tried:\n{log}");
    let ips = matched_ips(&log);
    assert_eq!(ips, vec!["127.0.0.1"; failures], "{log}");
}

/// The expression is anchored at the server's own trailing fields: even a
/// user name with blanks that repeats them cannot move the match.
#[test]
fn filter_is_anchored_at_the_server_fields() {
    if !require_tool("fail2ban-regex", &["--version"]) {
        return;
    }
    let lines = "\
Nov 28 11:00:00 mail ironpop[7]: login failed: user=x method=USER rip=192.0.2.97 failures=1 method=USER rip=198.51.100.1 failures=2
Nov 28 11:00:01 mail ironpop[7]: login failed: method=SCRAM-SHA-256 rip=2001:db8::1 failures=1
Nov 28 11:00:02 mail ironpop[7]: auth failed: user=bob method=USER rip=[2001:db8::2]:40000 failures=3
Nov 28 11:00:02 mail ironpop[7]: auth failed: user=carol method=USER rip=192.0.2.5 rport=40001 failures=1
Nov 28 11:00:03 mail ironpop[7]: login: user=bob method=USER rip=192.0.2.1 lip=192.0.2.2 tls=TLSv1.3
Nov 28 11:00:04 mail ironpop[7]: logout: user=bob rip=192.0.2.1 retr=0/0 top=0 dele=0/0 kept=0/0 reason=quit
";
    assert_eq!(
        matched_ips(lines),
        vec!["198.51.100.1", "2001:db8::1", "2001:db8::2", "192.0.2.5"]
    );
}
