//! Dovecot as the same-run comparison: Debian's dovecot-core (installed) with dovecot-pop3d's binaries unpacked beside it, as a private instance on loopback ports.
//!
//! dovecot-pop3d provides and conflicts with `pop3-server`, like ironpop's
//! own package, so it is never installed: its `pop3` and `pop3-login` are
//! unpacked with `dpkg -x` (tests/support/deb_fetch.rs) in the version of
//! the installed dovecot-core, and the config (benches/dovecot/dovecot.conf)
//! points `service pop3` and `service pop3-login` at them. Dovecot reads
//! the bench's passwd file and a copy of its spools; it needs root.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::popa3d::deb_fetch::{run, unpacked};
use super::{give_to_nobody, tree_cpu_seconds, Client};

const TEMPLATE: &str = include_str!("../dovecot/dovecot.conf");

/// A running Dovecot master (`dovecot -F`, a child of the bench).
pub struct Dovecot {
    child: Child,
    pub addr: SocketAddr,
    pub tls_addr: SocketAddr,
    dir: PathBuf,
}

fn free_port() -> Result<u16, String> {
    // Dovecot cannot listen on port 0, so an ephemeral port is picked here
    // and released; the race with other programs is harmless in a bench.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// The installed dovecot-core's version, which the unpacked binaries match.
fn core_version() -> Result<String, String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "dovecot-core"])
        .output()
        .map_err(|e| format!("cannot run dpkg-query: {e}"))?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !v.is_empty() && Path::new("/usr/sbin/dovecot").is_file() {
        Ok(v)
    } else {
        Err("dovecot-core is not installed (apt-get install dovecot-core)".into())
    }
}

impl Dovecot {
    /// Starts Dovecot on `root`'s `passwd`, a copy of `root/mail` and
    /// `root/{cert,key}.pem`, allowing `clients` concurrent sessions.
    pub fn start(root: &Path, clients: usize) -> Result<Dovecot, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root (Dovecot's master starts as root)".into());
        }
        let version = core_version()?;
        let cache = format!(
            "ironpop-dovecot-pop3d-{}",
            version.replace([':', '+', '~'], "_")
        );
        let pop3 = unpacked(
            &format!("dovecot-pop3d={version}"),
            &cache,
            "usr/lib/dovecot/pop3",
        )?;
        let pop3_login = pop3.with_file_name("pop3-login");
        let dir = root.join("dovecot");
        for sub in ["run", "state", "home"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        run(
            "cp",
            &[
                "-a",
                &root.join("mail").display().to_string(),
                &dir.join("mail").display().to_string(),
            ],
        )?;
        give_to_nobody(&dir.join("mail"));
        give_to_nobody(&dir.join("home"));
        let (port, port_tls) = (free_port()?, free_port()?);
        let conf = TEMPLATE
            .replace("@ROOT@", &root.display().to_string())
            .replace("@PID@", &std::process::id().to_string())
            .replace("@UID@", "65534")
            .replace("@GID@", "65534")
            .replace("@CLIENTS@", &(clients + 100).to_string())
            .replace("@POP3_LOGIN@", &pop3_login.display().to_string())
            .replace("@POP3@", &pop3.display().to_string())
            .replace("@PORT_TLS@", &port_tls.to_string())
            .replace("@PORT@", &port.to_string());
        let conf_path = dir.join("dovecot.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let child = Command::new("/usr/sbin/dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start dovecot: {e}"))?;
        let mut d = Dovecot {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls_addr: SocketAddr::from(([127, 0, 0, 1], port_tls)),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Client::connect(d.addr).is_err() {
            if Instant::now() > deadline || d.child.try_wait().ok().flatten().is_some() {
                return Err(format!(
                    "dovecot did not start; its log:\n{}",
                    std::fs::read_to_string(d.dir.join("dovecot.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    /// CPU seconds of the master and every process under it, exited
    /// login and pop3 processes included.
    pub fn cpu_seconds(&self) -> f64 {
        tree_cpu_seconds(self.child.id())
    }

    /// Lines of Dovecot's log with `needle` (errors to show).
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("dovecot.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its children; then it is reaped.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}
