//! TLS and SASL end to end: POP3S, STLS, plaintext policy, AUTH PLAIN/SCRAM/EXTERNAL, reload, with curl, poplib, openssl and rustls.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::harness::*;

/// A test CA with its files in `dir`.
pub(crate) struct Pki {
    dir: PathBuf,
    name: String,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("ironpop test CA {name}"));
        let pki = Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).unwrap();
        pki
    }

    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Writes a leaf's `.crt` and `.key`; returns their paths.
    pub(crate) fn leaf(
        &self,
        tag: &str,
        cn: &str,
        client: bool,
        expired: bool,
    ) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (crt, keyf) = (
            self.dir.join(format!("{}-{tag}.crt", self.name)),
            self.dir.join(format!("{}-{tag}.key", self.name)),
        );
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&keyf, key.serialize_pem()).unwrap();
        (crt, keyf)
    }

    pub(crate) fn rustls_client(
        &self,
        client_cert: Option<&(PathBuf, PathBuf)>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        Arc::new(match client_cert {
            None => builder.with_no_client_auth(),
            Some((crt, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(crt).unwrap()],
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
        })
    }
}

/// A server with a plain and an implicit-TLS listener, its CA, and the
/// directory of the certificates (kept alive with the server).
struct TlsServer {
    server: TestServer,
    pki: Pki,
    tls_addr: SocketAddr,
    _certs: tempfile::TempDir,
}

fn tls_server(plaintext_auth: &str, extra: &[&str]) -> TlsServer {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path(), "one");
    let (crt, key) = pki.leaf("server", "localhost", false, false);
    let mut b = ServerBuilder::new()
        .set("plaintext_auth", plaintext_auth)
        .spool("alice", mbox(&messages(2)))
        .line("listen_tls = 127.0.0.1:0")
        .line(&format!("tls_cert = {}", crt.display()))
        .line(&format!("tls_key = {}", key.display()))
        .line(&format!("tls_client_ca = {}", pki.ca_file().display()));
    for l in extra {
        b = b.passwd_line(l);
    }
    let server = b.start();
    let tls_addr = pop3s_addr(&server);
    TlsServer {
        server,
        pki,
        tls_addr,
        _certs: certs,
    }
}

/// The implicit-TLS listener's address, from the server's log.
pub(crate) fn pop3s_addr(server: &TestServer) -> SocketAddr {
    assert!(
        server.wait_for_log("(pop3s)", Duration::from_secs(10)),
        "no pop3s listener: {}",
        server.log()
    );
    server
        .log()
        .lines()
        .find_map(|l| {
            let rest = &l[l.find("listening on ")? + "listening on ".len()..];
            rest.strip_suffix(" (pop3s)")?.trim().parse().ok()
        })
        .expect("pop3s address in the log")
}

/// A line-oriented client over rustls.
pub(crate) struct TlsClient(BufReader<StreamOwned<ClientConnection, TcpStream>>);

impl TlsClient {
    pub(crate) fn over(config: Arc<ClientConfig>, sock: TcpStream) -> TlsClient {
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let conn = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        TlsClient(BufReader::new(StreamOwned::new(conn, sock)))
    }

    pub(crate) fn implicit(config: Arc<ClientConfig>, addr: SocketAddr) -> TlsClient {
        let mut c = TlsClient::over(config, TcpStream::connect(addr).unwrap());
        assert_eq!(c.line(), "+OK ironpop ready");
        c
    }

    pub(crate) fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).expect("read over TLS");
        line.trim_end_matches("\r\n").to_string()
    }

    pub(crate) fn cmd(&mut self, cmd: &str) -> String {
        let w = self.0.get_mut();
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        w.flush().unwrap();
        self.line()
    }

    fn capa(&mut self) -> Vec<String> {
        assert!(self.cmd("CAPA").starts_with("+OK"));
        std::iter::from_fn(|| Some(self.line()))
            .take_while(|l| l != ".")
            .collect()
    }
}

fn curl(args: &[&str]) -> Output {
    run(
        Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .args(args),
        b"",
        Duration::from_secs(60),
    )
}

fn curl_ok(args: &[&str]) -> String {
    let out = curl(args);
    assert!(out.status.success(), "curl {args:?}: {}", out.all_text());
    out.stdout_text()
}

#[test]
fn curl_pop3s_stls_and_sasl_plain() {
    if !require_tool("curl", &["--version"]) {
        return;
    }
    let t = tls_server("tls-only", &[]);
    let ca = t.pki.ca_file().display().to_string();
    let who = format!("{}:{}", ALICE.user, ALICE.password);
    let listing = curl_ok(&["--cacert", &ca, &format!("pop3s://{who}@{}/", t.tls_addr)]);
    assert!(listing.starts_with("1 "), "{listing}");
    let plain = format!("pop3://{who}@localhost:{}/", t.server.port());
    assert_eq!(curl_ok(&["--cacert", &ca, "--ssl-reqd", &plain]), listing);
    assert_eq!(
        curl_ok(&[
            "--cacert",
            &ca,
            "--ssl-reqd",
            "--sasl-ir",
            "--login-options",
            "AUTH=PLAIN",
            &plain
        ]),
        listing
    );
    // Without TLS the tls-only policy refuses the password.
    assert!(!curl(&[&plain]).status.success());
    assert!(
        t.server.log().contains("method=PLAIN"),
        "{}",
        t.server.log()
    );
    // Every login here was over TLS, implicit or after STLS, and the log
    // names the negotiated version for each.
    let log = t.server.log();
    let logins: Vec<&str> = log.lines().filter(|l| l.contains("login: ")).collect();
    assert_eq!(logins.len(), 3, "{logins:?}");
    assert!(
        logins
            .iter()
            .all(|l| l.contains(" tls=TLSv1.3") || l.contains(" tls=TLSv1.2")),
        "{logins:?}"
    );
}

#[test]
fn curl_auth_external_with_client_certificate() {
    if !require_tool("curl", &["--version"]) {
        return;
    }
    let t = tls_server("tls-only", &[]);
    let ca = t.pki.ca_file().display().to_string();
    let url = format!("pop3s://{}@{}/", ALICE.user, t.tls_addr);
    let (crt, key) = t.pki.leaf("alice", ALICE.user, true, false);
    let external = |crt: &Path, key: &Path| {
        curl(&[
            "--cacert",
            &ca,
            "--cert",
            &crt.display().to_string(),
            "--key",
            &key.display().to_string(),
            "--login-options",
            "AUTH=EXTERNAL",
            &url,
        ])
    };
    let out = external(&crt, &key);
    assert!(
        out.status.success(),
        "{}\n{}",
        out.all_text(),
        t.server.log()
    );
    assert!(out.stdout_text().starts_with("1 "));
    assert!(
        t.server.log().contains("login: user=alice method=EXTERNAL"),
        "{}",
        t.server.log()
    );
    let (old, old_key) = t.pki.leaf("old", ALICE.user, true, true);
    assert!(
        !external(&old, &old_key).status.success(),
        "expired accepted"
    );
    let stranger = Pki::new(t._certs.path(), "two");
    let (s_crt, s_key) = stranger.leaf("alice", ALICE.user, true, false);
    assert!(
        !external(&s_crt, &s_key).status.success(),
        "untrusted accepted"
    );
}

#[test]
fn invalid_client_certificates_name_nobody_but_passwords_work() {
    let t = tls_server("tls-only", &[]);
    let stranger = Pki::new(t._certs.path(), "two");
    let cases = [
        t.pki.leaf("old", ALICE.user, true, true),
        stranger.leaf("alice", ALICE.user, true, false),
    ];
    for cert in &cases {
        let mut c = TlsClient::implicit(t.pki.rustls_client(Some(cert)), t.tls_addr);
        assert!(!c.capa().iter().any(|l| l.contains("EXTERNAL")));
        assert_eq!(
            c.cmd("AUTH EXTERNAL ="),
            "-ERR [AUTH] no verified client certificate naming an account"
        );
        assert_eq!(c.cmd(&format!("USER {}", ALICE.user)), "+OK send PASS");
        assert!(c
            .cmd(&format!("PASS {}", ALICE.password))
            .starts_with("+OK maildrop"));
    }
    let good = t.pki.leaf("alice", ALICE.user, true, false);
    let mut c = TlsClient::implicit(t.pki.rustls_client(Some(&good)), t.tls_addr);
    assert!(c.capa().contains(&"SASL EXTERNAL PLAIN".to_string()));
    assert_eq!(
        c.cmd("AUTH EXTERNAL Ym9i"),
        "-ERR [AUTH] authorization identity must be empty or the authenticated user"
    );
    assert!(c.cmd("AUTH EXTERNAL =").starts_with("+OK maildrop"));
}

#[test]
fn stls_injection_is_not_executed() {
    let t = tls_server("tls-only", &[]);
    let mut sock = TcpStream::connect(t.server.addr()).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut clear = BufReader::new(sock.try_clone().unwrap());
    let mut line = String::new();
    clear.read_line(&mut line).unwrap();
    sock.write_all(b"STLS\r\nCAPA\r\n").unwrap();
    line.clear();
    clear.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK Begin TLS negotiation\r\n");
    assert!(clear.buffer().is_empty(), "CAPA answered in clear");
    drop(clear);
    let mut c = TlsClient::over(t.pki.rustls_client(None), sock);
    // The first reply inside TLS answers NOOP: no CAPA answer was queued.
    assert_eq!(
        c.cmd("NOOP"),
        "-ERR NOOP is not valid in AUTHORIZATION state"
    );
    let caps = c.capa();
    assert!(
        caps.contains(&"USER".into()) && !caps.contains(&"STLS".into()),
        "{caps:?}"
    );
    assert_eq!(c.cmd("STLS"), "-ERR TLS is already active");
}

#[test]
fn plaintext_policy_in_all_three_modes() {
    for (mode, allowed) in [("tls-only", false), ("localhost", true), ("always", true)] {
        let t = tls_server(mode, &[]);
        let mut c = t.server.greeted();
        let caps = c.capa();
        assert_eq!(
            caps.contains(&"USER".to_string()),
            allowed,
            "{mode}: {caps:?}"
        );
        assert_eq!(
            caps.contains(&"SASL PLAIN".to_string()),
            allowed,
            "{mode}: {caps:?}"
        );
        assert!(caps.contains(&"STLS".to_string()), "{mode}: {caps:?}");
        let reply = c.cmd(&format!("USER {}", ALICE.user));
        if allowed {
            assert_eq!(reply, "+OK send PASS", "{mode}");
        } else {
            let refused = "-ERR [AUTH] plaintext authentication is not allowed on this \
                           connection; use STLS";
            assert_eq!(reply, refused);
            assert_eq!(c.cmd("AUTH PLAIN AGFsaWNlAHg="), refused);
        }
        // Over TLS every mode allows passwords.
        let mut c = TlsClient::implicit(t.pki.rustls_client(None), t.tls_addr);
        assert!(c.capa().contains(&"USER".to_string()), "{mode}");
        assert!(!c.capa().contains(&"STLS".to_string()), "{mode}");
    }
}

#[test]
fn old_tls_versions_refused_and_starttls_pop3_works() {
    if !require_tool("openssl", &["version"]) {
        return;
    }
    let t = tls_server("tls-only", &[]);
    let ca = t.pki.ca_file().display().to_string();
    let s_client = |args: &[&str], input: &[u8]| {
        run(
            Command::new("openssl").arg("s_client").args(args),
            input,
            Duration::from_secs(30),
        )
    };
    for old in ["-tls1", "-tls1_1"] {
        let out = s_client(&["-connect", &t.tls_addr.to_string(), old], b"");
        let text = out.all_text();
        assert!(!text.contains("+OK ironpop ready"), "{old} served: {text}");
    }
    let out = s_client(
        &[
            "-connect",
            &t.tls_addr.to_string(),
            "-CAfile",
            &ca,
            "-verify_return_error",
            // Without it s_client hangs up at the end of its input, which
            // can be before the greeting has even arrived.
            "-ign_eof",
        ],
        b"QUIT\r\n",
    );
    assert!(
        out.stdout_text().contains("+OK ironpop ready"),
        "{}",
        out.all_text()
    );
    let text = out.stdout_text();
    assert!(
        text.contains("TLSv1.3") || text.contains("TLSv1.2"),
        "{text}"
    );
    let out = s_client(
        &[
            "-starttls",
            "pop3",
            "-connect",
            &t.server.addr().to_string(),
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-quiet",
        ],
        b"CAPA\r\nQUIT\r\n",
    );
    let text = out.stdout_text();
    assert!(
        text.contains("USER\r\n") && !text.contains("STLS"),
        "{}",
        out.all_text()
    );
}

const POPLIB_TLS: &str = r#"
import poplib, ssl, sys
host, port, tls_port, ca, user, pw = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
p = poplib.POP3_SSL(host, int(tls_port), context=ctx)
p.user(user); p.pass_(pw)
print("implicit", p.stat()[0]); p.quit()
p = poplib.POP3(host, int(port))
p.stls(context=ctx)
assert "STLS" not in p.capa()
p.user(user); p.pass_(pw)
print("stls", p.stat()[0]); p.quit()
"#;

#[test]
fn python_poplib_pop3_ssl_and_stls() {
    if !require_tool("python3", &["-c", "import poplib, ssl"]) {
        return;
    }
    let t = tls_server("tls-only", &[]);
    let out = run(
        Command::new("python3").args([
            "-c",
            POPLIB_TLS,
            "localhost",
            &t.server.port().to_string(),
            &t.tls_addr.port().to_string(),
            &t.pki.ca_file().display().to_string(),
            ALICE.user,
            ALICE.password,
        ]),
        b"",
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        out.all_text(),
        t.server.log()
    );
    assert_eq!(out.stdout_text(), "implicit 2\nstls 2\n");
}

/// A SCRAM-SHA-256 client written from RFC 5802, and the Dovecot-format
/// secret it logs in with, both in Python's standard library.
const SCRAM_CLIENT: &str = r#"
import base64, hashlib, hmac, os, socket, ssl, sys
host, port, user, pw, mode = sys.argv[1:]
b64 = lambda b: base64.b64encode(b).decode()
def salted(salt, it): return hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, it)
if mode == "secret":
    salt = b"ironpop-test-salt"; sp = salted(salt, 4096)
    ck = hmac.new(sp, b"Client Key", "sha256").digest()
    sk = hmac.new(sp, b"Server Key", "sha256").digest()
    print("{SCRAM-SHA-256}4096,%s,%s,%s" % (b64(salt), b64(hashlib.sha256(ck).digest()), b64(sk)))
    sys.exit(0)
s = socket.create_connection((host, int(port)), timeout=10)
f = s.makefile("rb")
def line(): return f.readline().decode().rstrip("\r\n")
def send(t): s.sendall(t.encode() + b"\r\n")
assert line().startswith("+OK")
nonce = b64(os.urandom(18))
bare = "n=%s,r=%s" % (user, nonce)
send("AUTH SCRAM-SHA-256 " + b64(("n,," + bare).encode()))
r = line(); assert r.startswith("+ "), r
first = base64.b64decode(r[2:]).decode()
a = dict(kv.split("=", 1) for kv in first.split(","))
assert a["r"].startswith(nonce)
sp = salted(base64.b64decode(a["s"]), int(a["i"]))
ck = hmac.new(sp, b"Client Key", "sha256").digest()
final = "c=biws,r=" + a["r"]
msg = ",".join([bare, first, final]).encode()
sig = hmac.new(hashlib.sha256(ck).digest(), msg, "sha256").digest()
send(b64((final + ",p=" + b64(bytes(x ^ y for x, y in zip(ck, sig)))).encode()))
r = line()
if not r.startswith("+ "):
    print(r); sys.exit(0)
sk = hmac.new(sp, b"Server Key", "sha256").digest()
assert base64.b64decode(r[2:]).decode() == "v=" + b64(hmac.new(sk, msg, "sha256").digest()), "server signature"
send("")
print(line())
"#;

fn python(args: &[&str]) -> String {
    let out = run(
        Command::new("python3")
            .arg("-c")
            .arg(SCRAM_CLIENT)
            .args(args),
        b"",
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", out.all_text());
    out.stdout_text().trim_end().to_string()
}

#[test]
fn scram_sha_256_against_a_python_client() {
    if !require_tool("python3", &["-c", "import hashlib, hmac"]) {
        return;
    }
    let secret = python(&["-", "0", "dave", "scram-Pass-4", "secret"]);
    let t = tls_server("tls-only", &[&format!("dave:{secret}")]);
    t.server.append_spool("dave", &mbox(&messages(1)));
    let port = t.server.port().to_string();
    // SCRAM sends no password: offered and usable without TLS.
    let mut c = t.server.greeted();
    assert!(c.capa().contains(&"SASL SCRAM-SHA-256".to_string()));
    assert_eq!(
        python(&["127.0.0.1", &port, "dave", "scram-Pass-4", "login"]),
        format!("+OK maildrop has 1 messages ({})", size_octets(&t, "dave"))
    );
    assert_eq!(
        python(&["127.0.0.1", &port, "dave", "wrong", "login"]),
        "-ERR [AUTH] authentication failed"
    );
    assert_eq!(
        python(&["127.0.0.1", &port, "nobody", "wrong", "login"]),
        "-ERR [AUTH] authentication failed"
    );
}

/// "N octets" for the spool of `user`, as the maildrop reply counts it.
fn size_octets(t: &TlsServer, user: &str) -> String {
    let size: usize = split_mbox(&t.server.read_spool(user))
        .iter()
        .map(|m| crlf(m).len())
        .sum();
    format!("{size} octets")
}

#[test]
fn sighup_serves_the_new_certificate_to_new_connections() {
    let t = tls_server("tls-only", &[]);
    let mut before = TlsClient::implicit(t.pki.rustls_client(None), t.tls_addr);
    // Replace the pair with one from another CA, then SIGHUP.
    let other = Pki::new(t._certs.path(), "next");
    let (crt, key) = other.leaf("server", "localhost", false, false);
    let (old_crt, old_key) = (
        t._certs.path().join("one-server.crt"),
        t._certs.path().join("one-server.key"),
    );
    std::fs::copy(&crt, &old_crt).unwrap();
    std::fs::copy(&key, &old_key).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(t.server.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    assert!(
        t.server
            .wait_for_log("reloaded TLS certificate", Duration::from_secs(10)),
        "{}",
        t.server.log()
    );
    let mut after = TlsClient::implicit(other.rustls_client(None), t.tls_addr);
    assert!(after.cmd("NOOP").starts_with("-ERR"));
    // The old CA no longer verifies new connections...
    let mut stale = TlsClient::over(
        t.pki.rustls_client(None),
        TcpStream::connect(t.tls_addr).unwrap(),
    );
    let mut line = String::new();
    assert!(
        stale.0.read_line(&mut line).is_err(),
        "old certificate served"
    );
    // ...and the session in progress is undisturbed.
    assert_eq!(before.cmd(&format!("USER {}", ALICE.user)), "+OK send PASS");
    // A broken file on SIGHUP keeps the current pair.
    std::fs::write(&old_key, "garbage").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(t.server.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    assert!(t.server.wait_for_log(
        "keeping the previous TLS certificate",
        Duration::from_secs(10)
    ));
    TlsClient::implicit(other.rustls_client(None), t.tls_addr);
}
