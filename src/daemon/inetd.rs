//! inetd mode (`-i`): one session on stdin/stdout, with the same helper and privilege drop as the daemon.
//!
//! stdin and stdout are the client (under inetd, xinetd and a systemd
//! `Accept=yes` socket they are one socket), and so, usually, is stderr:
//! `main` points stderr at /dev/null before anything can be written, and
//! everything is logged to syslog.

use std::sync::atomic::AtomicBool;

use crate::config::Config;
use crate::daemon::error::DaemonError;
use crate::daemon::privsep;
use crate::net::driver::{self, Timeouts};
use crate::net::stdio::Stdio;
use crate::net::Conn;
use crate::pop3::{Backend, Session};

/// Serves the one session on stdin/stdout. `tls`: `-i --tls`, the
/// session starts with a TLS handshake (port 995).
pub fn run(config: &Config, tls: bool) -> Result<(), DaemonError> {
    if tls {
        // Hook for the TLS work: build the server config from tls_cert /
        // tls_key here (before the privilege drop) and wrap the Stdio in
        // the handshake below.
        return Err(DaemonError::Tls(if config.tls_enabled() {
            "ironpop -i --tls: this build has no TLS support yet".into()
        } else {
            "ironpop -i --tls needs tls_cert and tls_key in the config".into()
        }));
    }
    let stdio =
        Stdio::from_process().map_err(|e| DaemonError::system("take over stdin/stdout", e))?;
    // The helper replaces its own 0 and 1 with /dev/null; the session's
    // duplicates must be closed there too: it holds no client socket.
    let (input, output) = stdio.raw_fds();
    // One session, one helper: nothing else would use a second.
    let accounts = privsep::setup(config, 1, &[input, output])?;
    let conn = Conn::Stdio(stdio);
    let settings = driver::session_settings(&conn, config.plaintext_auth);
    log::debug!("inetd session from {}", settings.peer);
    let (auth, maildrops) = accounts.for_session();
    let mut session = Session::new(Backend { auth, maildrops }, settings);
    let ended = driver::serve(
        conn,
        &mut session,
        &Timeouts::from_config(config),
        &AtomicBool::new(false),
    );
    log::debug!("inetd session ended: {ended:?}");
    Ok(())
}

/// Keeps stray writes (a library's message, a panic's default output)
/// away from the client before the logger exists.
pub fn silence_stderr() {
    if let Ok(devnull) = std::fs::File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stderr(&devnull);
    }
}
