//! Fixtures for tests that run as root: throwaway system accounts, a temp mail root with a config, `ironpop -F` with its log, a line client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ironpop");
pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns early from a test that needs root, listed in the summary at
/// exit; under CI (except its unprivileged run) fails instead.
macro_rules! require_root {
    () => {
        if !$crate::system::root_or_not_run() {
            return;
        }
    };
}

/// `true` as root. Otherwise records the calling test as not run (see
/// [`not_run_without_root`]), or fails it under CI: CI runs the suite as
/// root, and its second, unprivileged run sets IRONPOP_UNPRIVILEGED_RUN.
pub(crate) fn root_or_not_run() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none() || std::env::var_os("IRONPOP_UNPRIVILEGED_RUN").is_some(),
        "this test needs root, and CI runs as root \
         (its unprivileged run sets IRONPOP_UNPRIVILEGED_RUN)"
    );
    not_run_without_root();
    false
}

/// The tests this run returned from early, with why (libtest names each
/// test's thread after the test).
static NOT_RUN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Records that the calling test needs root and did not run.
pub(crate) fn not_run_without_root() {
    not_run("needs root");
}

/// Records that the calling test did not run, and `why`; the first one
/// arranges for [`print_not_run`] at exit, so the run ends with one
/// summary instead of looking like a clean pass.
pub(crate) fn not_run(why: &str) {
    let name = thread::current().name().unwrap_or("(unnamed)").to_string();
    let mut list = NOT_RUN.lock().unwrap_or_else(|p| p.into_inner());
    if list.is_empty() {
        // SAFETY: atexit(3) only stores the pointer of a function that
        // takes nothing and never unwinds across the C boundary.
        unsafe { nix::libc::atexit(print_not_run) };
    }
    list.push((name, why.to_string()));
}

/// At exit, after libtest's own summary: which tests did not run, why, and
/// how to run them (straight to stderr, past the test harness's capture).
extern "C" fn print_not_run() {
    let _ = std::panic::catch_unwind(|| {
        let mut list = NOT_RUN.lock().unwrap_or_else(|p| p.into_inner()).clone();
        list.sort();
        let lines: String = list
            .iter()
            .map(|(name, why)| format!("  {name}: {why}\n"))
            .collect();
        let text = format!(
            "\nNOT RUN: {} tests counted as passed without running:\n{lines}\
             Run root-only tests as root and install what is missing \
             (README.md, \"Tests that need root\"; .ci/run installs every tool).\n",
            list.len(),
        );
        let _ = std::io::stderr().write_all(text.as_bytes());
    });
}

/// Whether `name` is installed; under CI a missing tool fails the test.
pub(crate) fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{name} is required for this test under CI (install it: .ci/run does)"
    );
    if !found {
        not_run(&format!("`{name}` is not installed"));
    }
    found
}

/// A system account created for one test, removed afterwards.
pub(crate) struct SystemUser {
    pub(crate) name: String,
    pub(crate) uid: u32,
}

impl SystemUser {
    pub(crate) fn create(password: &str) -> SystemUser {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("ipt{}x{n}", std::process::id());
        let ok = Command::new("useradd")
            .args(["-M", "-N", "-s", "/usr/sbin/nologin", &name])
            .status()
            .expect("useradd (package passwd)");
        assert!(ok.success(), "useradd {name}");
        let mut chpasswd = Command::new("chpasswd")
            .args(["-c", "YESCRYPT"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd");
        let shadow = std::fs::read_to_string("/etc/shadow").unwrap();
        assert!(
            shadow.contains(&format!("{name}:$y$")),
            "yescrypt hash in /etc/shadow"
        );
        let uid = nix::unistd::User::from_name(&name)
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        SystemUser { name, uid }
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// A temp root with `mail/USER` (0600, owned by the user) and a config.
pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) conf: PathBuf,
}

pub(crate) fn setup(user: &SystemUser, extra: &str) -> Setup {
    setup_with(user, "system", extra)
}

/// [`setup`] with another `passdb` (pam.rs uses `pam`).
pub(crate) fn setup_with(user: &SystemUser, passdb: &str, extra: &str) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("ironpop-daemon-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Like /var/mail (root:mail 2775): the daemon's group may create
    // dot-locks next to the spools.
    let mail = root.join("mail");
    std::fs::create_dir(&mail).unwrap();
    nix::unistd::chown(&mail, None, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let spool = mail.join(&user.name);
    std::fs::write(
        &spool,
        "From a@example.org Mon Jan  1 00:00:00 2024\nSubject: one\n\nhello\n",
    )
    .unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(&spool, Some(nix::unistd::Uid::from_raw(user.uid)), None).unwrap();
    let state = root.join("state");
    std::fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let conf = root.join("ironpop.conf");
    std::fs::write(
        &conf,
        format!(
            "listen = 127.0.0.1:0\nuser = nobody\ngroup = nogroup\npassdb = {passdb}\n\
             mailbox = {}/%u\nstate_dir = {}\npid_file = {root}/pid\ncontrol_socket = {root}/control\n\
             plaintext_auth = always\nauth_fail_delay = 0\n{extra}",
            mail.display(),
            state.display(),
            root = root.display()
        ),
    )
    .unwrap();
    Setup { dir, conf }
}

/// A running `ironpop -F`, its stderr collected.
pub(crate) struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub(crate) fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("start ironpop");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Server { child, log }
    }

    pub(crate) fn start(conf: &Path) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("-F").arg("-f").arg(conf);
        Server::spawn(cmd)
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn addr(&self) -> String {
        let line = self.wait_log("listening on ");
        let rest = &line[line.find("listening on ").unwrap() + 13..];
        rest.split(' ').next().unwrap().to_string()
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    pub(crate) fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "ironpop did not exit:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn helpers(&self) -> Vec<i32> {
        let out = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &self.pid().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Uid/Gid/Groups lines of /proc/PID/status.
pub(crate) fn ids(pid: i32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .map(|l| {
                l[k.len()..]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

/// A line-based POP3 client over any stream.
pub(crate) struct Client<S: Read + Write> {
    reader: BufReader<S>,
}

impl<S: Read + Write> Client<S> {
    pub(crate) fn new(stream: S) -> Client<S> {
        let mut c = Client {
            reader: BufReader::new(stream),
        };
        let greeting = c.line();
        assert!(greeting.starts_with("+OK"), "greeting {greeting:?}");
        c
    }

    pub(crate) fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        l
    }

    pub(crate) fn cmd(&mut self, c: &str) -> String {
        let s = self.reader.get_mut();
        s.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        s.flush().unwrap();
        self.line()
    }

    pub(crate) fn multi(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            if l == ".\r\n" || l.is_empty() {
                return lines;
            }
            lines.push(l);
        }
    }
}

pub(crate) fn tcp(addr: &str) -> Client<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    Client::new(s)
}
