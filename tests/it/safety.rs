//! Mailbox safety against the real binary: one session per mailbox, concurrent delivery, SIGKILL during QUIT, ENOSPC/EFBIG.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{self, Client, ServerBuilder, BOB, IO_TIMEOUT};
use ironpop::mailbox::{Maildrop, MboxMaildrop};

/// A second daemon on a test server's configuration (another process on
/// the same spools and state directory), killed with SIGKILL when dropped.
pub(crate) struct Process {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Process {
    pub(crate) fn start(conf: &Path) -> Process {
        Process::start_with(Command::new(harness::BIN).arg("-F").arg("-f").arg(conf))
    }

    pub(crate) fn start_with(cmd: &mut Command) -> Process {
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ironpop");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            // Keep draining so the server never blocks on a full pipe. The
            // address is handed over once the daemon is ready: after its
            // startup recovery, before it serves anyone.
            let mut addr = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                addr = addr.or(harness::parse_listening(&line));
                if line.contains(" ready: ") {
                    if let Some(addr) = addr {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("ironpop did not log its listening address");
        Process { child, addr }
    }

    pub(crate) fn login(&self) -> Client {
        let mut c = Client::connect(self.addr);
        c.greeting();
        c.login(BOB);
        c
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A copy of the harness's config `conf` with the spools, state and pid
/// file under `dir` instead.
pub(crate) fn config_in(conf: &Path, dir: &Path) -> std::path::PathBuf {
    for sub in ["mail", "state"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let text = std::fs::read_to_string(conf).unwrap();
    let moved: String = text
        .lines()
        .map(|l| match l.split_once(" = ").map(|(k, _)| k) {
            Some("mailbox") => format!("mailbox = {}/mail/%u\n", dir.display()),
            Some("state_dir") => format!("state_dir = {}/state\n", dir.display()),
            Some("pid_file") => format!("pid_file = {}/ironpop.pid\n", dir.display()),
            Some("control_socket") => format!("control_socket = {}/control\n", dir.display()),
            _ => format!("{l}\n"),
        })
        .collect();
    let path = dir.join("ironpop.conf");
    std::fs::write(&path, moved).unwrap();
    path
}

/// The messages of a spool as stored (From_ line to end), by Message-ID.
fn stored_messages(spool: &Path) -> Vec<(String, Vec<u8>)> {
    let mut md = MboxMaildrop::open(spool).expect("the spool parses");
    (0..md.messages().len())
        .map(|i| {
            let mut out = Vec::new();
            md.write_message(i, None, &mut out).expect("read message");
            (message_id(&out), out)
        })
        .collect()
}

fn message_id(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .unwrap_or("<none>")
        .trim()
        .to_string()
}

/// A message of about `size` bytes with its own Message-ID.
fn big_message(n: usize, size: usize) -> Vec<u8> {
    let mut m = format!("Message-ID: <{n}.big@example.org>\nSubject: big {n}\n\n").into_bytes();
    let line = format!("message {n:06} ..................................................\n");
    while m.len() < size {
        m.extend_from_slice(line.as_bytes());
    }
    m
}

#[test]
fn second_session_is_in_use_and_the_lock_dies_with_the_process() {
    let server = ServerBuilder::new()
        .spool("bob", harness::mbox(&harness::messages(3)))
        .start();
    let mut first = server.login(BOB);
    // Same process (another worker thread).
    let mut second = server.greeted();
    second.ok("USER bob");
    let reply = second.err(&format!("PASS {}", BOB.password));
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    // Another process on the same state directory.
    let mut other = Process::start(server.config_path());
    let mut c = Client::connect(other.addr);
    c.greeting();
    c.ok("USER bob");
    let reply = c.err(&format!("PASS {}", BOB.password));
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    // The first session is undisturbed.
    let octets: usize = harness::messages(3)
        .iter()
        .map(|m| harness::crlf(m).len())
        .sum();
    assert_eq!(first.ok("STAT"), format!("+OK 3 {octets}"));
    assert_eq!(first.ok_body("RETR 2"), harness::crlf(&harness::message(2)));
    first.ok("DELE 3");
    first.quit();
    assert_eq!(
        server.read_spool("bob"),
        harness::mbox_without(&harness::messages(3), &[3])
    );
    // Released by QUIT: the other process may have it now.
    other.login().quit();
    other.kill();
}

#[test]
fn a_crashed_session_process_releases_the_mailbox() {
    let server = ServerBuilder::new()
        .spool("bob", harness::mbox(&harness::messages(2)))
        .start();
    let mut crashing = Process::start(server.config_path());
    let _held = crashing.login();
    let mut c = server.greeted();
    c.ok("USER bob");
    assert!(c
        .err(&format!("PASS {}", BOB.password))
        .starts_with("-ERR [IN-USE]"));
    crashing.kill(); // SIGKILL
    let mut c = server.login(BOB);
    c.ok("STAT");
    c.quit();
}

#[test]
fn concurrent_delivery_loses_nothing_and_duplicates_nothing() {
    if !harness::require_tool("procmail", &["-v"]) {
        return;
    }
    let server = ServerBuilder::new()
        .set("lock_timeout", "10")
        .spool("bob", Vec::new())
        .start();
    let spool = server.spool_path("bob");
    let rc = server.dir().join("procmailrc");
    std::fs::write(&rc, "").unwrap();
    let deliveries = 100;
    let delivered: HashMap<String, Vec<u8>> = (0..deliveries)
        .map(|n| {
            let body = format!(
                "Message-ID: <{n}.mda@example.org>\nSubject: delivery {n}\n\nbody of {n}\n{}end\n",
                "x".repeat(n * 37 % 5000)
            );
            (format!("<{n}.mda@example.org>"), body.into_bytes())
        })
        .collect();
    let mda = {
        let delivered = delivered.clone();
        let (spool, rc) = (spool.clone(), rc.clone());
        thread::spawn(move || {
            let mut ids: Vec<_> = delivered.keys().cloned().collect();
            ids.sort();
            for id in ids {
                let mut msg = b"From mda@example.org Mon Jan  5 09:00:00 2026\n".to_vec();
                msg.extend_from_slice(&delivered[&id]);
                // LOCKSLEEP: procmail's default 8 s between dotlock
                // attempts would make the test slow, not different.
                let mut child = Command::new("procmail")
                    .arg("-m")
                    .arg("LOCKSLEEP=1")
                    .arg(format!("DEFAULT={}", spool.display()))
                    .arg(&rc)
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("run procmail");
                child.stdin.take().unwrap().write_all(&msg).unwrap();
                assert!(child.wait().unwrap().success(), "procmail failed");
                thread::sleep(Duration::from_millis(3));
            }
        })
    };
    // Retrieved and committed (QUIT +OK): message id → how often.
    let mut retrieved: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sessions = 0;
    while Instant::now() < deadline {
        let finished = mda.is_finished();
        let mut c = server.login(BOB);
        let count: usize = c.ok("STAT").split(' ').nth(1).unwrap().parse().unwrap();
        let mut got = Vec::new();
        for i in 1..=count {
            let body = c.ok_body(&format!("RETR {i}"));
            let id = message_id(&body);
            let want = delivered
                .get(&id)
                .unwrap_or_else(|| panic!("unknown message {id}"));
            assert_eq!(
                body,
                harness::crlf(want),
                "{id} differs from what was delivered"
            );
            c.ok(&format!("DELE {i}"));
            got.push(id);
        }
        c.send("QUIT");
        let reply = c.line();
        sessions += 1;
        if reply.starts_with("+OK") {
            for id in got {
                *retrieved.entry(id).or_default() += 1;
            }
        } else {
            assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
        }
        if finished && count == 0 {
            break;
        }
        // A client polls now and then, not in a tight loop.
        thread::sleep(Duration::from_millis(20));
    }
    mda.join().unwrap();
    let left = stored_messages(&spool);
    // Otherwise "nothing lost" would hold even if every QUIT were refused.
    assert!(
        !retrieved.is_empty(),
        "no session retrieved and deleted anything"
    );
    for (id, n) in &retrieved {
        assert_eq!(*n, 1, "{id} was retrieved and deleted {n} times");
    }
    for (id, body) in &left {
        assert!(
            !retrieved.contains_key(id),
            "{id} was deleted yet is still in the spool"
        );
        assert_eq!(
            body,
            &harness::crlf(&delivered[id]),
            "{id} changed in the spool"
        );
    }
    assert_eq!(
        retrieved.len() + left.len(),
        deliveries,
        "messages lost ({sessions} sessions)"
    );
    eprintln!(
        "{deliveries} deliveries by procmail during {sessions} sessions: {} retrieved, {} left",
        retrieved.len(),
        left.len()
    );
}

/// A spool whose update needs a journal larger than the state directory
/// can take: QUIT fails with [SYS/TEMP] and the spool is unchanged.
fn update_fails_cleanly(server: &harness::TestServer, addr: SocketAddr, what: &str) {
    let before = server.read_spool("bob");
    let mut c = Client::connect(addr);
    c.greeting();
    c.login(BOB);
    c.ok("DELE 1");
    c.send("QUIT");
    let reply = c.line();
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{what}: {reply}");
    assert!(server.read_spool("bob") == before, "{what}: spool changed");
    // The mailbox is usable again at once.
    let mut c = Client::connect(addr);
    c.greeting();
    c.login(BOB);
    c.ok("STAT");
    c.quit();
}

#[test]
fn enospc_in_the_state_dir_leaves_the_spool_unchanged() {
    require_root!();
    let msgs: Vec<Vec<u8>> = (0..40).map(|n| big_message(n, 100_000)).collect();
    let server = ServerBuilder::new()
        .spool("bob", harness::mbox(&msgs))
        .start();
    let state = server.dir().join("state");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&state)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "mount -t tmpfs failed (no CAP_SYS_ADMIN?): this test must run under CI"
        );
        eprintln!("mount -t tmpfs failed (no CAP_SYS_ADMIN?); skipped");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&state);
    update_fails_cleanly(&server, server.addr(), "ENOSPC");
    assert!(
        server.wait_for_log("No space left on device", IO_TIMEOUT),
        "{}",
        server.log()
    );
    assert!(server
        .log()
        .contains(&server.spool_path("bob").display().to_string()));
}

#[test]
fn efbig_from_rlimit_fsize_leaves_the_spool_unchanged() {
    if !harness::require_tool("prlimit", &["--version"]) {
        return;
    }
    let msgs: Vec<Vec<u8>> = (0..40).map(|n| big_message(n, 100_000)).collect();
    let server = ServerBuilder::new()
        .spool("bob", harness::mbox(&msgs))
        .start();
    // The daemon itself must keep SIGXFSZ from killing it (the write then
    // fails with EFBIG), so the signal keeps its default disposition here.
    let script = "exec prlimit --fsize=1048576 \"$0\" -F -f \"$1\"";
    let p = Process::start_with(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(harness::BIN)
            .arg(server.config_path()),
    );
    update_fails_cleanly(&server, p.addr, "EFBIG");
}

#[test]
fn a_symlinked_spool_is_refused_with_a_clear_log_line() {
    let server = ServerBuilder::new().start();
    let target = server.dir().join("elsewhere");
    std::fs::write(&target, harness::mbox(&harness::messages(1))).unwrap();
    std::os::unix::fs::symlink(&target, server.spool_path("bob")).unwrap();
    let mut c = server.greeted();
    c.ok("USER bob");
    let reply = c.err(&format!("PASS {}", BOB.password));
    assert!(reply.starts_with("-ERR [SYS/PERM]"), "{reply}");
    assert!(
        server.wait_for_log("symbolic link", IO_TIMEOUT),
        "{}",
        server.log()
    );
}

#[test]
fn a_200_mb_message_is_served_and_deleted() {
    let mut msg = b"Message-ID: <huge@example.org>\nSubject: huge\n\n".to_vec();
    let line = [b'y'; 99];
    while msg.len() < 200 << 20 {
        msg.extend_from_slice(&line);
        msg.push(b'\n');
    }
    let small = harness::message(2);
    let mut spool = harness::mbox_chunk(&msg);
    spool.extend_from_slice(&harness::mbox_chunk(&small));
    let size = harness::crlf(&msg).len();
    drop(msg);
    let server = ServerBuilder::new().spool("bob", spool).start();
    let mut c = server.login(BOB);
    assert_eq!(c.ok("LIST 1"), format!("+OK 1 {size}"));
    c.ok("RETR 1");
    let mut received = 0usize;
    loop {
        let line = c.read_raw_line().unwrap().expect("connection open");
        if line == b".\r\n" {
            break;
        }
        received += line.len();
    }
    assert_eq!(received, size);
    c.ok("DELE 1");
    c.quit();
    assert_eq!(server.read_spool("bob"), harness::mbox_chunk(&small));
}
