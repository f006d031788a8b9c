//! The table of open sessions: per-address admission at accept, eviction of the idlest unauthenticated one when the pool is full, `--who` and `--kick`, and a way to close them all at shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::control::protocol::{Target, WhoRow};
use crate::net::live::LiveSession;
use crate::net::socket::Waker;

#[derive(Default)]
struct Inner {
    per_ip: HashMap<IpAddr, usize>,
    open: HashMap<u64, Slot>,
    next_id: u64,
}

/// One open session.
struct Slot {
    /// Wakes a worker blocked in read(2) on the session's socket, for
    /// shutdown, eviction and `--kick`; it holds no descriptor of its own.
    waker: Option<Waker>,
    /// What eviction picks by and `--who` and `--kick` see.
    live: Arc<LiveSession>,
    /// The client, once known (a proxied one after its header).
    ip: Option<IpAddr>,
}

/// Open sessions, counted per client address.
pub struct SessionTable {
    inner: Mutex<Inner>,
    ended: Condvar,
    /// Most sessions per address; 0 means no limit.
    per_ip_limit: usize,
}

/// Proof of admission; dropping it (session over, or never started) gives
/// the slot back.
pub struct Ticket {
    table: Arc<SessionTable>,
    /// Shared with the table: what eviction picks by and `--who` and
    /// `--kick` see; the worker hands it to the session's driver.
    pub live: Arc<LiveSession>,
    /// The address the slot is counted for; `None` until a trusted proxy's
    /// header names the client (see [`SessionTable::admit_proxied`]).
    ip: Option<IpAddr>,
    id: u64,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyFromAddress {
    pub open: usize,
}

/// The session [`SessionTable::evict_idlest`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Its client (`None` for a proxied one whose header has not come).
    pub ip: Option<IpAddr>,
    /// How long its client had been silent.
    pub idle: Duration,
}

impl SessionTable {
    pub fn new(per_ip_limit: usize) -> SessionTable {
        SessionTable {
            inner: Mutex::new(Inner::default()),
            ended: Condvar::new(),
            per_ip_limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a session from `ip` unless that address already has
    /// `per_ip_limit` sessions. `waker` is kept for [`Self::close_all`].
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        waker: Option<Waker>,
    ) -> Result<Ticket, TooManyFromAddress> {
        // `::ffff:192.0.2.1` and `192.0.2.1` are the same client.
        let ip = ip.to_canonical();
        let mut inner = self.lock();
        let count = inner.per_ip.get(&ip).copied().unwrap_or(0);
        if self.per_ip_limit != 0 && count >= self.per_ip_limit {
            return Err(TooManyFromAddress { open: count });
        }
        inner.per_ip.insert(ip, count + 1);
        Ok(self.enter(&mut inner, Some(ip), waker))
    }

    fn enter(
        self: &Arc<Self>,
        inner: &mut Inner,
        ip: Option<IpAddr>,
        waker: Option<Waker>,
    ) -> Ticket {
        let id = inner.next_id;
        inner.next_id = inner.next_id.wrapping_add(1);
        let live = Arc::new(LiveSession::default());
        let slot = Slot {
            waker,
            live: Arc::clone(&live),
            ip,
        };
        inner.open.insert(id, slot);
        Ticket {
            table: Arc::clone(self),
            live,
            ip,
            id,
        }
    }

    /// Admits a connection from a trusted proxy without counting it for
    /// the proxy's address, which carries many clients: the worker counts
    /// it for the client with [`Ticket::count_for`] once the PROXY header
    /// has named one. Shutdown still reaches it through `waker`.
    pub fn admit_proxied(self: &Arc<Self>, waker: Option<Waker>) -> Ticket {
        let mut inner = self.lock();
        self.enter(&mut inner, None, waker)
    }

    /// Makes room: the session that holds a worker, has not logged in and
    /// has heard nothing from its client for longest is marked evicted and
    /// its reading side shut, so its worker wakes, tells the client and
    /// ends. Logged-in sessions are never chosen. `None`: nothing to evict.
    pub fn evict_idlest(&self) -> Option<Evicted> {
        let inner = self.lock();
        let (since, slot) = inner
            .open
            .values()
            .filter(|s| s.waker.is_some())
            .filter_map(|s| Some((s.live.activity.evictable_since()?, s)))
            .min_by_key(|(since, _)| *since)?;
        if !slot.live.activity.evict() {
            return None;
        }
        if let Some(waker) = &slot.waker {
            waker.shutdown(Shutdown::Read);
        }
        Some(Evicted {
            ip: slot.ip,
            idle: since.elapsed(),
        })
    }

    /// Sessions open from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.lock()
            .per_ip
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Sessions open in total.
    pub fn active(&self) -> usize {
        self.lock().open.len()
    }

    /// Shuts down `how` on every open session's socket: `Read` ends idle
    /// sessions at once (their read sees end of file) and lets a reply in
    /// progress finish; `Both` also ends sessions stuck writing.
    pub fn close_all(&self, how: Shutdown) {
        for waker in self.lock().open.values().filter_map(|s| s.waker.as_ref()) {
            waker.shutdown(how);
        }
    }

    /// `--who`: the started sessions, in no particular order.
    pub fn who(&self) -> Vec<WhoRow> {
        let inner = self.lock();
        inner.open.values().filter_map(|s| s.live.row()).collect()
    }

    /// `--kick`: ends the sessions `target` names, like shutdown does one
    /// (without UPDATE); their driver tells the client why. Returns how many.
    pub fn kick(&self, target: &Target) -> usize {
        let inner = self.lock();
        let mut kicked = 0;
        for slot in inner.open.values() {
            if !slot.live.matches(target) {
                continue;
            }
            slot.live.kick();
            if let Some(waker) = &slot.waker {
                waker.shutdown(Shutdown::Read);
            }
            kicked += 1;
        }
        kicked
    }

    /// Waits until no session is open; `false` on timeout.
    pub fn wait_all_ended(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        while !inner.open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            inner = self
                .ended
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn release(&self, ip: Option<IpAddr>, id: u64) {
        let mut inner = self.lock();
        inner.open.remove(&id);
        if let Some(ip) = ip {
            if let Some(count) = inner.per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    // Keeps the map as small as the set of connected clients.
                    inner.per_ip.remove(&ip);
                }
            }
        }
        if inner.open.is_empty() {
            self.ended.notify_all();
        }
    }
}

impl Ticket {
    /// Counts an uncounted ticket (from [`SessionTable::admit_proxied`])
    /// for `ip`, under the same per-address limit as [`SessionTable::admit`].
    /// A ticket already counted for an address stays as it is.
    pub fn count_for(&mut self, ip: IpAddr) -> Result<(), TooManyFromAddress> {
        if self.ip.is_some() {
            return Ok(());
        }
        let ip = ip.to_canonical();
        let mut inner = self.table.lock();
        let count = inner.per_ip.get(&ip).copied().unwrap_or(0);
        if self.table.per_ip_limit != 0 && count >= self.table.per_ip_limit {
            return Err(TooManyFromAddress { open: count });
        }
        inner.per_ip.insert(ip, count + 1);
        if let Some(slot) = inner.open.get_mut(&self.id) {
            slot.ip = Some(ip);
        }
        self.ip = Some(ip);
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.table.release(self.ip, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::socket::Socket;
    use crate::test_support::ip;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    #[test]
    fn per_address_limit_and_release() {
        let table = Arc::new(SessionTable::new(2));
        let a1 = table.admit(ip("192.0.2.1"), None).unwrap();
        let a2 = table.admit(ip("::ffff:192.0.2.1"), None).unwrap();
        assert_eq!(
            table.admit(ip("192.0.2.1"), None).err(),
            Some(TooManyFromAddress { open: 2 }),
            "mapped and plain IPv4 count as one address"
        );
        let b = table.admit(ip("2001:db8::1"), None).unwrap();
        assert_eq!(table.count(ip("192.0.2.1")), 2);
        assert_eq!(table.active(), 3);
        drop(a1);
        assert_eq!(table.count(ip("192.0.2.1")), 1);
        let a3 = table.admit(ip("192.0.2.1"), None).unwrap();
        drop((a2, a3, b));
        assert_eq!(table.active(), 0);
        assert!(table.lock().per_ip.is_empty(), "no entries left behind");
    }

    #[test]
    fn proxied_tickets_count_for_the_client_once_known() {
        let table = Arc::new(SessionTable::new(1));
        let mut a = table.admit_proxied(None);
        let mut b = table.admit_proxied(None);
        assert_eq!(table.active(), 2);
        assert_eq!(table.count(ip("127.0.0.1")), 0, "the proxy is not counted");
        a.count_for(ip("192.0.2.1")).unwrap();
        assert_eq!(
            b.count_for(ip("::ffff:192.0.2.1")),
            Err(TooManyFromAddress { open: 1 })
        );
        b.count_for(ip("192.0.2.2")).unwrap();
        assert_eq!(table.count(ip("192.0.2.2")), 1);
        b.count_for(ip("192.0.2.3")).unwrap();
        assert_eq!(table.count(ip("192.0.2.3")), 0, "counted only once");
        drop((a, b));
        assert_eq!(table.active(), 0);
        assert!(table.lock().per_ip.is_empty());
    }

    /// A connected pair: the server's end and the client's.
    fn connection(listener: &TcpListener) -> (Socket, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (Socket::new(listener.accept().unwrap().0), client)
    }

    #[test]
    fn eviction_takes_the_idlest_unauthenticated_session_only() {
        let table = Arc::new(SessionTable::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (s1, _c1) = connection(&listener);
        let (s2, _c2) = connection(&listener);
        let (s3, _c3) = connection(&listener);
        let older = table.admit(ip("192.0.2.1"), Some(s1.waker())).unwrap();
        let logged_in = table.admit(ip("192.0.2.2"), Some(s2.waker())).unwrap();
        let queued = table.admit(ip("192.0.2.3"), Some(s3.waker())).unwrap();
        logged_in.live.activity.serving();
        thread::sleep(Duration::from_millis(5));
        older.live.activity.serving();
        logged_in.live.activity.authenticated();
        let evicted = table.evict_idlest().unwrap();
        assert_eq!(evicted.ip, Some(ip("192.0.2.1")));
        assert!(older.live.activity.is_evicted());
        let mut buf = [0u8; 1];
        assert_eq!(
            (&*s1).read(&mut buf).unwrap(),
            0,
            "its worker sees end of file"
        );
        assert_eq!(
            table.evict_idlest(),
            None,
            "neither a logged-in nor a queued session is evicted"
        );
        assert!(!logged_in.live.activity.is_evicted() && !queued.live.activity.is_evicted());
    }

    #[test]
    fn zero_limit_means_unlimited() {
        let table = Arc::new(SessionTable::new(0));
        let tickets: Vec<Ticket> = (0..100)
            .map(|_| table.admit(ip("192.0.2.7"), None).unwrap())
            .collect();
        assert_eq!(table.count(ip("192.0.2.7")), 100);
        drop(tickets);
        assert_eq!(table.count(ip("192.0.2.7")), 0);
    }

    #[test]
    fn close_all_wakes_a_blocked_reader() {
        let table = Arc::new(SessionTable::new(16));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let mut server = Socket::new(server);
        let ticket = table.admit(peer.ip(), Some(server.waker())).unwrap();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 16];
            let n = server.read(&mut buf).unwrap();
            drop(ticket);
            n
        });
        assert!(!table.wait_all_ended(Duration::from_millis(50)));
        table.close_all(Shutdown::Read);
        assert!(table.wait_all_ended(Duration::from_secs(10)));
        assert_eq!(reader.join().unwrap(), 0, "read saw end of file");
    }
}
