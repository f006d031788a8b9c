//! popa3d as the same-run comparison: Debian's binary under a tiny inetd-style harness.
//!
//! Like tests/it/popa3d_compat.rs: the .deb is fetched with `apt-get
//! download` and unpacked with `dpkg -x` into the same cache directory (it
//! is never installed), and a temporary system account owns the spool,
//! because popa3d authenticates through PAM and reads `/var/mail/USER`. So
//! it needs root; everything it adds is removed on drop. The account's
//! password is the same cheap sha256-crypt hash ironpop's accounts get.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg};

#[path = "../../tests/support/deb_fetch.rs"]
pub mod deb_fetch;
use deb_fetch::{popa3d_binary as binary, run};

fn user_exists(name: &str) -> bool {
    matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
}

/// A running popa3d harness and the system changes behind it.
pub struct Popa3d {
    pub addr: SocketAddr,
    pub user: String,
    /// Sessions whose popa3d process has exited and been reaped.
    reaped: Arc<AtomicUsize>,
    /// Sessions whose popa3d process was started.
    spawned: Arc<AtomicUsize>,
    spool: Option<PathBuf>,
    created_user: bool,
    created_popa3d_user: bool,
    created_chroot: Option<PathBuf>,
    _lock: Flock<File>,
}

impl Popa3d {
    /// Sets up an account whose spool holds `spool`, and an inetd-style
    /// listener on loopback. `Err` says why the comparison cannot run.
    pub fn start(spool: &[u8], password_hash: &str) -> Result<Popa3d, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root (popa3d authenticates system accounts)".into());
        }
        // The compat test uses the same account machinery: one at a time.
        let lock_file = File::create(std::env::temp_dir().join("ironpop-popa3d-compat.lock"))
            .map_err(|e| e.to_string())?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| e.to_string())?;
        let bin = binary()?;
        let mut p = Popa3d {
            addr: "127.0.0.1:0".parse().map_err(|_| "addr")?,
            user: format!("ipbench{}", std::process::id() % 100_000),
            reaped: Arc::new(AtomicUsize::new(0)),
            spawned: Arc::new(AtomicUsize::new(0)),
            spool: None,
            created_user: false,
            created_popa3d_user: false,
            created_chroot: None,
            _lock: lock,
        };
        if !user_exists("popa3d") {
            run(
                "useradd",
                &[
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "popa3d",
                ],
            )?;
            p.created_popa3d_user = true;
        }
        let chroot = Path::new("/var/lib/popa3d");
        if !chroot.is_dir() {
            fs::create_dir_all(chroot).map_err(|e| e.to_string())?;
            p.created_chroot = Some(chroot.to_path_buf());
        }
        if user_exists(&p.user) {
            let _ = run("userdel", &[&p.user]);
        }
        run(
            "useradd",
            &[
                "-M",
                "-s",
                "/usr/sbin/nologin",
                "-p",
                password_hash,
                &p.user,
            ],
        )?;
        p.created_user = true;
        let path = Path::new("/var/mail").join(&p.user);
        fs::create_dir_all("/var/mail").map_err(|e| e.to_string())?;
        fs::write(&path, spool).map_err(|e| e.to_string())?;
        p.spool = Some(path.clone());
        let account = nix::unistd::User::from_name(&p.user)
            .ok()
            .flatten()
            .ok_or("the new account is missing")?;
        nix::unistd::chown(&path, Some(account.uid), None).map_err(|e| e.to_string())?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
        // popa3d waits a second when the spool's mtime is the current second.
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        p.addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (spawned, reaped) = (p.spawned.clone(), p.reaped.clone());
        thread::spawn(move || inetd(listener, bin, spawned, reaped));
        Ok(p)
    }

    pub fn reaped(&self) -> usize {
        self.reaped.load(Ordering::SeqCst)
    }

    /// Waits until every session started so far has been reaped.
    pub fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.reaped.load(Ordering::SeqCst) < self.spawned.load(Ordering::SeqCst)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Gives the account another password hash (the same password).
    pub fn set_hash(&self, hash: &str) -> Result<(), String> {
        run("usermod", &["-p", hash, &self.user])
    }
}

/// CPU seconds of every reaped child of this process (popa3d sessions;
/// the ironpop server is only reaped when the bench ends).
pub fn children_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// inetd: one popa3d process per connection, its stdin and stdout the socket.
fn inetd(listener: TcpListener, bin: PathBuf, spawned: Arc<AtomicUsize>, reaped: Arc<AtomicUsize>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(false); // inetd leaves Nagle on
        let Ok(input) = stream.try_clone() else {
            continue;
        };
        let child = Command::new(&bin)
            .stdin(Stdio::from(OwnedFd::from(input)))
            .stdout(Stdio::from(OwnedFd::from(stream)))
            .stderr(Stdio::null())
            .spawn();
        let reaped = reaped.clone();
        if let Ok(mut child) = child {
            spawned.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let _ = child.wait();
                reaped.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
}

impl Drop for Popa3d {
    fn drop(&mut self) {
        if let Some(spool) = &self.spool {
            let _ = fs::remove_file(spool);
        }
        if self.created_user {
            let _ = run("userdel", &[&self.user]);
        }
        if self.created_popa3d_user {
            let _ = run("userdel", &["popa3d"]);
        }
        if let Some(dir) = &self.created_chroot {
            let _ = fs::remove_dir(dir);
        }
    }
}
