//! systemd integration without libsystemd: socket activation (`LISTEN_FDS`) and readiness notification (`NOTIFY_SOCKET`).

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::socket::{getsockopt, sockopt, SockType};

use crate::daemon::error::DaemonError;
use crate::daemon::listeners::Listener;
use crate::limits::MAX_LISTEN_FDS;

/// sd_listen_fds(3): passed descriptors start here.
const LISTEN_FDS_START: RawFd = 3;

/// The `FileDescriptorName=` that marks an implicit-TLS socket.
pub const TLS_NAME: &str = "pop3s";

/// What the `LISTEN_*` variables say, before any descriptor is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub count: usize,
    pub names: Vec<String>,
}

/// Parses the variables; `Ok(None)` when they are absent or meant for
/// another process (`LISTEN_PID` is not `pid`).
pub fn parse_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> Result<Option<Passed>, String> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(own_pid) {
        return Ok(None);
    }
    let count: usize = fds
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={fds:?} is not a number"))?;
    if count > MAX_LISTEN_FDS {
        return Err(format!(
            "LISTEN_FDS={count}: more than {MAX_LISTEN_FDS} sockets"
        ));
    }
    let names = names
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Some(Passed { count, names }))
}

/// The sockets systemd passed, if it passed any. The variables are removed
/// so that nothing started later mistakes them for its own.
pub fn listeners_from_env() -> Result<Option<Vec<Listener>>, DaemonError> {
    let var = |k| std::env::var(k).ok();
    let passed = parse_env(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )
    .map_err(DaemonError::Activation)?;
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // Single-threaded at this point (startup), as remove_var requires.
        std::env::remove_var(k);
    }
    let Some(passed) = passed else {
        return Ok(None);
    };
    if passed.count == 0 {
        return Err(DaemonError::Activation(
            "systemd passed no sockets (LISTEN_FDS=0)".into(),
        ));
    }
    let mut listeners = Vec::with_capacity(passed.count);
    for i in 0..passed.count {
        let raw = LISTEN_FDS_START + i as RawFd;
        // SAFETY: sd_listen_fds(3): with LISTEN_PID naming this process,
        // descriptors 3 .. 3+LISTEN_FDS were passed to it open. While open,
        // their numbers cannot be handed to any other file, and nothing
        // before this point closes or wraps them, so this is their only
        // owner.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = passed.names.get(i).map_or("", String::as_str);
        let bad = |what: String| {
            DaemonError::Activation(format!("passed socket {raw} ({name:?}): {what}"))
        };
        match getsockopt(&fd, sockopt::SockType) {
            Ok(SockType::Stream) => {}
            Ok(t) => return Err(bad(format!("is a {t:?} socket, not a stream socket"))),
            Err(e) => return Err(bad(format!("is not a socket: {e}"))),
        }
        if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
            return Err(bad(
                "is not listening (for Accept=yes units run ironpop -i)".into(),
            ));
        }
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .and_then(|_| fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)))
            .map_err(|e| bad(format!("cannot set its flags: {e}")))?;
        let socket = TcpListener::from(fd);
        let local = socket
            .local_addr()
            .map_err(|e| bad(format!("is not a TCP socket: {e}")))?;
        let tls = name == TLS_NAME;
        log::info!(
            "listening on {local} ({}) (socket from systemd)",
            if tls { "pop3s" } else { "pop3" }
        );
        listeners.push(Listener { socket, local, tls });
    }
    Ok(Some(listeners))
}

/// Readiness notification to the service manager; a no-op without
/// `NOTIFY_SOCKET`. Connected at startup, so it keeps working after the
/// privilege drop.
pub struct Notifier {
    socket: Option<UnixDatagram>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            std::env::remove_var("NOTIFY_SOCKET");
            let sock = UnixDatagram::unbound().ok()?;
            let bytes = path.as_encoded_bytes();
            let connected = match bytes.split_first() {
                Some((b'@', name)) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name)
                        .and_then(|a| sock.connect_addr(&a))
                }
                _ => sock.connect(&path),
            };
            match connected {
                Ok(()) => Some(sock),
                Err(e) => {
                    log::warn!("cannot reach the service manager at NOTIFY_SOCKET: {e}");
                    None
                }
            }
        });
        Notifier { socket }
    }

    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier { socket: None }
    }

    /// Sends one sd_notify(3) state (`READY=1`, `STOPPING=1`, ...).
    pub fn notify(&self, state: &str) {
        if let Some(s) = &self.socket {
            if let Err(e) = s.send(state.as_bytes()) {
                log::debug!("sd_notify {state:?} failed: {e}");
            }
        }
    }

    /// `RELOADING=1` with the timestamp systemd wants for it.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
            t.tv_sec()
                .saturating_mul(1_000_000)
                .saturating_add(t.tv_nsec() / 1000)
        });
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_for_this_process_only() {
        assert_eq!(parse_env(None, Some("1"), None, 7), Ok(None));
        assert_eq!(parse_env(Some("8"), Some("1"), None, 7), Ok(None));
        assert_eq!(
            parse_env(Some("7"), Some("2"), Some("pop3:pop3s"), 7),
            Ok(Some(Passed {
                count: 2,
                names: vec!["pop3".into(), "pop3s".into()]
            }))
        );
        assert!(parse_env(Some("7"), Some("x"), None, 7).is_err());
        assert!(parse_env(Some("7"), Some("9999"), None, 7).is_err());
    }

    #[test]
    fn notifier_sends_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let sock = UnixDatagram::unbound().unwrap();
        sock.connect(&path).unwrap();
        let n = Notifier { socket: Some(sock) };
        n.notify("READY=1");
        n.reloading();
        let mut buf = [0u8; 128];
        let k = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1");
        let k = server.recv(&mut buf).unwrap();
        assert!(buf[..k].starts_with(b"RELOADING=1\nMONOTONIC_USEC="));
        Notifier::none().notify("READY=1");
    }
}
