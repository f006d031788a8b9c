//! What a pool worker does with an admitted connection: wrap it in a `Conn` and drive one POP3 session.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::auth::access::Access;
use crate::auth::throttle::{Throttle, ThrottledAuth};
use crate::config::{Config, PlaintextAuth};
use crate::daemon::acceptor::Job;
use crate::daemon::admission::{self, Admission};
use crate::daemon::sessions::Ticket;
use crate::limits::MAX_PROXY_HEADER_WAIT;
use crate::net::conn::is_loopback_ip;
use crate::net::driver::{self, Timeouts};
use crate::net::proxy::Header;
use crate::net::proxy_read;
use crate::net::tls_conn::TlsService;
use crate::net::Conn;
use crate::pop3::{Backend, Session};

/// Everything sessions share, built once at startup.
pub struct Server {
    /// Account checks and maildrops: direct, or through the helpers.
    pub access: Access,
    /// Failed logins per client address.
    pub throttle: Arc<Throttle>,
    /// For a proxied client, once its header names it.
    pub admission: Arc<Admission>,
    pub plaintext_auth: PlaintextAuth,
    pub timeouts: Timeouts,
    /// Set at shutdown, so sessions ended by it say so in the log.
    pub stopping: Arc<AtomicBool>,
    /// With `tls_cert`: implicit-TLS handshakes and STLS.
    pub tls: Option<Arc<TlsService>>,
}

/// Where a connection comes from, after any PROXY header.
struct Endpoints {
    /// The client: `rip=`, `plaintext_auth = localhost`, throttle and
    /// per-address limit all go by it.
    client: SocketAddr,
    /// The address the client connected to (`lip=`), when a proxy said.
    local: Option<SocketAddr>,
}

impl Server {
    pub fn new(
        config: &Config,
        access: Access,
        throttle: Arc<Throttle>,
        admission: Arc<Admission>,
        tls: Option<Arc<TlsService>>,
    ) -> Server {
        Server {
            access,
            throttle,
            admission,
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
            mut ticket,
            proxied,
            submitted: _,
        } = job;
        ticket.live.activity.serving();
        let ends = if proxied {
            match self.proxied_client(&stream, peer, tls, &mut ticket) {
                Some(ends) => ends,
                None => return,
            }
        } else {
            Endpoints {
                client: peer,
                local: None,
            }
        };
        let peer = ends.client;
        let local_port = ends
            .local
            .or_else(|| stream.local_addr().ok())
            .map_or(0, |a| a.port());
        ticket.live.connected(peer, local_port);
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
        if proxied {
            // The proxy's own address (often loopback) must not pass for
            // the client's: a remote client is never "localhost".
            settings.peer = peer.ip().to_canonical().to_string();
            settings.plaintext_allowed = driver::plaintext_allowed(
                self.plaintext_auth,
                conn.is_tls(),
                is_loopback_ip(peer.ip()),
            );
            if let Some(local) = ends.local {
                settings.local = local.ip().to_canonical().to_string();
            }
        }
        let (auth, maildrops) = self.access.for_session();
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
            &ticket.live,
        );
        log::debug!("connection from {peer} ended: {ended:?}");
        drop(ticket);
    }

    /// Reads a trusted proxy's header and admits the client it names under
    /// the acceptor's rules. `None` when the connection is closed instead
    /// (logged).
    fn proxied_client(
        &self,
        stream: &TcpStream,
        proxy: SocketAddr,
        tls: bool,
        ticket: &mut Ticket,
    ) -> Option<Endpoints> {
        let wait = self.timeouts.auth.min(MAX_PROXY_HEADER_WAIT);
        let header = match proxy_read::read_header(stream, wait) {
            Ok(header) => header,
            Err(e) => {
                log::warn!(
                    "closing connection from proxy {}: {e}",
                    proxy.ip().to_canonical()
                );
                return None;
            }
        };
        let _ = stream.set_read_timeout(None);
        let ends = match header {
            Header::Proxied {
                source,
                destination,
            } => Endpoints {
                client: source,
                local: Some(destination),
            },
            Header::Local | Header::Unknown => Endpoints {
                client: proxy,
                local: None,
            },
        };
        log::debug!("proxy {proxy} forwards {header:?}");
        let ip: IpAddr = ends.client.ip().to_canonical();
        if let Err(refusal) = self.admission.admit_proxied(ticket, ip) {
            admission::log_refusal(ip, refusal);
            admission::refuse(stream, refusal, tls);
            return None;
        }
        Some(ends)
    }
}
