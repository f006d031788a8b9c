//! What a pool worker does with an admitted connection: wrap it in a `Conn` and drive one POP3 session.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::auth::throttle::{Throttle, ThrottledAuth};
use crate::config::{Config, PlaintextAuth};
use crate::daemon::acceptor::Job;
use crate::daemon::privsep::Accounts;
use crate::net::driver::{self, Timeouts};
use crate::net::Conn;
use crate::pop3::{Backend, Session};

/// Everything sessions share, built once at startup.
pub struct Server {
    pub accounts: Accounts,
    pub throttle: Arc<Throttle>,
    pub plaintext_auth: PlaintextAuth,
    pub timeouts: Timeouts,
    /// Set at shutdown, so sessions ended by it say so in the log.
    pub stopping: Arc<AtomicBool>,
}

impl Server {
    pub fn new(config: &Config, accounts: Accounts, throttle: Arc<Throttle>) -> Server {
        Server {
            accounts,
            throttle,
            plaintext_auth: config.plaintext_auth,
            timeouts: Timeouts::from_config(config),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Serves one connection to its end. The job's ticket is released when
    /// this returns, giving the client's per-address slot back.
    pub fn serve(&self, job: Job) {
        let Job {
            stream,
            peer,
            ticket: _ticket,
            tls,
        } = job;
        if tls {
            // Hook for the TLS work: wrap `stream` in the server config's
            // handshake here. Until then a POP3S socket cannot be served.
            log::warn!(
                "connection from {} on an implicit-TLS socket, but this build has no TLS support; closing",
                peer.ip()
            );
            return;
        }
        // Accepted sockets are blocking on Linux, not on every Unix.
        let conn = match stream
            .set_nonblocking(false)
            .and_then(|()| Conn::tcp(stream))
        {
            Ok(conn) => conn,
            Err(e) => {
                log::debug!("connection from {peer} lost before the greeting: {e}");
                return;
            }
        };
        let settings = driver::session_settings(&conn, self.plaintext_auth);
        let (auth, maildrops) = self.accounts.for_session();
        let backend = Backend {
            auth: Arc::new(ThrottledAuth {
                inner: auth,
                throttle: Arc::clone(&self.throttle),
                ip: Some(peer.ip()),
            }),
            maildrops,
        };
        let mut session = Session::new(backend, settings);
        let ended = driver::serve(conn, &mut session, &self.timeouts, &self.stopping);
        log::debug!("connection from {peer} ended: {ended:?}");
    }
}
