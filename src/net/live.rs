//! One running session as the acceptor and the administrator see it: its eviction state (`Activity`), what `ironpop --who` shows, and the flag through which `--kick` ends it.
//!
//! The session table makes one at admission and keeps it in the session's
//! slot; the worker hands the same value to the driver, which fills it in
//! after each batch of commands. The acceptor and the control socket read
//! it from their thread. Counts and the eviction state are atomics (the
//! worker never waits on the acceptor), the rest sits behind a mutex held
//! for a copy.
//!
//! When every worker is busy, the acceptor evicts the unauthenticated
//! session idle longest (see daemon/admission.rs): `Activity` is what it
//! picks by.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::control::protocol::WhoRow;
use crate::pop3::State;

/// What an evicted client reads (and one turned away for want of a
/// worker): the server is full now, a retry will do.
pub const BUSY_REPLY: &[u8] = b"-ERR [SYS/TEMP] server busy, try again\r\n";

const QUEUED: u8 = 0;
const UNAUTHENTICATED: u8 = 1;
const AUTHENTICATED: u8 = 2;
const EVICTED: u8 = 3;

/// One connection's activity, from admission to its end. Its phase only
/// moves forward — queued, then unauthenticated, then logged in or
/// evicted, never both: the two race for one atomic, and the loser knows.
#[derive(Debug)]
pub struct Activity {
    /// Times below are milliseconds since this instant.
    epoch: Instant,
    last_input_ms: AtomicU64,
    phase: AtomicU8,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new(Instant::now())
    }
}

impl Activity {
    /// A connection admitted at `epoch`, waiting for a worker.
    pub fn new(epoch: Instant) -> Activity {
        Activity {
            epoch,
            last_input_ms: AtomicU64::new(0),
            phase: AtomicU8::new(QUEUED),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn advance(&self, from: u8, to: u8) -> Result<u8, u8> {
        self.phase
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
    }

    /// A worker has taken the connection: from now on it holds one, and
    /// is idle since now.
    pub fn serving(&self) {
        self.input();
        let _ = self.advance(QUEUED, UNAUTHENTICATED);
    }

    /// The client sent something.
    pub fn input(&self) {
        self.last_input_ms
            .store(self.ms(Instant::now()), Ordering::SeqCst);
    }

    /// The client has logged in, and is never evicted from now on.
    /// `false` when the session was evicted first: the eviction stands,
    /// and the login must not be confirmed to the client.
    pub fn authenticated(&self) -> bool {
        match self.advance(UNAUTHENTICATED, AUTHENTICATED) {
            Ok(_) => true,
            Err(now) => now != EVICTED,
        }
    }

    /// When the client last sent anything, if this is a session a newcomer
    /// may evict: it holds a worker and has not logged in.
    pub fn evictable_since(&self) -> Option<Instant> {
        (self.phase.load(Ordering::SeqCst) == UNAUTHENTICATED)
            .then(|| self.epoch + Duration::from_millis(self.last_input_ms.load(Ordering::SeqCst)))
    }

    /// Marks the session evicted; `false` if it logged in or was evicted
    /// meanwhile (then it is left alone).
    pub fn evict(&self) -> bool {
        self.advance(UNAUTHENTICATED, EVICTED).is_ok()
    }

    /// Whether the acceptor evicted it: its end of file was not the
    /// client's doing, and the client is told why.
    pub fn is_evicted(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == EVICTED
    }
}

#[derive(Debug, Default)]
struct Facts {
    user: Option<String>,
    state: Option<State>,
    tls: Option<&'static str>,
    logged_in: Option<SystemTime>,
}

/// One session, from admission to its end.
#[derive(Debug, Default)]
pub struct LiveSession {
    /// What eviction picks by: the acceptor may make room by ending this
    /// session while it has not logged in.
    pub activity: Activity,
    /// The client (after any PROXY header) and the port it connected to,
    /// once the worker knows them; `--who` shows the session from then on.
    ends: OnceLock<(SocketAddr, u16)>,
    facts: Mutex<Facts>,
    bytes_sent: AtomicU64,
    commands: AtomicU64,
    kicked: AtomicBool,
}

impl LiveSession {
    /// The session's client and the port it connected to (set once).
    pub fn connected(&self, client: SocketAddr, local_port: u16) {
        let _ = self.ends.set((client, local_port));
    }

    fn facts(&self) -> MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The negotiated TLS protocol (`TLSv1.3`), once the handshake is done.
    pub fn tls_started(&self, protocol: Option<&'static str>) {
        self.facts().tls = Some(protocol.unwrap_or("yes"));
    }

    /// After a batch: `commands` more were answered with `sent` octets;
    /// the session is in `state`, logged in as `user` (if it is).
    pub fn progress(&self, commands: u64, sent: u64, state: State, user: Option<&str>) {
        self.commands.fetch_add(commands, Ordering::Relaxed);
        self.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        let mut facts = self.facts();
        facts.state = Some(state);
        if facts.user.as_deref() != user {
            facts.user = user.map(str::to_owned);
            facts.logged_in = user.map(|_| SystemTime::now());
        }
    }

    /// Marks the session for ending; the caller wakes its worker.
    pub fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
    }

    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::SeqCst)
    }

    /// Whether `--kick` with this user or address means this session.
    pub fn matches(&self, target: &crate::control::protocol::Target) -> bool {
        use crate::control::protocol::Target;
        match target {
            Target::Address(ip) => self
                .ends
                .get()
                .is_some_and(|(client, _)| client.ip().to_canonical() == *ip),
            Target::User(user) => self.facts().user.as_deref() == Some(user.as_str()),
        }
    }

    /// The `WHO` line's facts, now; `None` before the worker has started
    /// the session.
    pub fn row(&self) -> Option<WhoRow> {
        let &(client, local_port) = self.ends.get()?;
        let facts = self.facts();
        Some(WhoRow {
            user: facts.user.clone().unwrap_or_default(),
            client: client.ip().to_canonical().to_string(),
            local_port,
            tls: facts.tls.unwrap_or("none").to_owned(),
            state: match facts.state.unwrap_or(State::Authorization) {
                State::Authorization => "AUTHORIZATION",
                State::Transaction => "TRANSACTION",
            }
            .to_owned(),
            since: facts
                .logged_in
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::Target;

    #[test]
    fn progress_login_and_matching() {
        let live = LiveSession::default();
        assert_eq!(live.row(), None, "not started yet");
        assert!(!live.matches(&Target::Address("192.0.2.9".parse().unwrap())));
        live.connected("[::ffff:192.0.2.9]:40000".parse().unwrap(), 110);
        let row = live.row().unwrap();
        assert_eq!(
            (row.user.as_str(), row.client.as_str(), row.local_port),
            ("", "192.0.2.9", 110)
        );
        assert_eq!(
            (row.tls.as_str(), row.state.as_str()),
            ("none", "AUTHORIZATION")
        );
        assert_eq!(row.since, None);
        live.tls_started(Some("TLSv1.3"));
        live.progress(2, 100, State::Authorization, None);
        live.progress(1, 30, State::Transaction, Some("alice"));
        let row = live.row().unwrap();
        assert_eq!((row.commands, row.bytes_sent), (3, 130));
        assert_eq!((row.user.as_str(), row.tls.as_str()), ("alice", "TLSv1.3"));
        assert_eq!(row.state, "TRANSACTION");
        assert!(row.since.is_some());
        assert!(live.matches(&Target::User("alice".into())));
        assert!(!live.matches(&Target::User("bob".into())));
        assert!(live.matches(&Target::Address("192.0.2.9".parse().unwrap())));
        assert!(!live.matches(&Target::Address("192.0.2.10".parse().unwrap())));
        assert!(!live.is_kicked());
        live.kick();
        assert!(live.is_kicked());
    }

    #[test]
    fn only_served_unauthenticated_sessions_are_evictable() {
        let a = Activity::default();
        assert_eq!(a.evictable_since(), None, "queued: holds no worker");
        assert!(!a.evict());
        a.serving();
        assert!(a.evictable_since().is_some());
        assert!(a.authenticated());
        assert_eq!(a.evictable_since(), None);
        assert!(!a.evict(), "a logged-in session is never evicted");
        assert!(a.authenticated(), "and stays logged in");

        let b = Activity::default();
        b.serving();
        assert!(b.evict());
        assert!(!b.evict(), "evicted once");
        assert!(b.is_evicted());
        assert_eq!(b.evictable_since(), None);
        assert!(!b.authenticated(), "a login after the eviction loses");
    }

    #[test]
    fn input_moves_the_idle_time() {
        let a = Activity::new(Instant::now() - Duration::from_secs(5));
        a.serving();
        let first = a.evictable_since().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        a.input();
        assert!(a.evictable_since().unwrap() > first);
    }
}
