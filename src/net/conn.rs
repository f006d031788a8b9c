//! `Conn`: one client connection, whatever carries it (plain TCP, TLS over TCP, or inetd's stdin/stdout).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crate::limits;
use crate::net::socket::Socket;
use crate::net::stdio::Stdio;
use crate::net::tls_conn::TlsConn;

/// A client connection. The session driver only sees `Read + Write` and the
/// few socket controls below, so TLS (`rustls::StreamOwned`) and inetd's
/// stdin/stdout slot in as further variants without touching the driver.
#[derive(Debug)]
pub enum Conn {
    /// Plain POP3 over TCP.
    Tcp(Socket),
    /// POP3 over TLS (implicit, or after STLS).
    Tls(Box<TlsConn>),
    /// inetd mode: the client on stdin/stdout.
    Stdio(Stdio),
}

impl Conn {
    /// Wraps an accepted TCP connection. Replies are assembled into whole
    /// writes by the driver, so Nagle's algorithm only adds delayed-ACK
    /// stalls (DESIGN.md "Performance budget"): it is switched off.
    pub fn tcp(stream: impl Into<Socket>) -> io::Result<Conn> {
        let stream = stream.into();
        stream.set_nodelay(true)?;
        Ok(Conn::Tcp(stream))
    }

    /// The TCP socket under a plain or TLS connection; inetd's stdin and
    /// stdout otherwise.
    fn carrier(&self) -> Result<&TcpStream, &Stdio> {
        match self {
            Conn::Tcp(s) => Ok(s),
            Conn::Tls(t) => Ok(&t.stream.sock),
            Conn::Stdio(s) => Err(s),
        }
    }

    /// How long a read may block; `None` blocks forever. A zero duration
    /// is treated as the shortest possible wait rather than an error.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        match self.carrier() {
            Ok(socket) => socket.set_read_timeout(timeout),
            Err(stdio) => stdio.set_read_timeout(timeout),
        }
    }

    /// How long a write may block (a client that stops reading).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        match self.carrier() {
            Ok(socket) => socket.set_write_timeout(timeout),
            Err(stdio) => stdio.set_write_timeout(timeout),
        }
    }

    /// The client's address, if the transport has one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self.carrier() {
            Ok(socket) => socket.peer_addr().ok(),
            Err(stdio) => stdio.peer_addr(),
        }
    }

    /// Our side's address (the `lip=` of log lines), if it has one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self.carrier() {
            Ok(socket) => socket.local_addr().ok(),
            Err(stdio) => stdio.local_addr(),
        }
    }

    /// `true` when the client is on this host (loopback), which
    /// `plaintext_auth = localhost` treats as a secure channel.
    pub fn is_loopback(&self) -> bool {
        self.peer_addr().is_some_and(|a| is_loopback_ip(a.ip()))
    }

    /// `true` when the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// The account a verified TLS client certificate names.
    pub fn cert_identity(&self) -> Option<&str> {
        match self {
            Conn::Tls(t) => t.cert_identity.as_deref(),
            Conn::Tcp(_) | Conn::Stdio(_) => None,
        }
    }

    /// The chain of that certificate, for the passdb to verify at login.
    pub fn client_chain(&self) -> Option<&crate::account::ClientChain> {
        match self {
            Conn::Tls(t) => t.client_chain.as_ref(),
            Conn::Tcp(_) | Conn::Stdio(_) => None,
        }
    }

    /// Ends the connection: a TLS close_notify first (best effort, it
    /// must not block long on a client that stopped reading), then
    /// [`shutdown`](Self::shutdown).
    pub fn close(&mut self) {
        if let Conn::Tls(t) = self {
            let _ = t
                .stream
                .sock
                .set_write_timeout(Some(limits::CLOSE_NOTIFY_WRITE_TIMEOUT));
            t.stream.conn.send_close_notify();
            let _ = t.stream.flush();
        }
        self.shutdown();
    }

    /// Best-effort orderly close of both directions.
    pub fn shutdown(&self) {
        match self.carrier() {
            Ok(socket) => {
                let _ = socket.shutdown(Shutdown::Both);
            }
            Err(stdio) => stdio.shutdown(),
        }
    }
}

/// Loopback test that also recognises IPv4-mapped IPv6 (`::ffff:127.0.0.1`).
pub fn is_loopback_ip(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            // A client that hangs up without close_notify has not cut a
            // command short (only complete lines are executed): plain EOF.
            Conn::Tls(t) => match t.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
            Conn::Stdio(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Tls(t) => t.stream.write(buf),
            Conn::Stdio(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write_vectored(bufs),
            Conn::Tls(t) => t.stream.write_vectored(bufs),
            Conn::Stdio(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Tls(t) => t.stream.flush(),
            Conn::Stdio(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn loopback_detection_covers_mapped_addresses() {
        assert!(is_loopback_ip("127.0.0.1".parse().unwrap()));
        assert!(is_loopback_ip("127.8.9.1".parse().unwrap()));
        assert!(is_loopback_ip("::1".parse().unwrap()));
        assert!(is_loopback_ip("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback_ip("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!is_loopback_ip("192.0.2.1".parse().unwrap()));
        assert!(!is_loopback_ip("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn tcp_conn_round_trip_and_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut conn = Conn::tcp(server).unwrap();
        assert!(conn.is_loopback());
        assert!(!conn.is_tls());
        assert_eq!(
            conn.peer_addr().unwrap(),
            client.local_addr().unwrap(),
            "peer is the client's address"
        );
        conn.write_all(b"+OK\r\n").unwrap();
        let mut got = [0u8; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"+OK\r\n");
        conn.set_read_timeout(Some(Duration::ZERO)).unwrap();
        let err = conn.read(&mut got).unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
    }
}
