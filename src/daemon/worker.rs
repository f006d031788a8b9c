//! What a pool worker does with an admitted connection: wrap it in a `Conn` and drive one POP3 session.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::auth::throttle::{Throttle, ThrottledAuth};
use crate::config::{Config, PlaintextAuth};
use crate::daemon::acceptor::Job;
use crate::daemon::privsep::Accounts;
use crate::net::driver::{self, Timeouts};
use crate::net::tls_conn::TlsService;
use crate::net::Conn;
use crate::pop3::{Backend, Session};

/// Everything sessions share, built once at startup.
pub struct Server {
    /// Account checks and maildrops: direct, or through the helpers.
    pub accounts: Accounts,
    /// Failed logins per client address.
    pub throttle: Arc<Throttle>,
    pub plaintext_auth: PlaintextAuth,
    pub timeouts: Timeouts,
    /// Set at shutdown, so sessions ended by it say so in the log.
    pub stopping: Arc<AtomicBool>,
    /// With `tls_cert`: implicit-TLS handshakes and STLS.
    pub tls: Option<Arc<TlsService>>,
}

impl Server {
    pub fn new(
        config: &Config,
        accounts: Accounts,
        throttle: Arc<Throttle>,
        tls: Option<Arc<TlsService>>,
    ) -> Server {
        Server {
            accounts,
            throttle,
            plaintext_auth: config.plaintext_auth,
            timeouts: Timeouts::from_config(config),
            stopping: Arc::new(AtomicBool::new(false)),
            tls,
        }
    }

    /// Serves one connection to its end. The job's ticket is released when
    /// this returns, giving the client's per-address slot back.
    pub fn serve(&self, job: Job) {
        let Job {
            stream,
            peer,
            tls,
            ticket: _ticket,
        } = job;
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
        let conn = match (conn, tls, self.tls.as_deref()) {
            (Conn::Tcp(tcp), true, Some(service)) => match service.accept(tcp, &peer.to_string()) {
                Ok(tls) => Conn::Tls(Box::new(tls)),
                Err(e) => {
                    log::info!("pop3s: rip={peer}: {e}");
                    return;
                }
            },
            (_, true, _) => {
                log::error!("connection from {peer} on a TLS listener, but TLS is not set up");
                return;
            }
            (conn, false, _) => conn,
        };
        let mut settings = driver::session_settings(&conn, self.plaintext_auth);
        settings.stls_offered = self.tls.is_some() && !conn.is_tls();
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
        let ended = driver::serve_with_tls(
            conn,
            &mut session,
            &self.timeouts,
            &self.stopping,
            self.tls.as_deref(),
        );
        log::debug!("connection from {peer} ended: {ended:?}");
    }
}
