//! The blocking session driver: command lines in from a `Conn`, through the POP3 session, replies out in batches.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{Config, PlaintextAuth};
use crate::counters::{self, Counter};
use crate::limits::{self, GOODBYE_WRITE_TIMEOUT, READ_TIMEOUT_SLACK};
use crate::net::conn::{is_loopback_ip, Conn};
use crate::net::line_buffer::{LineBuffer, LineEvent};
use crate::net::live::{LiveSession, BUSY_REPLY};
use crate::net::output::Output;
use crate::net::tls_conn::TlsService;
use crate::pop3::{Control, Session, SessionSettings, State};

/// RFC 1939 §3 names no wording; this is the traditional one (popa3d, qpopper).
const AUTOLOGOUT_REPLY: &[u8] = b"-ERR autologout; idle for too long\r\n";

/// RFC 3206: the administrator's doing, and the client may come back.
const KICKED_REPLY: &[u8] = b"-ERR [SYS/TEMP] session ended by the administrator\r\n";

/// The timing knobs of a session, taken from the config once at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Inactivity limit in AUTHORIZATION.
    pub auth: Duration,
    /// Inactivity limit in TRANSACTION (RFC 1939: at least 10 minutes).
    pub idle: Duration,
    /// Pause before every failed-authentication reply.
    pub auth_fail_delay: Duration,
}

impl Timeouts {
    pub fn from_config(config: &Config) -> Timeouts {
        Timeouts {
            auth: config.auth_timeout,
            idle: config.idle_timeout,
            auth_fail_delay: config.auth_fail_delay,
        }
    }

    fn for_state(&self, state: State) -> Duration {
        match state {
            State::Authorization => self.auth,
            State::Transaction => self.idle,
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The session closed it (QUIT, too many failures).
    Closed,
    /// The client was silent longer than the state's timeout.
    Timeout,
    /// The client closed the connection (or the daemon shut it down).
    Eof,
    /// Reading from or writing to the client failed.
    Error,
    /// `ironpop --kick` ended it.
    Kicked,
}

/// Whether USER/PASS may be used on this connection right now.
pub fn plaintext_allowed(policy: PlaintextAuth, tls_active: bool, loopback: bool) -> bool {
    match policy {
        PlaintextAuth::Always => true,
        PlaintextAuth::Localhost => tls_active || loopback,
        PlaintextAuth::TlsOnly => tls_active,
    }
}

/// The per-connection settings the session needs, derived from the
/// connection and the configured policy.
pub fn session_settings(conn: &Conn, policy: PlaintextAuth) -> SessionSettings {
    let tls_active = conn.is_tls();
    // Asked once: the loopback check and the log name both need it.
    let peer = conn.peer_addr();
    SessionSettings {
        plaintext_allowed: plaintext_allowed(
            policy,
            tls_active,
            peer.is_some_and(|a| is_loopback_ip(a.ip())),
        ),
        // The caller sets it when it passes a `TlsService` to `serve_with_tls`.
        stls_offered: false,
        tls_active,
        // Addresses without ports, as fail2ban and log readers expect.
        peer: address_name(peer),
        local: address_name(conn.local_addr()),
        tls_protocol: tls_protocol(conn),
        cert_identity: conn.cert_identity().map(str::to_owned),
        client_chain: conn.client_chain().cloned(),
    }
}

fn address_name(addr: Option<std::net::SocketAddr>) -> String {
    addr.map_or_else(
        || "unknown".to_string(),
        |a| a.ip().to_canonical().to_string(),
    )
}

/// The `tls=` of the login line: the protocol the connection negotiated.
fn tls_protocol(conn: &Conn) -> Option<&'static str> {
    let Conn::Tls(t) = conn else {
        return None;
    };
    match t.stream.conn.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        _ => Some("yes"),
    }
}

/// What `drive` stopped for.
enum Next {
    Ended(Ended),
    /// The session accepted STLS and its `+OK` is flushed.
    StartTls,
}

/// Runs `session` over `conn` until it ends, then closes the connection.
/// `stopping` is set by the daemon at shutdown, so that a connection it
/// closes is logged as `shutdown` rather than as the client's doing.
pub fn serve(
    conn: Conn,
    session: &mut Session,
    timeouts: &Timeouts,
    stopping: &AtomicBool,
) -> Ended {
    serve_with_tls(
        conn,
        session,
        timeouts,
        stopping,
        None,
        &LiveSession::default(),
    )
}

/// [`serve`], with `starttls` to run the handshake when the session
/// accepts STLS (the session offers it when its settings say so), and
/// `live` kept up to date: it shows the session to `--who`, lets `--kick`
/// end it, and tells the acceptor, which may evict the session while it
/// has not logged in, how long its client has been silent.
pub fn serve_with_tls(
    conn: Conn,
    session: &mut Session,
    timeouts: &Timeouts,
    stopping: &AtomicBool,
    starttls: Option<&TlsService>,
    live: &LiveSession,
) -> Ended {
    if conn.is_tls() {
        live.tls_started(tls_protocol(&conn));
    }
    let mut out = output_for(conn, timeouts);
    let mut greet = true;
    let ended = loop {
        match drive(session, &mut out, timeouts, greet, live) {
            Next::Ended(ended) => break ended,
            Next::StartTls => {
                greet = false;
                match upgrade(out, session, starttls) {
                    Some(tls) => {
                        live.tls_started(tls_protocol(&tls));
                        out = output_for(tls, timeouts);
                    }
                    None => {
                        // The socket is gone with the failed handshake.
                        session.abort("tls-handshake-failed");
                        return Ended::Error;
                    }
                }
            }
        }
    };
    let shutting_down = stopping.load(Ordering::Relaxed);
    let kicked = live.is_kicked();
    match ended {
        // A kicked session may see end of file or a TLS error first.
        _ if kicked && ended != Ended::Closed => {
            let _ = out.get_ref().set_write_timeout(Some(GOODBYE_WRITE_TIMEOUT));
            let _ = out.write_all(KICKED_REPLY).and_then(|()| out.flush());
            counters::bump(Counter::SessionsKicked);
            session.abort("kicked");
            out.get_mut().close();
            return Ended::Kicked;
        }
        Ended::Kicked => session.abort("kicked"),
        // The session has normally ended itself (QUIT); if not, this logs
        // the disconnect, and is a no-op otherwise.
        Ended::Closed => session.abort("closed"),
        Ended::Timeout => {
            let _ = out.get_ref().set_write_timeout(Some(GOODBYE_WRITE_TIMEOUT));
            let _ = out.write_all(AUTOLOGOUT_REPLY).and_then(|()| out.flush());
            session.abort("timeout");
        }
        Ended::Eof | Ended::Error if shutting_down => session.abort("shutdown"),
        Ended::Eof if live.activity.is_evicted() => {
            let _ = out.get_ref().set_write_timeout(Some(GOODBYE_WRITE_TIMEOUT));
            let _ = out.write_all(BUSY_REPLY).and_then(|()| out.flush());
            session.abort("evicted");
        }
        Ended::Eof => session.abort("eof"),
        Ended::Error => session.abort("error"),
    }
    out.get_mut().close();
    ended
}

fn output_for(conn: Conn, timeouts: &Timeouts) -> Output<Conn> {
    // A client that stops reading in the middle of a long RETR is as idle
    // as one that stops writing.
    let _ = conn.set_write_timeout(Some(timeouts.idle.max(timeouts.auth)));
    Output::new(conn, limits::WRITE_BUFFER)
}

/// The TLS handshake after STLS. Whatever the client sent after the STLS
/// line was in `drive`'s line buffer and is gone with it; bytes still in
/// the socket are read by the handshake, which fails unless they are TLS.
fn upgrade(
    out: Output<Conn>,
    session: &mut Session,
    starttls: Option<&TlsService>,
) -> Option<Conn> {
    let conn = out.into_inner().ok()?;
    // The session's idea of the client: a PROXY header's source, not the
    // proxy's socket address.
    let peer = session.peer().to_owned();
    let (Conn::Tcp(tcp), Some(service)) = (conn, starttls) else {
        log::warn!("STLS accepted without TLS on this connection: rip={peer}");
        return None;
    };
    match service.accept(tcp, &peer) {
        Ok(tls) => {
            let (identity, chain) = (tls.cert_identity.clone(), tls.client_chain.clone());
            let conn = Conn::Tls(Box::new(tls));
            session.tls_started(tls_protocol(&conn), identity, chain);
            Some(conn)
        }
        Err(e) => {
            log::info!("STLS: rip={peer}: {e}");
            None
        }
    }
}

fn drive(
    session: &mut Session,
    out: &mut Output<Conn>,
    timeouts: &Timeouts,
    greet: bool,
    live: &LiveSession,
) -> Next {
    if greet {
        if let Err(e) = session.greeting(out).and_then(|()| out.flush()) {
            return Next::Ended(ended_by(&e));
        }
    }
    let show = |out: &mut Output<Conn>, session: &Session, commands: usize| {
        live.progress(
            commands as u64,
            out.take_sent(),
            session.state(),
            session.user(),
        );
    };
    show(out, session, 0);
    let mut lines = LineBuffer::new(session.max_line());
    let mut chunk = [0u8; limits::READ_BUFFER];
    // The autologout timer runs from the last complete command, so a
    // client trickling bytes cannot hold a worker past the timeout.
    let mut deadline = Instant::now() + timeouts.for_state(session.state());
    let mut armed = None;
    loop {
        let n = match read_before(out.get_mut(), &mut chunk, deadline, &mut armed) {
            Ok(0) => return Next::Ended(Ended::Eof),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => return Next::Ended(Ended::Timeout),
            Err(e) => return Next::Ended(ended_by(&e)),
        };
        // A client that keeps sending would never see the end of file
        // `--kick` left in its socket.
        if live.is_kicked() {
            return Next::Ended(Ended::Kicked);
        }
        live.activity.input();
        lines.push(chunk.get(..n).unwrap_or_default());
        let mut commands = 0usize;
        loop {
            let control = match lines.next_line() {
                None => break,
                Some(LineEvent::Line(line)) => session.handle_line(line, out),
                Some(LineEvent::TooLong) => session.handle_too_long(out),
            };
            commands += 1;
            lines.set_max_line(session.max_line());
            // Before the login's `+OK` leaves: from now on never evicted,
            // unless the eviction came first, which then stands.
            if session.state() == State::Transaction && !live.activity.authenticated() {
                out.discard();
                return Next::Ended(Ended::Eof);
            }
            match control {
                Err(e) => return Next::Ended(ended_by(&e)),
                Ok(Control::Continue) => {}
                Ok(Control::AuthFailed { then_close }) => {
                    // The failure reply (and anything batched before it)
                    // waits out the delay, so guessing costs real time.
                    thread::sleep(timeouts.auth_fail_delay);
                    if let Err(e) = out.flush() {
                        return Next::Ended(ended_by(&e));
                    }
                    if then_close {
                        return Next::Ended(Ended::Closed);
                    }
                }
                Ok(Control::Close) => {
                    let _ = out.flush();
                    return Next::Ended(Ended::Closed);
                }
                Ok(Control::StartTls) => {
                    // Returning drops `lines`: nothing the client sent
                    // after STLS is ever executed.
                    if let Err(e) = out.flush() {
                        return Next::Ended(ended_by(&e));
                    }
                    show(out, session, commands);
                    return Next::StartTls;
                }
            }
        }
        // No complete line is left: the batch of replies leaves now, in
        // one write where it fits the buffer.
        if let Err(e) = out.flush() {
            return Next::Ended(ended_by(&e));
        }
        out.release();
        show(out, session, commands);
        if commands > 0 {
            deadline = Instant::now() + timeouts.for_state(session.state());
        }
    }
}

/// One read that gives up at `deadline`. `armed` is the read timeout last
/// set on the socket: setting it is a syscall, so a busy session, whose
/// deadline moves on with the clock, does not set it before every read.
fn read_before(
    conn: &mut Conn,
    buf: &mut [u8],
    deadline: Instant,
    armed: &mut Option<Duration>,
) -> io::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let slack = (left / 8).min(READ_TIMEOUT_SLACK);
        let off = |a: Duration| a.checked_sub(left).unwrap_or_else(|| left - a);
        if armed.map_or(true, |a| off(a) > slack) {
            conn.set_read_timeout(Some(left))?;
            *armed = Some(left);
        }
        match conn.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => continue,
            result => return result,
        }
    }
}

/// A client that hung up (reset, or closed before reading our reply) ended
/// the session as surely as one that closed cleanly; only other failures are
/// errors worth a different log reason.
fn ended_by(e: &io::Error) -> Ended {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => Ended::Eof,
        _ => Ended::Error,
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
pub(crate) mod tests;
