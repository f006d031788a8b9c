//! TLS over loopback sockets: handshake limits, client-certificate identity, and STLS through the driver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::thread;

use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::*;
use crate::config::PlaintextAuth;
use crate::net::driver::{self, Ended, Timeouts};
use crate::net::test_pki::Pki;
use crate::net::tls::{TlsFiles, TlsReloader};
use crate::net::Conn;
use crate::pop3::Session;

/// A service with `pki`'s server certificate, requesting client
/// certificates from the same CA.
fn service(pki: &Pki, timeout: Duration) -> TlsService {
    let (cert, key) = pki.leaf("localhost", false, false);
    let files = TlsFiles {
        cert: pki.write("srv.crt", &cert),
        key: pki.write("srv.key", &key),
        client_ca: Some(pki.ca_file()),
    };
    TlsService::new(
        Arc::new(TlsReloader::new(files).unwrap()),
        CertUserField::Cn,
        timeout,
    )
}

fn client_config(pki: &Pki, cert: Option<(String, String)>) -> Arc<ClientConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    pki.client_config(versions, cert, &[])
}

fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (client, server)
}

fn tls_client(
    config: Arc<ClientConfig>,
    sock: TcpStream,
) -> StreamOwned<ClientConnection, TcpStream> {
    let conn = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    StreamOwned::new(conn, sock)
}

#[test]
fn silent_client_times_out() {
    let pki = Pki::new();
    let service = service(&pki, Duration::from_millis(300));
    let (_client, server) = pair();
    let started = Instant::now();
    let err = service.accept(server, "test").unwrap_err();
    assert!(matches!(err, HandshakeError::Timeout(_)), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(err.to_string().contains("not finished within"), "{err}");
}

#[test]
fn plain_text_is_refused() {
    let pki = Pki::new();
    let service = service(&pki, Duration::from_secs(10));
    let (mut client, server) = pair();
    client.write_all(b"CAPA\r\n").unwrap();
    let err = service.accept(server, "test").unwrap_err();
    assert!(matches!(err, HandshakeError::Tls(_)), "{err}");
    let (client, server) = pair();
    drop(client);
    let err = service.accept(server, "test").unwrap_err();
    assert!(
        matches!(err, HandshakeError::Eof | HandshakeError::Io(_)),
        "{err}"
    );
}

/// Runs a handshake with the client's certificate; returns the identity.
fn identity_with(pki: &Pki, client_cert: Option<(String, String)>) -> Option<String> {
    let service = service(pki, Duration::from_secs(10));
    let (client, server) = pair();
    let config = client_config(pki, client_cert);
    let talker = thread::spawn(move || {
        let mut tls = tls_client(config, client);
        tls.write_all(b"x").unwrap();
        tls.flush().unwrap();
        let mut buf = [0u8; 1];
        let _ = tls.read(&mut buf);
    });
    let mut conn = service.accept(server, "test").expect("handshake succeeds");
    let mut got = [0u8; 1];
    conn.stream.read_exact(&mut got).unwrap();
    conn.stream.write_all(b"y").unwrap();
    conn.stream.flush().unwrap();
    talker.join().unwrap();
    conn.cert_identity
}

#[test]
fn client_certificates_name_accounts_only_when_valid() {
    let pki = Pki::new();
    assert_eq!(identity_with(&pki, None), None);
    assert_eq!(
        identity_with(&pki, Some(pki.leaf("bob", true, false))),
        Some("bob".into())
    );
    // Expired and untrusted: the handshake succeeds, no account is named.
    assert_eq!(identity_with(&pki, Some(pki.leaf("bob", true, true))), None);
    let stranger = Pki::new();
    assert_eq!(
        identity_with(&pki, Some(stranger.leaf("bob", true, false))),
        None
    );
}

/// A plain session with STLS offered, served on a thread, to which the
/// client sends `sent` (STLS first) in one segment; returns the client's
/// socket, a reader over it past the server's go-ahead, and the server.
fn after_stls(
    pki: &Pki,
    sent: &[u8],
) -> (TcpStream, BufReader<TcpStream>, thread::JoinHandle<Ended>) {
    let (client, server) = pair();
    let handle = stls_server(pki, server);
    let mut clear = BufReader::new(client.try_clone().unwrap());
    assert_eq!(read_line(&mut clear), "+OK ironpop ready\r\n");
    (&client).write_all(sent).unwrap();
    assert_eq!(read_line(&mut clear), "+OK Begin TLS negotiation\r\n");
    (client, clear, handle)
}

fn stls_server(pki: &Pki, server: TcpStream) -> thread::JoinHandle<Ended> {
    let service = service(pki, Duration::from_secs(10));
    thread::spawn(move || {
        let conn = Conn::tcp(server).unwrap();
        let mut settings = driver::session_settings(&conn, PlaintextAuth::TlsOnly);
        settings.stls_offered = true;
        let mut session = Session::new(driver::tests::no_accounts(), settings);
        let timeouts = Timeouts {
            auth: Duration::from_secs(20),
            idle: Duration::from_secs(20),
            auth_fail_delay: Duration::ZERO,
        };
        driver::serve_with_tls(
            conn,
            &mut session,
            &timeouts,
            &AtomicBool::new(false),
            Some(&service),
            &crate::net::live::LiveSession::default(),
        )
    })
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

#[test]
fn commands_pipelined_after_stls_are_never_executed() {
    let pki = Pki::new();
    // The injection: CAPA rides in the same segment as STLS.
    let (client, clear, handle) = after_stls(&pki, b"STLS\r\nCAPA\r\n");
    assert!(clear.buffer().is_empty(), "nothing more in clear");
    drop(clear);
    let mut tls = BufReader::new(tls_client(client_config(&pki, None), client));
    tls.get_mut()
        .write_all(b"NOOP\r\nCAPA\r\nQUIT\r\n")
        .unwrap();
    let mut lines = Vec::new();
    loop {
        let line = read_line(&mut tls);
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    // NOOP's error comes first: no CAPA answer was queued before it.
    assert_eq!(
        lines[0],
        "-ERR NOOP is not valid in AUTHORIZATION state\r\n"
    );
    let capas = lines
        .iter()
        .filter(|l| l.starts_with("+OK capability"))
        .count();
    assert_eq!(capas, 1, "{lines:?}");
    assert!(
        lines.contains(&"USER\r\n".into()),
        "plaintext allowed over TLS"
    );
    assert!(!lines.contains(&"STLS\r\n".into()), "{lines:?}");
    assert_eq!(lines.last().unwrap(), "+OK ironpop signing off\r\n");
    assert_eq!(handle.join().unwrap(), Ended::Closed);
}

#[test]
fn failed_stls_handshake_closes_the_connection() {
    let pki = Pki::new();
    let (client, mut clear, handle) = after_stls(&pki, b"STLS\r\n");
    (&client).write_all(b"USER alice\r\n").unwrap();
    assert_eq!(handle.join().unwrap(), Ended::Error);
    let mut rest = Vec::new();
    let _ = clear.read_to_end(&mut rest);
    assert!(
        !rest.starts_with(b"+OK") && !rest.starts_with(b"-ERR"),
        "{rest:?}"
    );
}
