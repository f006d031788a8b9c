//! Operations end to end: `--who`, `--kick` and `--stats` against a running daemon, its control socket's limits and permissions.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::*;
use crate::tls::{pop3s_addr, Pki, TlsClient};

/// `ironpop ARGS -f CONF`.
fn control(conf: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("-f").arg(conf);
    run(&mut cmd, b"", IO_TIMEOUT)
}

/// The `--stats` value of `name`.
fn stat(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(name)).then(|| words.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {name} in:\n{stats}"))
}

/// One raw request on the control socket; the whole reply.
fn raw_request(socket: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = s.write_all(request);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// One login as alice with a wrong password.
fn failed_login(server: &TestServer) {
    let mut failed = server.greeted();
    failed.ok(&format!("USER {}", ALICE.user));
    assert!(failed.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    failed.quit();
}

#[test]
fn who_kick_and_stats_with_a_plain_and_a_tls_session() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path(), "ops");
    let (crt, key) = pki.leaf("server", "localhost", false, false);
    let alice_spool = mbox(&messages(3));
    let server = ServerBuilder::new()
        .spool("alice", alice_spool.clone())
        .spool("bob", mbox(&messages(1)))
        .line("listen_tls = 127.0.0.1:0")
        .line(&format!("tls_cert = {}", crt.display()))
        .line(&format!("tls_key = {}", key.display()))
        .start();
    let conf = server.config_path().to_path_buf();
    let socket = server.dir().join("control");
    let (plain, tls) = (server.addr(), pop3s_addr(&server));

    // Exactly one failed and two successful logins.
    failed_login(&server);
    let mut alice = server.login(ALICE);
    alice.ok("DELE 1");
    let mut bob = TlsClient::implicit(pki.rustls_client(None), tls);
    assert!(bob.cmd(&format!("USER {}", BOB.user)).starts_with("+OK"));
    assert!(bob
        .cmd(&format!("PASS {}", BOB.password))
        .starts_with("+OK"));
    let _unauthenticated = server.greeted();

    let who = control(&conf, &["--who"]);
    assert!(who.status.success(), "{}", who.all_text());
    let text = who.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "header and three sessions:\n{text}");
    let fields = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        fields(0),
        ["USER", "CLIENT", "PORT", "TLS", "STATE", "SINCE", "(UTC)", "SENT", "COMMANDS"]
    );
    let port = |a: std::net::SocketAddr| a.port().to_string();
    let (a, b, u) = (fields(1), fields(2), fields(3));
    assert_eq!(
        a[..5],
        [ALICE.user, "127.0.0.1", &port(plain), "none", "TRANSACTION"]
    );
    assert_eq!(a[8], "3", "USER, PASS, DELE");
    assert_eq!(
        b[..5],
        [BOB.user, "127.0.0.1", &port(tls), "TLSv1.3", "TRANSACTION"]
    );
    assert_eq!(
        u[..5],
        ["-", "127.0.0.1", &port(plain), "none", "AUTHORIZATION"]
    );
    assert_eq!(u[5], "-", "not logged in: no since");

    let stats = control(&conf, &["--stats"]);
    assert!(stats.status.success(), "{}", stats.all_text());
    let stats = stats.stdout_text();
    assert_eq!(stat(&stats, "logins_failed_user"), 1, "{stats}");
    assert_eq!(stat(&stats, "logins_succeeded_user"), 2, "{stats}");
    // The failed session's slot may not be given back quite yet.
    assert!(stat(&stats, "sessions_now") >= 3, "{stats}");
    assert_eq!(stat(&stats, "connections_accepted"), 4, "{stats}");

    let kick = control(&conf, &["--kick", ALICE.user]);
    assert!(kick.status.success(), "{}", kick.all_text());
    assert_eq!(
        kick.stdout_text(),
        format!("ended 1 session of user {}\n", ALICE.user)
    );
    assert_eq!(
        alice.line(),
        "-ERR [SYS/TEMP] session ended by the administrator"
    );
    assert!(alice.read_raw_line().unwrap().is_none(), "then closed");
    // Alice's DELE was not applied: no UPDATE.
    assert_eq!(server.read_spool("alice"), alice_spool);
    assert!(bob.cmd("STAT").starts_with("+OK 1 "), "bob goes on");

    let none = control(&conf, &["--kick", "192.0.2.99"]);
    assert_eq!(none.status.code(), Some(1), "{}", none.all_text());
    assert_eq!(none.stdout_text(), "ended 0 sessions from 192.0.2.99\n");

    // Malformed and oversized requests get an error; the daemon goes on.
    assert_eq!(
        raw_request(&socket, b"BOGUS\n"),
        "ERR unknown request (WHO, STATS or KICK target)\n.\n"
    );
    assert_eq!(
        raw_request(&socket, &[b'W'; 5000]),
        "ERR request too long (at most 256 octets)\n.\n"
    );
    assert_eq!(
        raw_request(&socket, b"KICK a b\n"),
        "ERR KICK target must be one word of printable characters\n.\n"
    );
    let after = control(&conf, &["--stats"]).stdout_text();
    assert_eq!(stat(&after, "sessions_kicked"), 1, "{after}");
    assert!(bob.cmd("NOOP").starts_with("+OK"));

    let metrics = control(&conf, &["--stats", "--openmetrics"]);
    assert!(metrics.status.success(), "{}", metrics.all_text());
    let metrics = metrics.stdout_text();
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert!(
        metrics.contains("ironpop_logins_succeeded_total{method=\"USER\"} 2\n"),
        "{metrics}"
    );
    check_openmetrics(&metrics);
}

/// Python's `prometheus_client` OpenMetrics parser accepts the text, and
/// finds the login counters in it. Debian's python3, which
/// python3-prometheus-client installs for (not a python3 earlier in PATH).
fn check_openmetrics(text: &str) {
    const DEBIAN_PYTHON: &str = "/usr/bin/python3";
    if !crate::system::tool(DEBIAN_PYTHON) {
        return;
    }
    let script = r#"
import sys
try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError:
    print("MISSING python3-prometheus-client"); sys.exit(3)
families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
ok = [s for s in families["ironpop_logins_succeeded"].samples if s.labels.get("method") == "USER"]
assert families["ironpop_logins_succeeded"].type == "counter"
assert ok[0].value == 2, ok
assert families["ironpop_uptime_seconds"].type == "gauge"
print("parsed", len(families))
"#;
    let out = run(
        Command::new(DEBIAN_PYTHON).arg("-c").arg(script),
        text.as_bytes(),
        IO_TIMEOUT,
    );
    if out.status.code() == Some(3) {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-prometheus-client is required under CI (.ci/run installs it)"
        );
        crate::system::not_run("the OpenMetrics check needs python3-prometheus-client");
        return;
    }
    assert!(
        out.status.success() && out.stdout_text().starts_with("parsed"),
        "prometheus_client refused the output:\n{}\n{text}",
        out.all_text()
    );
}

/// The `ironpop` arguments of the shipped example unit that writes the
/// textfile collector's file (its `ExecStart`, up to the redirection).
fn example_unit_stats_args() -> Vec<String> {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/examples/ironpop-stats.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart in ironpop-stats.service");
    let (_, after) = exec
        .split_once("/usr/sbin/ironpop ")
        .expect("the unit runs /usr/sbin/ironpop");
    let (args, _) = after.split_once('>').expect("and redirects its output");
    args.split_whitespace().map(str::to_owned).collect()
}

/// node_exporter, killed when dropped.
struct Exporter(std::process::Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /metrics` from 127.0.0.1:`port` once it answers; the body.
fn scrape(port: u16) -> String {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).unwrap();
            let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
            assert!(
                head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
                "{head}"
            );
            return body.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node_exporter did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn node_exporter_reads_the_example_units_counters_with_their_types() {
    const EXPORTER: &str = "prometheus-node-exporter";
    if !require_tool(EXPORTER, &["--version"]) {
        return;
    }
    let server = ServerBuilder::new()
        .spool("alice", mbox(&messages(2)))
        .start();
    failed_login(&server);
    let mut alice = server.login(ALICE);
    alice.ok("RETR 1");
    alice.multi_body();
    alice.quit();

    let args = example_unit_stats_args();
    let stats = control(
        server.config_path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(stats.status.success(), "{:?}: {}", args, stats.all_text());
    let textfiles = tempfile::tempdir().unwrap();
    std::fs::write(textfiles.path().join("ironpop.prom"), stats.stdout_text()).unwrap();

    let port = crate::ports::unassigned_port(&[std::net::Ipv4Addr::LOCALHOST], &[]);
    let exporter = Exporter(
        Command::new(EXPORTER)
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!(
                "--collector.textfile.directory={}",
                textfiles.path().display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let metrics = scrape(port);
    drop(exporter);
    for line in [
        "node_textfile_scrape_error 0",
        "# TYPE ironpop_uptime_seconds gauge",
        "# TYPE ironpop_logins_failed_total counter",
        "ironpop_logins_failed_total{method=\"USER\"} 1",
        "# TYPE ironpop_logins_succeeded_total counter",
        "ironpop_logins_succeeded_total{method=\"USER\"} 1",
        "# TYPE ironpop_messages_retrieved_total counter",
        "ironpop_messages_retrieved_total 1",
        "# HELP ironpop_connections_accepted_total Connections accepted and handed to a worker.",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("# TYPE ironpop_") && l.ends_with(" untyped")),
        "{metrics}"
    );
}

#[test]
fn without_a_daemon_the_commands_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ironpop.conf");
    std::fs::write(
        &conf,
        format!(
            "control_socket = {0}/control\nstate_dir = {0}/state\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let stats = control(&conf, &["--stats"]);
    assert_eq!(stats.status.code(), Some(1));
    assert!(
        stats.stderr_text().contains("no control socket at"),
        "{}",
        stats.all_text()
    );
    let kick = control(&conf, &["--kick", "alice"]);
    assert_eq!(kick.status.code(), Some(1));
}

#[test]
fn a_user_outside_root_and_group_ironpop_is_refused() {
    require_root!();
    // The package's group (postinst creates it); the daemon looks it up at start.
    let _made = GroupForTest::ensure("ironpop");
    let group = nix::unistd::Group::from_name("ironpop").unwrap().unwrap();
    let server = ServerBuilder::new()
        .spool("alice", mbox(&messages(1)))
        .start();
    let _alice = server.login(ALICE);
    let conf = server.config_path();
    // nobody: neither root nor in group ironpop.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        BIN,
        "--who",
        "-f",
    ])
    .arg(conf);
    let refused = run(&mut cmd, b"", IO_TIMEOUT);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.all_text());
    assert!(
        refused.stderr_text().contains("permission denied")
            && refused.stderr_text().contains("root and group ironpop"),
        "{}",
        refused.all_text()
    );
    let who = control(conf, &["--who"]);
    assert!(
        who.stdout_text().contains(ALICE.user),
        "root may: {}",
        who.all_text()
    );
    // A member of group ironpop may.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        &format!("--groups={}", group.gid),
        BIN,
        "--who",
        "-f",
    ])
    .arg(conf);
    let member = run(&mut cmd, b"", IO_TIMEOUT);
    assert!(
        member.stdout_text().contains(ALICE.user),
        "{}",
        member.all_text()
    );
}

#[test]
fn who_in_inetd_mode_lists_the_locked_mailboxes() {
    let server = ServerBuilder::new()
        .spool("alice", mbox(&messages(1)))
        .set("plaintext_auth", "always")
        .start();
    // The same setup without a daemon to ask: as inetd runs it.
    let conf = server.dir().join("inetd.conf");
    let text = std::fs::read_to_string(server.config_path()).unwrap();
    let text = text.replace(
        &format!(
            "control_socket = {}",
            server.dir().join("control").display()
        ),
        &format!("control_socket = {}", server.dir().join("none").display()),
    );
    assert!(text.contains("/none"), "{text}");
    std::fs::write(&conf, text).unwrap();

    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut child = Command::new(BIN)
        .arg("-i")
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::from(OwnedFd::from(theirs.try_clone().unwrap())))
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut session = BufReader::new(ours);
    let mut cmd = |line: &str| {
        if !line.is_empty() {
            session
                .get_mut()
                .write_all(format!("{line}\r\n").as_bytes())
                .unwrap();
        }
        let mut reply = String::new();
        session.read_line(&mut reply).unwrap();
        reply
    };
    assert!(cmd("").starts_with("+OK"), "greeting");
    assert!(cmd(&format!("USER {}", ALICE.user)).starts_with("+OK"));
    let ok = cmd(&format!("PASS {}", ALICE.password));
    assert!(ok.starts_with("+OK"), "{ok}");

    let who = control(&conf, &["--who"]);
    assert!(who.status.success(), "{}", who.all_text());
    assert!(
        who.stderr_text().contains("(inetd mode)"),
        "{}",
        who.all_text()
    );
    let out = who.stdout_text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("USER   SINCE (UTC)"), "{out}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], ALICE.user, "{out}");
    assert!(row[3].ends_with("/mail/alice"), "{out}");
    // What needs a daemon says so.
    let stats = control(&conf, &["--stats"]);
    assert_eq!(stats.status.code(), Some(1));

    assert!(cmd("QUIT").starts_with("+OK"));
    assert!(child.wait().unwrap().success());
    let after = control(&conf, &["--who"]).stdout_text();
    assert_eq!(after.lines().count(), 1, "the lock is gone: {after}");
}

#[test]
fn who_names_the_client_a_proxy_header_names() {
    let server = ServerBuilder::new()
        .set("proxy_protocol_from", "127.0.0.1")
        .set("plaintext_auth", "always")
        .spool("alice", mbox(&messages(1)))
        .start();
    let mut c = server.connect();
    c.send_raw(b"PROXY TCP4 192.0.2.7 198.51.100.1 40005 995\r\n");
    c.greeting();
    c.login(ALICE);
    let who = control(server.config_path(), &["--who"]).stdout_text();
    let row: Vec<&str> = who
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], [ALICE.user, "192.0.2.7", "995"], "{who}");
    let kick = control(server.config_path(), &["--kick", "192.0.2.7"]);
    assert_eq!(kick.stdout_text(), "ended 1 session from 192.0.2.7\n");
    assert_eq!(
        c.line(),
        "-ERR [SYS/TEMP] session ended by the administrator"
    );
}

/// A system group this test made, removed again at its end (so the install
/// test still sees postinst create it); one that existed is left alone.
struct GroupForTest(Option<&'static str>);

impl GroupForTest {
    fn ensure(name: &'static str) -> GroupForTest {
        if nix::unistd::Group::from_name(name).ok().flatten().is_some() {
            return GroupForTest(None);
        }
        let made = Command::new("groupadd").args(["-r", name]).status();
        assert!(made.is_ok_and(|s| s.success()), "groupadd {name}");
        GroupForTest(Some(name))
    }
}

impl Drop for GroupForTest {
    fn drop(&mut self) {
        if let Some(name) = self.0 {
            let _ = Command::new("groupdel").arg(name).status();
        }
    }
}
