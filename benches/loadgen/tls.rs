//! TLS for the load bench: a throwaway CA and server certificate (rcgen) written for ironpop and Dovecot, and a POP3 client over plain TCP, implicit TLS or STLS.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::IO_TIMEOUT;

/// The server certificate's files and a client configuration that trusts it.
pub struct Pki {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: Arc<ClientConfig>,
}

impl Pki {
    /// A CA and a `localhost` certificate it signed, written under `dir`.
    pub fn new(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let leaf = CertificateParams::new(vec!["localhost".into()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, leaf.pem() + &ca.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).expect("CA as a root");
        let mut client =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        // Every login is a new client: a full handshake each time.
        client.resumption = rustls::client::Resumption::disabled();
        Pki {
            cert: cert_path,
            key: key_path,
            client: Arc::new(client),
        }
    }
}

/// How a client reaches the POP3 dialogue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    Plain,
    /// POP3S: TLS from the first byte.
    Implicit,
    /// STLS on the plain port (RFC 2595).
    Stls,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A POP3 client over any transport.
pub struct Conn {
    io: BufReader<Box<dyn Stream>>,
}

fn tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn over_tls(config: &Arc<ClientConfig>, sock: TcpStream) -> io::Result<Box<dyn Stream>> {
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    Ok(Box::new(StreamOwned::new(conn, sock)))
}

impl Conn {
    /// Connects and reads the greeting (after STLS: the dialogue is in TLS
    /// when this returns). `tls` is needed for the TLS transports.
    pub fn open(
        addr: SocketAddr,
        transport: Transport,
        tls: Option<&Arc<ClientConfig>>,
    ) -> io::Result<Conn> {
        let sock = tcp(addr)?;
        let config = || tls.ok_or_else(|| io::Error::other("no TLS client configuration"));
        let mut conn = match transport {
            Transport::Plain => Conn::wrap(Box::new(sock)),
            Transport::Implicit => Conn::wrap(over_tls(config()?, sock)?),
            Transport::Stls => {
                let mut plain = Conn::wrap(Box::new(sock.try_clone()?));
                plain.ok("greeting")?;
                plain.cmd("STLS")?;
                // Nothing follows +OK until the handshake, so nothing is
                // left in the plain reader's buffer. No new greeting: the
                // handshake runs with the first command.
                return Ok(Conn::wrap(over_tls(config()?, sock)?));
            }
        };
        conn.ok("greeting")?;
        Ok(conn)
    }

    fn wrap(stream: Box<dyn Stream>) -> Conn {
        Conn {
            io: BufReader::with_capacity(16 * 1024, stream),
        }
    }

    pub fn line(&mut self) -> io::Result<String> {
        super::reply_line(&mut self.io)
    }

    fn ok(&mut self, what: &str) -> io::Result<String> {
        super::positive(self.line()?, what)
    }

    pub fn send(&mut self, line: &str) -> io::Result<()> {
        let s = self.io.get_mut();
        s.write_all(format!("{line}\r\n").as_bytes())?;
        s.flush()
    }

    /// One command, one `+OK` line.
    pub fn cmd(&mut self, cmd: &str) -> io::Result<String> {
        self.send(cmd)?;
        self.ok(cmd)
    }

    pub fn login(&mut self, user: &str, pass: &str) -> io::Result<()> {
        self.cmd(&format!("USER {user}"))?;
        self.cmd(&format!("PASS {pass}"))?;
        Ok(())
    }

    /// QUIT, then read until the server closes (its logout is done).
    pub fn quit(mut self) -> io::Result<()> {
        self.cmd("QUIT")?;
        let mut sink = Vec::new();
        // A TLS peer may close without close_notify; the session is over.
        let _ = self.io.read_to_end(&mut sink);
        Ok(())
    }
}
