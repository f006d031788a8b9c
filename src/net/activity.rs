//! What the acceptor may know of a running session, shared with its worker: when its client last sent anything, whether it has logged in, and whether it was told to make room for a newcomer.
//!
//! When every worker is busy, the acceptor evicts the unauthenticated
//! session idle longest (see daemon/admission.rs); this is what it picks
//! by. Only atomics: the worker never waits on the acceptor.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

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
