//! PROXY protocol end to end: v1/v2 headers from a trusted loopback proxy name the client for logs, plaintext policy, per-address limit and implicit TLS.

use std::net::{Ipv4Addr, TcpStream};

use crate::harness::*;
use crate::tls::{Pki, TlsClient};

fn v1(src: &str, sport: u16) -> Vec<u8> {
    format!("PROXY TCP4 {src} 198.51.100.1 {sport} 110\r\n").into_bytes()
}

fn v2(src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x13".to_vec();
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&[198, 51, 100, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&995u16.to_be_bytes());
    // A TLV (PP2_TYPE_AUTHORITY "pop"), which the server skips.
    h.extend_from_slice(b"\x02\x00\x04pop3");
    h
}

fn proxied_server(plaintext_auth: &str) -> TestServer {
    ServerBuilder::new()
        .set("plaintext_auth", plaintext_auth)
        .set("proxy_protocol_from", "127.0.0.1 192.0.2.254")
        .set("max_sessions_per_ip", "1")
        .spool("alice", mbox(&messages(1)))
        .start()
}

/// Connects to `server` and sends `header` before reading anything.
fn through_proxy(server: &TestServer, header: &[u8]) -> Client {
    let mut c = server.connect();
    c.send_raw(header);
    c
}

#[test]
fn v1_and_v2_headers_name_the_client_in_the_log() {
    let server = proxied_server("always");
    let mut c = through_proxy(&server, &v1("192.0.2.7", 40001));
    c.greeting();
    c.login(ALICE);
    c.quit();
    let mut c = through_proxy(&server, &v2(Ipv4Addr::new(203, 0, 113, 9), 40002));
    c.greeting();
    c.send("USER alice");
    assert_ok(&c.line(), "USER");
    c.send("PASS wrong");
    assert_err(&c.line(), "PASS");
    c.quit();
    assert!(
        server.wait_for_log(
            "login: user=alice method=USER rip=192.0.2.7 lip=198.51.100.1",
            IO_TIMEOUT
        ),
        "{}",
        server.log()
    );
    assert!(
        server.wait_for_log("rip=203.0.113.9 failures=1", IO_TIMEOUT),
        "a failed login is logged (and throttled) for the proxied client: {}",
        server.log()
    );
    assert!(
        !server.log().contains("rip=127.0.0.1"),
        "the proxy's address never stands for a client: {}",
        server.log()
    );
}

#[test]
fn plaintext_localhost_does_not_trust_a_proxied_remote_client() {
    let server = proxied_server("localhost");
    let mut c = through_proxy(&server, &v2(Ipv4Addr::new(192, 0, 2, 7), 40003));
    c.greeting();
    c.err("USER alice");
    c.quit();
    // A client the proxy says is on the proxy host is local.
    let mut c = through_proxy(&server, &v1("127.0.0.1", 40004));
    c.greeting();
    c.login(ALICE);
    c.quit();
}

#[test]
fn untrusted_peer_header_is_a_bad_command() {
    let server = ServerBuilder::new()
        .set("proxy_protocol_from", "192.0.2.254")
        .start();
    let mut c = server.connect();
    c.greeting();
    let reply = c.cmd("PROXY TCP4 192.0.2.7 198.51.100.1 40005 110");
    assert_err(&reply, "PROXY from an untrusted peer");
    c.login(ALICE);
    c.quit();
    assert!(
        server.wait_for_log("rip=127.0.0.1", IO_TIMEOUT),
        "{}",
        server.log()
    );
}

#[test]
fn missing_or_malformed_header_closes_without_a_greeting() {
    let server = proxied_server("always");
    let mut c = through_proxy(&server, b"USER alice\r\n");
    assert_eq!(c.expect_closed(IO_TIMEOUT), Vec::<String>::new());
    let mut c = through_proxy(&server, b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 110\r\n");
    assert_eq!(c.expect_closed(IO_TIMEOUT), Vec::<String>::new());
    assert!(
        server.wait_for_log(
            "closing connection from proxy 127.0.0.1: the connection did not start with a PROXY protocol header",
            IO_TIMEOUT
        ),
        "{}",
        server.log()
    );
    assert!(
        server.wait_for_log("malformed PROXY v1 header: port", IO_TIMEOUT),
        "{}",
        server.log()
    );
}

#[test]
fn per_address_limit_applies_to_the_proxied_client() {
    let server = proxied_server("always");
    let mut first = through_proxy(&server, &v1("192.0.2.7", 40006));
    first.greeting();
    let mut second = through_proxy(&server, &v1("192.0.2.7", 40007));
    let lines = second.expect_closed(IO_TIMEOUT);
    assert_eq!(
        lines,
        vec!["-ERR [SYS/TEMP] too many connections from your address\r\n".to_string()]
    );
    // Another client behind the same proxy is not affected.
    let mut other = through_proxy(&server, &v1("192.0.2.8", 40008));
    other.greeting();
    other.quit();
    first.quit();
    assert!(
        server.wait_for_log(
            "refused connection: rip=192.0.2.7 reason=too many sessions",
            IO_TIMEOUT
        ),
        "{}",
        server.log()
    );
}

#[test]
fn header_comes_before_the_implicit_tls_handshake() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path(), "proxy");
    let (crt, key) = pki.leaf("server", "localhost", false, false);
    let server = ServerBuilder::new()
        .set("plaintext_auth", "localhost")
        .set("proxy_protocol_from", "127.0.0.1")
        .spool("alice", mbox(&messages(1)))
        .line("listen_tls = 127.0.0.1:0")
        .line(&format!("tls_cert = {}", crt.display()))
        .line(&format!("tls_key = {}", key.display()))
        .start();
    assert!(
        server.wait_for_log("(pop3s)", IO_TIMEOUT),
        "no pop3s listener: {}",
        server.log()
    );
    let tls_addr: std::net::SocketAddr = server
        .log()
        .lines()
        .find_map(|l| {
            let rest = &l[l.find("listening on ")? + "listening on ".len()..];
            rest.strip_suffix(" (pop3s)")?.trim().parse().ok()
        })
        .expect("pop3s address in the log");
    let mut sock = TcpStream::connect(tls_addr).unwrap();
    std::io::Write::write_all(&mut sock, &v2(Ipv4Addr::new(203, 0, 113, 10), 40009)).unwrap();
    let mut c = TlsClient::over(pki.rustls_client(None), sock);
    assert_eq!(c.line(), "+OK ironpop ready");
    assert!(
        c.cmd("USER alice").starts_with("+OK"),
        "TLS makes USER fine"
    );
    assert!(c
        .cmd(&format!("PASS {}", ALICE.password))
        .starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(
        server.wait_for_log(
            "login: user=alice method=USER rip=203.0.113.10 lip=198.51.100.1 tls=TLSv1.3",
            IO_TIMEOUT
        ),
        "{}",
        server.log()
    );
}

#[test]
fn failed_stls_handshake_is_logged_under_the_proxied_client() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path(), "proxy-stls");
    let (crt, key) = pki.leaf("server", "localhost", false, false);
    let server = ServerBuilder::new()
        .set("proxy_protocol_from", "127.0.0.1")
        .spool("alice", mbox(&messages(1)))
        .line(&format!("tls_cert = {}", crt.display()))
        .line(&format!("tls_key = {}", key.display()))
        .start();
    let mut c = through_proxy(&server, &v1("203.0.113.11", 40011));
    assert!(c.line().starts_with("+OK"));
    assert!(c.cmd("STLS").starts_with("+OK"));
    // Not a TLS ClientHello: the handshake fails and the server hangs up.
    c.send_raw(b"this is not TLS\r\n");
    assert!(
        server.wait_for_log("STLS: rip=203.0.113.11", IO_TIMEOUT),
        "{}",
        server.log()
    );
}
