//! TLS configuration tests with rcgen certificates and in-memory handshakes.

use std::io::Write as _;

use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConnection};

use super::*;
use crate::limits::MAX_PEM_FILE;
use crate::net::test_pki::Pki;
use crate::pki::files::TlsError;

fn pump<A, B>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rest = &buf[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
    let mut c = ClientConnection::new(client, "localhost".try_into().unwrap())?;
    let mut s = ServerConnection::new(server)?;
    for _ in 0..10 {
        pump(&mut c, &mut s)?;
        pump(&mut s, &mut c)?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    panic!("handshake did not finish");
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

#[test]
fn good_pair_handshakes_and_carries_data() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files("srv");
    let server = load_tls(&cert, &key, None).unwrap();
    let (mut c, mut s) = handshake(server, pki.client_config(BOTH, None, &[])).unwrap();
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert!(s.peer_certificates().is_none());
    c.writer().write_all(b"CAPA\r\n").unwrap();
    pump(&mut c, &mut s).unwrap();
    let mut got = [0u8; 6];
    std::io::Read::read_exact(&mut s.reader(), &mut got).unwrap();
    assert_eq!(&got, b"CAPA\r\n");
}

#[test]
fn tls12_and_tls13_both_negotiated() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files("srv");
    let server = load_tls(&cert, &key, None).unwrap();
    for (v, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let (_, s) = handshake(server.clone(), pki.client_config(&[v], None, &[])).unwrap();
        assert_eq!(s.protocol_version(), Some(want));
    }
}

#[test]
fn only_tls12_and_tls13_configured() {
    let versions: Vec<_> = PROTOCOL_VERSIONS.iter().map(|v| v.version).collect();
    assert_eq!(
        versions,
        vec![
            rustls::ProtocolVersion::TLSv1_3,
            rustls::ProtocolVersion::TLSv1_2
        ]
    );
}

#[test]
fn tls11_client_hello_refused() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files("srv");
    let server = load_tls(&cert, &key, None).unwrap();
    // Take a TLS 1.2-only rustls hello and make it say TLS 1.1: in the
    // client_version field (after the 5-byte record and 4-byte handshake
    // headers) and in its supported_versions extension (type 0x002b,
    // length 3, list length 2, one version).
    let client = pki.client_config(&[&rustls::version::TLS12], None, &[]);
    let mut c = ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    assert_eq!(hello.get(9..11), Some(&[3u8, 3][..]));
    hello[10] = 2;
    let ext = [0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x03];
    if let Some(at) = hello.windows(ext.len()).position(|w| w == ext) {
        hello[at + 6] = 2;
    }
    assert!(!hello.windows(ext.len()).any(|w| w == ext));
    let mut s = ServerConnection::new(server).unwrap();
    s.read_tls(&mut &hello[..]).unwrap();
    let err = s.process_new_packets().unwrap_err();
    assert!(matches!(err, rustls::Error::PeerIncompatible(_)), "{err:?}");
}

#[test]
fn alpn_pop3_accepted_not_required() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files("srv");
    let server = load_tls(&cert, &key, None).unwrap();
    let (_, s) = handshake(server.clone(), pki.client_config(BOTH, None, &[b"pop3"])).unwrap();
    assert_eq!(s.alpn_protocol(), Some(ALPN_POP3));
    let (_, s) = handshake(server.clone(), pki.client_config(BOTH, None, &[])).unwrap();
    assert_eq!(s.alpn_protocol(), None);
    // ALPACA: a client that wants another protocol is not served POP3.
    assert!(handshake(server, pki.client_config(BOTH, None, &[b"imap"])).is_err());
}

#[test]
fn client_certificate_requested_not_required() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files("srv");
    let server = load_tls(&cert, &key, Some(&pki.ca_file())).unwrap();
    let (_, s) = handshake(server.clone(), pki.client_config(BOTH, None, &[])).unwrap();
    assert!(s.peer_certificates().is_none());
    let bob = pki.leaf("bob", true, false);
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (_, s) = handshake(
            server.clone(),
            pki.client_config(&[v], Some(bob.clone()), &[]),
        )
        .unwrap();
        let peer = s.peer_certificates().expect("client certificate");
        assert_eq!(
            peer[0].as_ref(),
            CertificateDer::from_pem_slice(bob.0.as_bytes())
                .unwrap()
                .as_ref()
        );
    }
}

#[test]
fn expired_or_untrusted_client_certificate_is_served_but_not_verified() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files("srv");
    let ctx = load_context(&cert, &key, Some(&pki.ca_file())).unwrap();
    let verifier = ctx.client_verifier.clone().expect("client CA configured");
    let expired = pki.leaf("bob", true, true);
    let stranger = Pki::new().leaf("bob", true, false);
    let good = pki.leaf("bob", true, false);
    for (client, valid) in [(expired, false), (stranger, false), (good, true)] {
        for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let (_, s) = handshake(
                ctx.server.clone(),
                pki.client_config(&[v], Some(client.clone()), &[]),
            )
            .expect("the handshake never fails over a client certificate");
            let chain = s.peer_certificates().expect("certificate kept");
            let verified = crate::pki::verified_chain(verifier.as_ref(), chain);
            assert_eq!(verified.is_ok(), valid, "{v:?}");
        }
    }
}

#[test]
fn client_certificate_ignored_without_client_ca() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files("srv");
    let server = load_tls(&cert, &key, None).unwrap();
    let bob = pki.leaf("bob", true, false);
    let (_, s) = handshake(server, pki.client_config(BOTH, Some(bob), &[])).unwrap();
    assert!(s.peer_certificates().is_none());
}

fn load_err(cert: &Path, key: &Path, ca: Option<&Path>) -> (TlsError, String) {
    let err = load_tls(cert, key, ca).expect_err("load must fail");
    let text = err.to_string();
    (err, text)
}

#[test]
fn mismatched_pair_refused() {
    let pki = Pki::new();
    let (cert, _) = pki.server_files("a");
    let (_, other_key) = pki.server_files("b");
    let (err, text) = load_err(&cert, &other_key, None);
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    assert!(
        text.contains("does not belong to the certificate"),
        "{text}"
    );
    assert!(text.contains("b.key") && text.contains("a.crt"), "{text}");
}

#[test]
fn missing_and_unreadable_files_refused() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files("srv");
    let missing = pki.path("nope.pem");
    let (err, text) = load_err(&missing, &key, None);
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    assert!(
        text.starts_with("cannot read TLS certificate file (tls_cert)")
            && text.contains("nope.pem"),
        "{text}"
    );
    let (_, text) = load_err(&cert, &missing, None);
    assert!(
        text.starts_with("cannot read TLS key file (tls_key)"),
        "{text}"
    );
    let (_, text) = load_err(&cert, &key, Some(&missing));
    assert!(text.starts_with("cannot read TLS client CA file"), "{text}");
    // A directory opens but cannot be read.
    let (err, _) = load_err(pki.dir.path(), &key, None);
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
}

#[test]
fn wrong_contents_refused() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files("srv");
    // The key file where the certificate belongs, and the other way round.
    let (err, text) = load_err(&key, &key, None);
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert!(text.contains("contains no certificate"), "{text}");
    let (err, text) = load_err(&cert, &cert, None);
    assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
    assert!(text.contains("contains no private key"), "{text}");
    let empty = pki.write("empty.pem", "");
    assert!(matches!(
        load_err(&empty, &key, None).0,
        TlsError::NoCertificate { .. }
    ));
    let truncated = std::fs::read_to_string(&cert).unwrap();
    let truncated = pki.write("trunc.pem", &truncated[..truncated.len() / 3]);
    let (err, text) = load_err(&truncated, &key, None);
    assert!(matches!(err, TlsError::BadPem { .. }), "{err:?}");
    assert!(text.contains("is not valid PEM"), "{text}");
    let (err, _) = load_err(&cert, &key, Some(&key));
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
}

#[test]
fn oversized_file_refused() {
    let pki = Pki::new();
    let (_, key) = pki.server_files("srv");
    let big = pki.write("big.pem", &"x".repeat(MAX_PEM_FILE as usize + 1));
    assert!(matches!(
        load_err(&big, &key, None).0,
        TlsError::TooLarge { .. }
    ));
}

#[test]
fn reloader_swaps_for_new_connections_only() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files("live");
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: None,
    };
    let reloader = TlsReloader::new(files.clone()).unwrap();
    assert_eq!(reloader.files(), &files);
    let before = reloader.current().server.clone();
    assert!(Arc::ptr_eq(&before, &reloader.current().server));

    // A broken file on SIGHUP keeps the old configuration.
    std::fs::write(&key, "garbage").unwrap();
    assert!(reloader.reload().is_err());
    assert!(Arc::ptr_eq(&before, &reloader.current().server));

    // A new pair from another CA is served to new connections; the old
    // configuration still works for whoever holds it.
    let other = Pki::new();
    let (new_cert, new_key) = other.server_files("new");
    std::fs::copy(new_cert, &cert).unwrap();
    std::fs::copy(new_key, &key).unwrap();
    reloader.reload().unwrap();
    let after = reloader.current().server.clone();
    assert!(!Arc::ptr_eq(&before, &after));
    assert!(handshake(after.clone(), other.client_config(BOTH, None, &[])).is_ok());
    assert!(handshake(after, pki.client_config(BOTH, None, &[])).is_err());
    assert!(handshake(before, pki.client_config(BOTH, None, &[])).is_ok());
}
