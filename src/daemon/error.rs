//! `DaemonError`: why the daemon could not start or keep running, in an administrator's words.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug)]
pub enum DaemonError {
    /// The config names no address to listen on.
    NoListeners,
    /// `max_sessions` needs more file descriptors than the limit allows.
    Descriptors(String),
    /// A listening socket could not be set up.
    Listen { addr: SocketAddr, source: io::Error },
    /// Another instance owns the pid file.
    AlreadyRunning { pid_file: PathBuf, pid: i32 },
    /// The pid file could not be checked or written.
    PidFile { path: PathBuf, source: io::Error },
    /// Privilege separation could not be set up: the account database,
    /// the helpers, or the privilege drop.
    Privsep(crate::privsep::error::PrivsepError),
    /// The TLS certificate, key or client CA cannot be used.
    Tls(crate::pki::files::TlsError),
    /// A system call the daemon depends on failed; `what` says which step.
    System {
        what: &'static str,
        source: io::Error,
    },
    /// The demo directory could not be prepared.
    Demo { path: PathBuf, source: io::Error },
    /// systemd's socket-activation variables or sockets are unusable.
    Activation(String),
    /// The last privileged helper process ended while the daemon ran, or
    /// none answers any more (every channel given up as hung).
    HelperDied(String),
    /// Implicit TLS was asked for and cannot be provided.
    TlsUnavailable(String),
    /// Startup checks failed (each `CONFIG: key: reason`, as `-t` says).
    Preflight(Vec<String>),
}

impl DaemonError {
    pub fn system(what: &'static str, source: impl Into<io::Error>) -> DaemonError {
        DaemonError::System {
            what,
            source: source.into(),
        }
    }
}

fn listen_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => " (is another POP3 server or ironpop already running?)",
        io::ErrorKind::PermissionDenied => " (ports below 1024 need root)",
        io::ErrorKind::AddrNotAvailable => " (no local interface has this address)",
        _ => "",
    }
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::NoListeners => f.write_str("no listen address is configured"),
            DaemonError::Descriptors(detail) => f.write_str(detail),
            DaemonError::Listen { addr, source } => {
                write!(
                    f,
                    "cannot listen on {addr}: {source}{}",
                    listen_hint(source)
                )
            }
            DaemonError::AlreadyRunning { pid_file, pid } => write!(
                f,
                "ironpop is already running as pid {pid} (pid file {})",
                pid_file.display()
            ),
            DaemonError::PidFile { path, source } => {
                write!(f, "cannot write pid_file {}: {source}", path.display())
            }
            DaemonError::Privsep(e) => write!(f, "{e}"),
            DaemonError::Tls(e) => write!(f, "cannot set up TLS: {e}"),
            DaemonError::System { what, source } => write!(f, "cannot {what}: {source}"),
            DaemonError::Demo { path, source } => {
                write!(f, "cannot prepare demo in {}: {source}", path.display())
            }
            DaemonError::Activation(detail) => write!(f, "socket activation: {detail}"),
            DaemonError::HelperDied(detail) => write!(
                f,
                "{detail}; with no helper left no login can be checked: exiting (restart ironpop)"
            ),
            DaemonError::TlsUnavailable(detail) => write!(f, "{detail}"),
            DaemonError::Preflight(problems) => write!(
                f,
                "not starting: {} (ironpop -t checks the same)",
                problems.join("; ")
            ),
        }
    }
}

impl std::error::Error for DaemonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DaemonError::Listen { source, .. }
            | DaemonError::PidFile { source, .. }
            | DaemonError::System { source, .. }
            | DaemonError::Demo { source, .. } => Some(source),
            DaemonError::Tls(e) => Some(e),
            DaemonError::Privsep(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::privsep::error::PrivsepError> for DaemonError {
    fn from(e: crate::privsep::error::PrivsepError) -> DaemonError {
        DaemonError::Privsep(e)
    }
}
