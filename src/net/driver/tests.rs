//! Tests of the session driver over real loopback sockets, with a fake account database.

use super::*;
use crate::account::{AuthOutcome, Login};
use crate::authenticator::Authenticator;
use crate::mailbox::{MailboxError, Maildrop, MaildropOpener};
use crate::pop3::Backend;
use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

struct NoAccounts;
impl Authenticator for NoAccounts {
    fn verify_password(&self, _user: &str, _password: &[u8]) -> AuthOutcome<Login> {
        AuthOutcome::Rejected
    }
}

struct NoMail;
impl MaildropOpener for NoMail {
    fn open(&self, login: Login) -> Result<Box<dyn Maildrop>, MailboxError> {
        Err(MailboxError::Refused {
            path: login.principal.mailbox,
            reason: "test".into(),
        })
    }
}

/// A backend that knows no account: for tests of the driver, not of logins.
pub(crate) fn no_accounts() -> Backend {
    Backend {
        auth: Arc::new(NoAccounts),
        maildrops: Arc::new(NoMail),
    }
}

/// Starts one session on a loopback socket; returns the client end and the
/// thread that reports how the session ended.
fn start(timeouts: Timeouts) -> (TcpStream, thread::JoinHandle<Ended>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let handle = thread::spawn(move || {
        let conn = Conn::tcp(server).unwrap();
        let settings = session_settings(&conn, PlaintextAuth::Localhost);
        assert!(settings.plaintext_allowed, "loopback counts as local");
        let mut session = Session::new(no_accounts(), settings);
        serve(conn, &mut session, &timeouts, &AtomicBool::new(false))
    });
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (client, handle)
}

fn quick() -> Timeouts {
    Timeouts {
        auth: Duration::from_secs(20),
        idle: Duration::from_secs(20),
        auth_fail_delay: Duration::ZERO,
    }
}

fn read_lines(client: TcpStream) -> Vec<String> {
    io::BufReader::new(client)
        .lines()
        .map_while(Result::ok)
        .collect()
}

#[test]
fn plaintext_policy_matrix() {
    use PlaintextAuth::*;
    assert!(plaintext_allowed(Always, false, false));
    assert!(!plaintext_allowed(TlsOnly, false, true));
    assert!(plaintext_allowed(TlsOnly, true, false));
    assert!(plaintext_allowed(Localhost, false, true));
    assert!(!plaintext_allowed(Localhost, false, false));
    assert!(plaintext_allowed(Localhost, true, false));
}

#[test]
fn pipelined_commands_get_one_reply_each_in_order() {
    let (mut client, handle) = start(quick());
    client.write_all(b"NOOP\r\nNOOP\r\nQUIT\r\n").unwrap();
    let lines = read_lines(client);
    assert_eq!(lines.len(), 4, "greeting + three replies: {lines:?}");
    assert!(lines[0].starts_with("+OK"), "{lines:?}");
    assert!(lines[3].starts_with("+OK"), "QUIT answered last: {lines:?}");
    assert_eq!(handle.join().unwrap(), Ended::Closed);
}

#[test]
fn silent_client_is_logged_out() {
    let mut t = quick();
    t.auth = Duration::from_millis(300);
    let started = Instant::now();
    let (client, handle) = start(t);
    let lines = read_lines(client);
    assert_eq!(handle.join().unwrap(), Ended::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1], "-ERR autologout; idle for too long");
}

#[test]
fn trickling_bytes_do_not_extend_the_timeout() {
    let mut t = quick();
    t.auth = Duration::from_millis(600);
    let (mut client, handle) = start(t);
    let started = Instant::now();
    for _ in 0..12 {
        if client.write_all(b"N").is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(handle.join().unwrap(), Ended::Timeout);
    // Had each byte restarted the timer, the session would last 1.8 s.
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[test]
fn client_hangup_is_eof() {
    let (client, handle) = start(quick());
    drop(client);
    assert_eq!(handle.join().unwrap(), Ended::Eof);
}

#[test]
fn overlong_line_is_answered_and_session_goes_on() {
    let (mut client, handle) = start(quick());
    let mut long = vec![b'A'; 5000];
    long.extend_from_slice(b"\r\nQUIT\r\n");
    client.write_all(&long).unwrap();
    let lines = read_lines(client);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].starts_with("-ERR"), "{lines:?}");
    assert!(lines[2].starts_with("+OK"), "{lines:?}");
    assert_eq!(handle.join().unwrap(), Ended::Closed);
}
