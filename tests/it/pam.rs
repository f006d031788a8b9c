//! `passdb = pam` (built with `--features pam`), as root: a system user logs in through the `ironpop` PAM stack and the privileged helper.
//!
//! Needs root (useradd, the helper) and `/etc/pam.d/ironpop`: when the
//! machine has none, the test installs packaging/pam.d/ironpop for its
//! duration. Run: `cargo test --features pam --test it pam`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ironpop");
const WAIT: Duration = Duration::from_secs(20);
const STACK: &str = "/etc/pam.d/ironpop";

/// A system account with a yescrypt password, removed afterwards.
struct SystemUser {
    name: String,
    uid: u32,
}

impl SystemUser {
    fn create(password: &str) -> SystemUser {
        let name = format!("ipam{}", std::process::id());
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
        let mut stdin = chpasswd.stdin.take().unwrap();
        stdin
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        drop(stdin);
        assert!(chpasswd.wait().unwrap().success(), "chpasswd");
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

/// /etc/pam.d/ironpop for the test's duration, if the machine has none.
struct Stack {
    installed: bool,
}

impl Stack {
    fn ensure() -> Stack {
        if Path::new(STACK).exists() {
            return Stack { installed: false };
        }
        let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/pam.d/ironpop");
        std::fs::copy(ours, STACK).expect("install /etc/pam.d/ironpop");
        Stack { installed: true }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.installed {
            let _ = std::fs::remove_file(STACK);
        }
    }
}

/// `ironpop -F` with its stderr collected.
struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(conf: &Path) -> Server {
        let mut child = Command::new(BIN)
            .arg("-F")
            .arg("-f")
            .arg(conf)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ironpop");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Server { child, log }
    }

    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log.lock().unwrap().clone();
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "no {needle:?} in:\n{log}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn addr(&self) -> String {
        let line = self.wait_log("listening on ");
        let rest = &line[line.find("listening on ").unwrap() + 13..];
        rest.split(' ').next().unwrap().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client(BufReader<TcpStream>);

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut c = Client(BufReader::new(s));
        assert!(c.line().starts_with("+OK"));
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.0.read_line(&mut l).unwrap();
        l
    }

    fn cmd(&mut self, c: &str) -> String {
        self.0
            .get_mut()
            .write_all(format!("{c}\r\n").as_bytes())
            .unwrap();
        self.line()
    }

    fn login(&mut self, user: &str, password: &str) -> String {
        assert!(self.cmd(&format!("USER {user}")).starts_with("+OK"));
        self.cmd(&format!("PASS {password}"))
    }
}

/// A temp root: `mail/USER` (0600, the user's), state dir, config.
fn setup(user: &SystemUser) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("ironpop-pam-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mail = root.join("mail");
    std::fs::create_dir(&mail).unwrap();
    nix::unistd::chown(&mail, None, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let spool = mail.join(&user.name);
    std::fs::write(&spool, "From a@b Mon Jan  1 00:00:00 2024\n\nhello\n").unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(&spool, Some(nix::unistd::Uid::from_raw(user.uid)), None).unwrap();
    let state = root.join("state");
    std::fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let conf = root.join("ironpop.conf");
    std::fs::write(
        &conf,
        format!(
            "listen = 127.0.0.1:0\nuser = nobody\ngroup = nogroup\npassdb = pam\n\
             mailbox = {}/%u\nstate_dir = {}\npid_file = {}/pid\nplaintext_auth = always\n\
             auth_fail_delay = 0\n",
            mail.display(),
            state.display(),
            root.display()
        ),
    )
    .unwrap();
    (dir, conf)
}

#[test]
fn pam_login_through_the_privileged_helper() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test needs root, and CI runs as root"
        );
        eprintln!("\n*** SKIPPED: this test needs root (CI runs as root) ***\n");
        return;
    }
    let _stack = Stack::ensure();
    let user = SystemUser::create("pam horse");
    let (_dir, conf) = setup(&user);
    let server = Server::start(&conf);
    let addr = server.addr();
    server.wait_log("privileges dropped to user=nobody");

    let mut c = Client::connect(&addr);
    let ok = c.login(&user.name, "pam horse");
    assert!(ok.starts_with("+OK maildrop has 1 messages"), "{ok}");
    assert!(c.cmd("QUIT").starts_with("+OK"));

    // pam_unix would sleep ~2 s on a failure; the helper's no-op
    // PAM_FAIL_DELAY takes that out (auth_fail_delay is 0 here).
    let mut c = Client::connect(&addr);
    let started = Instant::now();
    let refused = c.login(&user.name, "wrong horse");
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a failed PAM login took {:?}",
        started.elapsed()
    );
    let refused = c.login("no-such-pam-user", "pam horse");
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused}");

    // pam_acct_mgmt: an expired account is refused with the right password.
    assert!(Command::new("usermod")
        .args(["-e", "1970-01-02", &user.name])
        .status()
        .unwrap()
        .success());
    let refused = c.login(&user.name, "pam horse");
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused}");
    server.wait_log("login refused by PAM");
    assert!(
        !server.log.lock().unwrap().contains("pam horse"),
        "no password in the log"
    );
}
