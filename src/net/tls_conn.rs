//! The server side of a TLS connection: the handshake under a deadline, and the stream the session runs over.

use crate::counters::{self, Counter};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};

use crate::config::CertUserField;
use crate::limits::{MAX_HANDSHAKE_TIME, TLS_SEND_BUFFER};
use crate::net::client_cert;
use crate::net::socket::Socket;
use crate::net::tls::TlsReloader;

/// A session's TLS stream and what the handshake established.
#[derive(Debug)]
pub struct TlsConn {
    pub stream: StreamOwned<ServerConnection, Socket>,
    /// The account a verified client certificate names (AUTH EXTERNAL).
    pub cert_identity: Option<String>,
    /// That certificate's chain, for the passdb to verify at login.
    pub client_chain: Option<crate::account::ClientChain>,
}

impl TlsConn {
    /// e.g. "TLSv1_3 TLS13_AES_256_GCM_SHA384", for log lines.
    pub fn describe(&self) -> String {
        let conn = &self.stream.conn;
        let version = conn
            .protocol_version()
            .map_or_else(|| "unknown".to_string(), |v| format!("{v:?}"));
        let suite = conn
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".to_string(), |s| format!("{:?}", s.suite()));
        format!("{version} {suite}")
    }
}

/// Why a handshake did not complete. Logged; the client just sees the
/// connection close (after a TLS alert where rustls has one to send).
#[derive(Debug)]
pub enum HandshakeError {
    Timeout(Duration),
    /// The client closed the connection mid-handshake.
    Eof,
    /// The client's messages were refused (old TLS version, no common
    /// cipher suite, ALPN for another protocol, not TLS at all, ...).
    Tls(String),
    Io(io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Timeout(t) => {
                write!(f, "TLS handshake not finished within {}s", t.as_secs())
            }
            HandshakeError::Eof => {
                f.write_str("client closed the connection during the TLS handshake")
            }
            HandshakeError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            HandshakeError::Io(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// What every TLS handshake needs: the reloadable configuration, the
/// certificate field naming accounts, and the time limit.
pub struct TlsService {
    reloader: Arc<TlsReloader>,
    cert_user: CertUserField,
    timeout: Duration,
}

impl TlsService {
    pub fn new(reloader: Arc<TlsReloader>, cert_user: CertUserField, timeout: Duration) -> Self {
        TlsService {
            reloader,
            cert_user,
            timeout: timeout.clamp(Duration::from_millis(1), MAX_HANDSHAKE_TIME),
        }
    }

    pub fn reloader(&self) -> &TlsReloader {
        &self.reloader
    }

    /// Runs the server handshake on `tcp` with the configuration in force
    /// now. `peer` is for log lines. The socket's timeouts are left unset.
    pub fn accept(&self, tcp: impl Into<Socket>, peer: &str) -> Result<TlsConn, HandshakeError> {
        let result = self.handshake(tcp.into(), peer);
        if result.is_err() {
            counters::bump(Counter::TlsHandshakesFailed);
        }
        result
    }

    fn handshake(&self, mut tcp: Socket, peer: &str) -> Result<TlsConn, HandshakeError> {
        // Every TLS path (worker, STLS, `-i --tls` on a TCP stdin) comes
        // through here: replies are assembled, so never wait on Nagle.
        tcp.set_nodelay(true).map_err(HandshakeError::Io)?;
        let ctx = self.reloader.current();
        let mut conn = ServerConnection::new(Arc::clone(&ctx.server))
            .map_err(|e| HandshakeError::Tls(e.to_string()))?;
        conn.set_buffer_limit(Some(TLS_SEND_BUFFER));
        let deadline = Instant::now() + self.timeout;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HandshakeError::Timeout(self.timeout));
            }
            tcp.set_read_timeout(Some(left))
                .map_err(HandshakeError::Io)?;
            tcp.set_write_timeout(Some(left))
                .map_err(HandshakeError::Io)?;
            match conn.complete_io(&mut tcp) {
                Ok((0, 0)) if conn.is_handshaking() => return Err(HandshakeError::Eof),
                Ok(_) => {}
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted => {}
                    io::ErrorKind::UnexpectedEof => return Err(HandshakeError::Eof),
                    io::ErrorKind::InvalidData => {
                        return Err(HandshakeError::Tls(
                            e.into_inner().map_or_else(String::new, |i| i.to_string()),
                        ))
                    }
                    _ => return Err(HandshakeError::Io(e)),
                },
            }
        }
        let _ = tcp.set_read_timeout(None);
        let _ = tcp.set_write_timeout(None);
        let cert_identity = client_cert::account_of(
            ctx.client_verifier.as_deref(),
            conn.peer_certificates(),
            self.cert_user,
            peer,
        );
        // Kept only when it names an account: EXTERNAL is offered then only.
        let client_chain = cert_identity
            .as_ref()
            .and_then(|_| client_cert::keep_chain(conn.peer_certificates()));
        let tls = TlsConn {
            stream: StreamOwned::new(conn, tcp),
            cert_identity,
            client_chain,
        };
        log::debug!(
            "TLS established: rip={peer} {}{}",
            tls.describe(),
            tls.cert_identity
                .as_deref()
                .map(|u| format!(" certificate names {u}"))
                .unwrap_or_default()
        );
        Ok(tls)
    }
}

#[cfg(test)]
mod tests;
