//! What one running session shows to `ironpop --who`, and the flag through which `--kick` ends it.
//!
//! The driver fills it in after each batch of commands; the control
//! socket reads it from the acceptor thread. Counts are atomics, the rest
//! sits behind a mutex held for a copy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::control::protocol::WhoRow;
use crate::pop3::State;

#[derive(Debug, Default)]
struct Facts {
    user: Option<String>,
    state: Option<State>,
    tls: Option<&'static str>,
    logged_in: Option<SystemTime>,
}

/// One session as the administrator sees it.
#[derive(Debug)]
pub struct LiveSession {
    /// The client (after any PROXY header).
    client: SocketAddr,
    /// The port the client connected to.
    local_port: u16,
    facts: Mutex<Facts>,
    bytes_sent: AtomicU64,
    commands: AtomicU64,
    kicked: AtomicBool,
}

impl LiveSession {
    pub fn new(client: SocketAddr, local_port: u16) -> LiveSession {
        LiveSession {
            client,
            local_port,
            facts: Mutex::default(),
            bytes_sent: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            kicked: AtomicBool::new(false),
        }
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
            Target::Address(ip) => self.client.ip().to_canonical() == *ip,
            Target::User(user) => self.facts().user.as_deref() == Some(user.as_str()),
        }
    }

    /// The `WHO` line's facts, now.
    pub fn row(&self) -> WhoRow {
        let facts = self.facts();
        WhoRow {
            user: facts.user.clone().unwrap_or_default(),
            client: self.client.ip().to_canonical().to_string(),
            local_port: self.local_port,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::Target;

    #[test]
    fn progress_login_and_matching() {
        let live = LiveSession::new("[::ffff:192.0.2.9]:40000".parse().unwrap(), 110);
        let row = live.row();
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
        let row = live.row();
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
}
