//! inetd mode (`-i`): one session on stdin/stdout, with the same helper and privilege drop as the daemon.
//!
//! stdin and stdout are the client (under inetd, xinetd and a systemd
//! `Accept=yes` socket they are one socket), and so, usually, is stderr:
//! `main` points stderr at /dev/null before anything can be written, and
//! everything is logged to syslog.

use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::AtomicBool;

use nix::sys::socket::{getsockopt, sockopt, SockType};

use crate::auth::access::Access;
use crate::config::Config;
use crate::daemon::error::DaemonError;
use crate::net::driver::{self, Timeouts};
use crate::net::stdio::Stdio;
use crate::net::Conn;
use crate::pop3::{Backend, Session};
use crate::privsep::fork as privsep;

/// Serves the one session on stdin/stdout. `tls`: `-i --tls`, the
/// session starts with a TLS handshake (port 995). When stdin is a TCP
/// socket (inetd, xinetd, systemd) it is served as one, with STLS when
/// TLS is configured; anything else (a pipe, a Unix socket) as plain
/// stdin/stdout.
pub fn run(config: &Config, tls: bool) -> Result<(), DaemonError> {
    // Keys are read as root, before the drop.
    let service = crate::daemon::tls_service(config)?;
    if tls && service.is_none() {
        return Err(DaemonError::TlsUnavailable(
            "ironpop -i --tls needs tls_cert and tls_key in the config".into(),
        ));
    }
    let stdio =
        Stdio::from_process().map_err(|e| DaemonError::system("take over stdin/stdout", e))?;
    let tcp = tcp_stdin(&stdio);
    if tls && tcp.is_none() {
        return Err(DaemonError::TlsUnavailable(
            "ironpop -i --tls needs stdin to be a TCP connection".into(),
        ));
    }
    // The helper replaces its own 0 and 1 with /dev/null; the session's
    // duplicates must be closed there too: it holds no client socket.
    let (input, output) = stdio.raw_fds();
    let mut close = vec![input, output];
    close.extend(tcp.as_ref().map(|t| t.as_raw_fd()));
    // One session, one helper: nothing else would use a second.
    let (access, startup) = Access::new(config, privsep::setup(config, 1, &close)?)?;
    // A cheap directory read when there is nothing to recover; the
    // helper's startup channel is closed before the client is read.
    crate::daemon::recover_before_service(config, startup);
    // The handshake parses what the client sends: after the drop.
    let conn = match (tcp, &service) {
        (Some(tcp), Some(service)) if tls => {
            let peer = tcp
                .peer_addr()
                .map_or_else(|_| "unknown".into(), |a| a.ip().to_string());
            match service.accept(tcp, &peer) {
                Ok(t) => Conn::Tls(Box::new(t)),
                Err(e) => {
                    log::info!("pop3s: rip={peer}: {e}");
                    return Ok(());
                }
            }
        }
        (Some(tcp), _) => {
            drop(stdio);
            Conn::tcp(tcp).map_err(|e| DaemonError::system("set up the connection", e))?
        }
        (None, _) => Conn::Stdio(stdio),
    };
    let mut settings = driver::session_settings(&conn, config.plaintext_auth);
    settings.stls_offered = service.is_some() && !conn.is_tls() && !matches!(conn, Conn::Stdio(_));
    log::debug!("inetd session from {}", settings.peer);
    let (auth, maildrops) = access.for_session();
    let mut session = Session::new(Backend { auth, maildrops }, settings);
    let ended = driver::serve_with_tls(
        conn,
        &mut session,
        &Timeouts::from_config(config),
        &AtomicBool::new(false),
        service.as_deref(),
        // One connection: nothing to evict it for, no table to show it in.
        &crate::net::live::LiveSession::default(),
    );
    log::debug!("inetd session ended: {ended:?}");
    Ok(())
}

/// stdin as a TCP stream, when it is one.
fn tcp_stdin(stdio: &Stdio) -> Option<TcpStream> {
    stdio.peer_addr()?;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => Some(TcpStream::from(fd)),
        _ => None,
    }
}

/// Keeps stray writes (a library's message, a panic's default output)
/// away from the client before the logger exists.
pub fn silence_stderr() {
    if let Ok(devnull) = std::fs::File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stderr(&devnull);
    }
}
