//! What a pool worker does with an admitted connection: wrap it in a `Conn` and drive one POP3 session.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::config::{Config, PlaintextAuth};
use crate::daemon::acceptor::Job;
use crate::mailbox::MaildropOpener;
use crate::net::driver::{self, Timeouts};
use crate::net::Conn;
use crate::pop3::{Backend, Session};

/// Everything sessions share, built once at startup.
pub struct Server {
    pub auth: Arc<dyn Authenticator>,
    pub maildrops: Arc<dyn MaildropOpener>,
    pub plaintext_auth: PlaintextAuth,
    pub timeouts: Timeouts,
    /// Set at shutdown, so sessions ended by it say so in the log.
    pub stopping: Arc<AtomicBool>,
}

impl Server {
    pub fn new(
        config: &Config,
        auth: Arc<dyn Authenticator>,
        maildrops: Arc<dyn MaildropOpener>,
    ) -> Server {
        Server {
            auth,
            maildrops,
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
        let settings = driver::session_settings(&conn, self.plaintext_auth);
        let backend = Backend {
            auth: Arc::clone(&self.auth),
            maildrops: Arc::clone(&self.maildrops),
        };
        let mut session = Session::new(backend, settings);
        let ended = driver::serve(conn, &mut session, &self.timeouts, &self.stopping);
        log::debug!("connection from {peer} ended: {ended:?}");
    }
}
