//! Test harness: a real `ironpop` on an ephemeral loopback port, a raw POP3 client, mbox builders.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::loopback;

/// The binary under test, built by cargo for this test target.
pub const BIN: &str = env!("CARGO_BIN_EXE_ironpop");

/// Every read and write of the test client gives up after this long, so no
/// test can hang on a server that stopped answering.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a server may take to log its listening addresses.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A test account. Passwords are URL-safe so that curl URLs can carry them.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    pub user: &'static str,
    pub password: &'static str,
}

pub const ALICE: Account = Account {
    user: "alice",
    password: "alice-Secret-1",
};
pub const BOB: Account = Account {
    user: "bob",
    password: "bob-Secret-2",
};
/// A password with spaces: RFC 1939 lets PASS take the rest of the line.
pub const CAROL: Account = Account {
    user: "carol",
    password: "correct horse battery staple",
};
const ACCOUNTS: &[Account] = &[ALICE, BOB, CAROL];

// ---------------------------------------------------------------- processes

/// What a finished command produced.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// stdout and stderr together, for "the message names X" assertions that
    /// do not care which stream carried it.
    pub fn all_text(&self) -> String {
        format!("{}{}", self.stdout_text(), self.stderr_text())
    }
}

/// Runs `cmd` with `stdin` as its input; kills it and fails the test if it
/// does not finish within `timeout`.
pub fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        // A program that exits without reading its input is not an error here.
        let _ = input.write_all(&data);
    });
    let out = collect(child.stdout.take().expect("piped stdout"));
    let err = collect(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{cmd:?} did not finish within {timeout:?}");
            }
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn collect<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// `ironpop ARGS...`, finished within 30 s.
pub fn ironpop(args: &[&str]) -> Output {
    run(
        Command::new(BIN).args(args).env_remove("RUST_LOG"),
        b"",
        Duration::from_secs(30),
    )
}

/// `ironpop --hash-password` with the password on stdin (not a tty).
pub fn hash_password(password: &str) -> String {
    let out = run(
        Command::new(BIN)
            .arg("--hash-password")
            .env_remove("RUST_LOG"),
        format!("{password}\n").as_bytes(),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "ironpop --hash-password failed: {out:?}"
    );
    let hash = out.stdout_text().trim().to_string();
    assert!(
        hash.starts_with("$y$") && !hash.contains(char::is_whitespace),
        "ironpop --hash-password printed {hash:?}, not one yescrypt hash"
    );
    hash
}

/// The test accounts' hashes, computed once per test process (yescrypt is
/// deliberately slow).
fn account_hashes() -> &'static HashMap<&'static str, String> {
    static HASHES: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    HASHES.get_or_init(|| {
        ACCOUNTS
            .iter()
            .map(|a| (a.user, hash_password(a.password)))
            .collect()
    })
}

/// `true` if `tool` can be run. When it cannot: under CI (env `CI` set) the
/// test fails, elsewhere it is skipped with a loud message.
pub fn require_tool(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required for this test under CI (install it: .ci/run does)");
        }
        crate::system::not_run(&format!("`{tool}` is not available"));
    }
    ok
}

// ------------------------------------------------------------------ servers

/// Builds the temp dir, config, passwd file and spools of one test server.
pub struct ServerBuilder {
    settings: Vec<(String, String)>,
    listen: Vec<String>,
    extra: Vec<String>,
    spools: Vec<(String, Vec<u8>)>,
    passwd_extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    pub fn new() -> Self {
        let mut b = ServerBuilder {
            settings: Vec::new(),
            listen: vec!["127.0.0.1:0".to_string()],
            extra: Vec::new(),
            spools: Vec::new(),
            passwd_extra: Vec::new(),
            env: Vec::new(),
        };
        b = b
            .set("plaintext_auth", "localhost")
            .set("auth_fail_delay", "0");
        // A developer's server keeps their identity. Root (CI) drops
        // privileges like a real install, to nobody/nogroup, which
        // `start` makes the owner of the server's files.
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        if uid.is_root() {
            return b.set("user", "nobody").set("group", "nogroup");
        }
        if let Ok(Some(u)) = nix::unistd::User::from_uid(uid) {
            b = b.set("user", &u.name);
        }
        if let Ok(Some(g)) = nix::unistd::Group::from_gid(gid) {
            b = b.set("group", &g.name);
        }
        b
    }

    /// Sets a single-valued key, replacing an earlier value.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.settings.retain(|(k, _)| k != key);
        self.settings.push((key.to_string(), value.to_string()));
        self
    }

    /// Replaces the default listener list with `addrs`.
    pub fn listen(mut self, addrs: &[&str]) -> Self {
        self.listen = addrs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// A raw config line appended at the end.
    pub fn line(mut self, line: &str) -> Self {
        self.extra.push(line.to_string());
        self
    }

    /// The spool of `user` (written before the server starts).
    pub fn spool(mut self, user: &str, data: impl Into<Vec<u8>>) -> Self {
        self.spools.push((user.to_string(), data.into()));
        self
    }

    /// An environment variable of the server process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// An extra passwd-file line, e.g. `dave:{PLAIN}secret`.
    pub fn passwd_line(mut self, line: &str) -> Self {
        self.passwd_extra.push(line.to_string());
        self
    }

    pub fn start(self) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("ironpop-it-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        for sub in ["mail", "state"] {
            std::fs::create_dir_all(root.join(sub)).expect("create dir");
        }
        let mut passwd = String::new();
        for a in ACCOUNTS {
            passwd.push_str(&format!("{}:{}\n", a.user, account_hashes()[a.user]));
        }
        for l in &self.passwd_extra {
            passwd.push_str(l);
            passwd.push('\n');
        }
        std::fs::write(root.join("passwd"), passwd).expect("write passwd");
        for (user, data) in &self.spools {
            let path = root.join("mail").join(user);
            std::fs::write(&path, data).expect("write spool");
            // On disk, as a delivered spool is: QUIT fsyncs the spool before
            // it relies on its length, and 200 MB of dirty pages would be
            // the test's cost, not the server's.
            if data.len() > 1 << 20 {
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .expect("sync spool");
            }
        }
        if nix::unistd::getuid().is_root() {
            give_to_nobody(&root);
        }
        let mut conf = String::from("# written by ironpop's integration tests\n");
        for l in &self.listen {
            conf.push_str(&format!("listen = {l}\n"));
        }
        let paths = [
            (
                "passdb",
                format!("passwd-file:{}", root.join("passwd").display()),
            ),
            ("mailbox", format!("{}/mail/%u", root.display())),
            ("state_dir", root.join("state").display().to_string()),
            ("pid_file", root.join("ironpop.pid").display().to_string()),
            ("control_socket", root.join("control").display().to_string()),
        ];
        for (k, v) in &paths {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        for (k, v) in &self.settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        for l in &self.extra {
            conf.push_str(l);
            conf.push('\n');
        }
        // A certificate without listen_tls means POP3S on 0.0.0.0:995 and
        // [::]:995: never in a test (root would take the machine's real
        // port, anyone else cannot bind it).
        let sets_listen_tls = self
            .extra
            .iter()
            .any(|l| l.split('=').next().map(str::trim) == Some("listen_tls"))
            || self.settings.iter().any(|(k, _)| k == "listen_tls");
        if !sets_listen_tls {
            conf.push_str("listen_tls = none\n");
        }
        let conf_path = root.join("ironpop.conf");
        std::fs::write(&conf_path, conf).expect("write config");
        TestServer::spawn(dir, conf_path, self.listen.len(), &self.env)
    }
}

/// As root the server drops to nobody: virtual users' spools must be
/// its (the helper checks the owner), and it writes locks, the pid file
/// and dot-locks in the temp dir.
pub fn give_to_nobody(root: &Path) {
    if !nix::unistd::getuid().is_root() {
        return;
    }
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    let mut paths = vec![root.to_path_buf(), root.join("mail"), root.join("state")];
    if let Ok(entries) = std::fs::read_dir(root.join("mail")) {
        paths.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    for p in paths {
        nix::unistd::chown(&p, nobody, None).expect("chown to nobody");
    }
}

/// A running `ironpop -F -f CONF`; killed when dropped.
pub struct TestServer {
    child: Child,
    addrs: Vec<SocketAddr>,
    log: Arc<Mutex<String>>,
    conf: PathBuf,
    // Dropped last: the server must be gone before its files are.
    dir: tempfile::TempDir,
}

impl TestServer {
    fn spawn(
        dir: tempfile::TempDir,
        conf: PathBuf,
        listeners: usize,
        env: &[(String, String)],
    ) -> TestServer {
        let mut child = Command::new(BIN)
            .arg("-F")
            .arg("-f")
            .arg(&conf)
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ironpop");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        forward_log(
            child.stderr.take().expect("stderr"),
            log.clone(),
            tx.clone(),
        );
        forward_log(child.stdout.take().expect("stdout"), log.clone(), tx);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut addrs = Vec::new();
        while addrs.len() < listeners {
            if let Ok(Some(status)) = child.try_wait() {
                // Give the log readers a moment to drain the pipes.
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "ironpop exited ({status}) before listening; config:\n{}\nlog:\n{}",
                    std::fs::read_to_string(&conf).unwrap_or_default(),
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => addrs.push(addr),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "ironpop did not log {listeners} `listening on ADDR (pop3)` lines \
                         within {STARTUP_TIMEOUT:?}; log:\n{}",
                        log.lock().map(|l| l.clone()).unwrap_or_default()
                    );
                }
            }
        }
        TestServer {
            child,
            addrs,
            log,
            conf,
            dir,
        }
    }

    /// The first listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every listening address, in the order the server logged them.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.conf
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds the server has used so far, its privileged helpers
    /// included (they check the passwords when it runs as root). Not a
    /// wall-clock timing: other processes on the machine do not add to it.
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.pid();
        let stat = |p: &str| -> Option<(u32, f64)> {
            let text = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // After "pid (comm) ": ppid is field 1, utime 11, stime 12.
            let rest = text.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i)?.parse::<f64>().ok();
            // USER_HZ is 100 on every Linux ABI.
            Some((f.get(1)?.parse().ok()?, (ticks(11)? + ticks(12)?) / 100.0))
        };
        let own = stat(&pid.to_string()).map_or(0.0, |(_, cpu)| cpu);
        let helpers: f64 = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
                    .filter_map(|name| stat(&name))
                    .filter(|&(ppid, _)| ppid == pid)
                    .map(|(_, cpu)| cpu)
                    .sum()
            })
            .unwrap_or(0.0);
        own + helpers
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits up to `timeout` for `needle` to appear in the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `true` while the server process is alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn spool_path(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    pub fn read_spool(&self, user: &str) -> Vec<u8> {
        std::fs::read(self.spool_path(user)).unwrap_or_else(|e| panic!("read spool of {user}: {e}"))
    }

    /// Appends to a spool the way an MDA does (O_APPEND).
    pub fn append_spool(&self, user: &str, data: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.spool_path(user))
            .expect("open spool for append");
        f.write_all(data).expect("append to spool");
        if nix::unistd::getuid().is_root() {
            // A spool created here belongs to the server's user, as
            // `start` arranges for the others.
            give_to_nobody(self.dir.path());
        }
    }

    /// A fresh connection; the greeting is not read yet.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// A fresh connection whose `+OK` greeting has been read.
    pub fn greeted(&self) -> Client {
        let mut c = self.connect();
        c.greeting();
        c
    }

    /// A session logged in as `account` (TRANSACTION state).
    pub fn login(&self, account: Account) -> Client {
        let mut c = self.greeted();
        c.login(account);
        c
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a server output stream into `log` line by line and reports every
/// `listening on ADDR (pop3)` line's address.
fn forward_log<R: Read + Send + 'static>(
    stream: R,
    log: Arc<Mutex<String>>,
    tx: mpsc::Sender<SocketAddr>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    if let Some(addr) = parse_listening(&text) {
                        let _ = tx.send(addr);
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&text);
                    }
                }
            }
        }
    });
}

/// The address in `... listening on 127.0.0.1:34567 (pop3)`.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let end = rest.find(" (pop3)")?;
    rest[..end].trim().parse().ok()
}

// ------------------------------------------------------------------- client

/// A raw POP3 client with timeouts on every read and write.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// The longest reply line the client accepts (message lines can be long).
const MAX_REPLY_LINE: u64 = 1 << 20;

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::from_stream(stream)
    }

    /// Connects from `src`, one of 127/8: a client address of its own.
    pub fn connect_from(addr: SocketAddr, src: std::net::Ipv4Addr) -> Client {
        let stream = loopback::connect_from(addr, src)
            .unwrap_or_else(|e| panic!("connect to {addr} from {src}: {e}"));
        Client::from_stream(stream)
    }

    /// A client over a connection made elsewhere (from a chosen address).
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let writer = stream.try_clone().expect("clone stream");
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// The connection itself, e.g. for a TLS handshake after STLS.
    pub fn into_stream(self) -> TcpStream {
        assert!(
            self.reader.buffer().is_empty(),
            "the server sent more than was read"
        );
        self.writer
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.writer
            .set_read_timeout(Some(timeout))
            .expect("set timeout");
    }

    /// Sends `line` followed by CRLF.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("sending {:?}: {e}", String::from_utf8_lossy(bytes)));
    }

    /// One raw line including its line end; `Ok(None)` at end of stream.
    pub fn read_raw_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_REPLY_LINE)
            .read_until(b'\n', &mut line)?;
        if line.is_empty() {
            Ok(None)
        } else {
            Ok(Some(line))
        }
    }

    /// One reply line without its CRLF; fails the test on EOF, timeout, a
    /// line not ended by CRLF, or a line that is not text.
    pub fn line(&mut self) -> String {
        let raw = match self.read_raw_line() {
            Ok(Some(raw)) => raw,
            Ok(None) => panic!("server closed the connection; a reply line was expected"),
            Err(e) => panic!("no reply line within {IO_TIMEOUT:?}: {e}"),
        };
        let text = String::from_utf8(raw)
            .unwrap_or_else(|e| panic!("reply line is not UTF-8: {:?}", e.as_bytes()));
        let body = text
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("reply line {text:?} does not end in CRLF"));
        assert!(
            !body.contains(['\r', '\n']),
            "reply line {text:?} contains a bare CR or LF"
        );
        body.to_string()
    }

    /// Reads the `+OK` greeting.
    pub fn greeting(&mut self) -> String {
        let g = self.line();
        assert_ok(&g, "greeting");
        g
    }

    /// Sends `cmd`, returns its status line.
    pub fn cmd(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.line()
    }

    /// Sends `cmd`, asserts a `+OK` status line and returns it.
    pub fn ok(&mut self, cmd: &str) -> String {
        let r = self.cmd(cmd);
        assert_ok(&r, cmd);
        r
    }

    /// Sends `cmd`, asserts a `-ERR` status line and returns it.
    pub fn err(&mut self, cmd: &str) -> String {
        let r = self.cmd(cmd);
        assert_err(&r, cmd);
        r
    }

    /// The lines of a multi-line body up to the terminating `.`, without
    /// CRLF and with dot-stuffing removed. Fails on a line that starts with
    /// a dot but is not stuffed.
    pub fn multi_lines(&mut self) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        loop {
            let raw = match self.read_raw_line() {
                Ok(Some(raw)) => raw,
                Ok(None) => panic!(
                    "connection closed inside a multi-line reply after {} lines",
                    lines.len()
                ),
                Err(e) => panic!(
                    "multi-line reply unfinished after {} lines: {e}",
                    lines.len()
                ),
            };
            let body = raw.strip_suffix(b"\r\n").unwrap_or_else(|| {
                panic!(
                    "multi-line reply line {:?} does not end in CRLF",
                    String::from_utf8_lossy(&raw)
                )
            });
            if body == b"." {
                return lines;
            }
            if let Some(rest) = body.strip_prefix(b".") {
                assert!(
                    rest.starts_with(b"."),
                    "line {:?} starts with a dot but is not dot-stuffed",
                    String::from_utf8_lossy(body)
                );
                lines.push(rest.to_vec());
            } else {
                lines.push(body.to_vec());
            }
        }
    }

    /// A multi-line body as the octets the client received after removing
    /// dot-stuffing: each line with its CRLF.
    pub fn multi_body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in self.multi_lines() {
            out.extend_from_slice(&l);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Sends `cmd`, asserts `+OK` and returns the multi-line body as text lines.
    pub fn ok_lines(&mut self, cmd: &str) -> Vec<String> {
        self.ok(cmd);
        self.multi_lines()
            .into_iter()
            .map(|l| String::from_utf8(l).expect("listing line is text"))
            .collect()
    }

    /// Sends `cmd` (RETR/TOP), asserts `+OK` and returns the body octets.
    pub fn ok_body(&mut self, cmd: &str) -> Vec<u8> {
        self.ok(cmd);
        self.multi_body()
    }

    /// USER + PASS, both `+OK`.
    pub fn login(&mut self, account: Account) {
        self.ok(&format!("USER {}", account.user));
        self.ok(&format!("PASS {}", account.password));
    }

    /// The next line within `wait`, or `None` if nothing comes (a queued
    /// connection); the read timeout is back to [`IO_TIMEOUT`] after.
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.set_read_timeout(wait);
        let line = match self.read_raw_line() {
            Ok(Some(l)) => Some(String::from_utf8_lossy(&l).trim_end().to_string()),
            Ok(None) => panic!("connection closed without a reply"),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                None
            }
            Err(e) => panic!("reading a line: {e}"),
        };
        self.set_read_timeout(IO_TIMEOUT);
        line
    }

    /// CAPA's capability lines.
    pub fn capa(&mut self) -> Vec<String> {
        self.ok_lines("CAPA")
    }

    /// Asserts that the server closes the connection within `within`;
    /// returns the lines it sent before closing.
    pub fn expect_closed(&mut self, within: Duration) -> Vec<String> {
        self.set_read_timeout(within);
        let mut lines = Vec::new();
        loop {
            match self.read_raw_line() {
                Ok(None) => return lines,
                Ok(Some(l)) => lines.push(String::from_utf8_lossy(&l).into_owned()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return lines,
                Err(e) => {
                    panic!("connection still open after {within:?} ({e}); received {lines:?}")
                }
            }
        }
    }

    /// QUIT: `+OK`, then the server closes the connection.
    pub fn quit(mut self) {
        self.ok("QUIT");
        let rest = self.expect_closed(IO_TIMEOUT);
        assert!(rest.is_empty(), "data after the QUIT reply: {rest:?}");
    }
}

pub fn assert_ok(reply: &str, what: &str) {
    assert!(
        reply == "+OK" || reply.starts_with("+OK "),
        "{what}: expected +OK, got {reply:?}"
    );
}

pub fn assert_err(reply: &str, what: &str) {
    assert!(
        reply == "-ERR" || reply.starts_with("-ERR "),
        "{what}: expected -ERR, got {reply:?}"
    );
}

// --------------------------------------------------------------------- mbox

/// The `From ` separator line every test message is stored behind.
pub const FROM_LINE: &[u8] = b"From sender@example.org Mon Jan  5 09:00:00 2026\n";

/// A plain test message (LF line ends) with its own Message-ID.
pub fn message(n: usize) -> Vec<u8> {
    format!(
        "From: Sender <sender@example.org>\n\
         To: alice@example.org\n\
         Subject: test message {n}\n\
         Date: Mon, 5 Jan 2026 09:00:{:02} +0000\n\
         Message-ID: <{n}.ironpop-test@example.org>\n\
         \n\
         This is message {n}.\n\
         Second body line.\n\
         Third body line.\n",
        n % 60
    )
    .into_bytes()
}

/// `count` distinct test messages.
pub fn messages(count: usize) -> Vec<Vec<u8>> {
    (1..=count).map(message).collect()
}

/// One message as stored in an mbox: the `From ` line, the message (with a
/// final LF added if it lacks one) and the blank separator line.
pub fn mbox_chunk(msg: &[u8]) -> Vec<u8> {
    let mut out = FROM_LINE.to_vec();
    out.extend_from_slice(msg);
    if !msg.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// An mbox spool holding `msgs` in order.
pub fn mbox<M: AsRef<[u8]>>(msgs: &[M]) -> Vec<u8> {
    msgs.iter().flat_map(|m| mbox_chunk(m.as_ref())).collect()
}

/// The spool after deleting the messages whose 1-based numbers are in
/// `deleted`: every other message's bytes, untouched, in order.
pub fn mbox_without<M: AsRef<[u8]>>(msgs: &[M], deleted: &[usize]) -> Vec<u8> {
    msgs.iter()
        .enumerate()
        .filter(|(i, _)| !deleted.contains(&(i + 1)))
        .flat_map(|(_, m)| mbox_chunk(m.as_ref()))
        .collect()
}

/// A message as a POP3 client receives it (after un-dot-stuffing): LF line
/// ends become CRLF and the last line is ended.
pub fn crlf(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 20 + 2);
    for &b in msg {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    if !msg.is_empty() && !msg.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What `TOP n lines` returns for `msg`: the header, the blank line and the
/// first `lines` body lines, in CRLF form.
pub fn top(msg: &[u8], lines: usize) -> Vec<u8> {
    let full = crlf(msg);
    let split = find(&full, b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(full.len());
    let mut end = split;
    for _ in 0..lines {
        match find(&full[end..], b"\r\n") {
            Some(i) => end += i + 2,
            None => break,
        }
    }
    full[..end].to_vec()
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits an mbox into its messages (without the `From ` lines and the
/// blank separator lines), for spools the tests did not write themselves.
/// Text before the first `From ` line is message 1 unless it is only blank
/// lines, as the server serves it (mailbox/scan.rs).
pub fn split_mbox(data: &[u8]) -> Vec<Vec<u8>> {
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut leading = true;
    let mut prev_blank = true;
    let mut finish = |mut m: Vec<u8>, leading: bool| {
        if leading && m.iter().all(|&b| b == b'\n') {
            return;
        }
        if m.ends_with(b"\n\n") {
            m.pop();
        }
        msgs.push(m);
    };
    for line in data.split_inclusive(|&b| b == b'\n') {
        if prev_blank && line.starts_with(b"From ") {
            finish(std::mem::take(&mut current), leading);
            leading = false;
            prev_blank = false;
            continue;
        }
        prev_blank = line == b"\n";
        current.extend_from_slice(line);
    }
    finish(current, leading);
    msgs
}

/// Asserts two byte strings are equal, showing them as text when they differ.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let from = at.saturating_sub(80);
        panic!(
            "{what}: {} bytes received, {} expected, first difference at byte {at}\n\
             got  ...{:?}\nwant ...{:?}",
            got.len(),
            want.len(),
            String::from_utf8_lossy(&got[from..(at + 80).min(got.len())]),
            String::from_utf8_lossy(&want[from..(at + 80).min(want.len())]),
        );
    }
}

/// A seeded random source for randomized tests (proptest's ChaCha
/// generator). The seed is printed; `IRONPOP_TEST_SEED=<seed>` replays a
/// run.
pub struct Rng(proptest::test_runner::TestRng);

impl Rng {
    /// Seeded from `IRONPOP_TEST_SEED`, else from the clock.
    pub fn seeded() -> Rng {
        let seed = std::env::var("IRONPOP_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("random seed {seed} (rerun with IRONPOP_TEST_SEED={seed})");
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Rng(proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &bytes,
        ))
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        use proptest::prelude::Rng as _;
        self.0.next_u64() % n.max(1)
    }
}
