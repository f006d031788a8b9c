//! Who gets in: per-address limits, the failed-login block, the PROXY decision, room made for a newcomer when every worker is busy, and the refusal replies — one set of rules for the acceptor and for a proxied client once its header names it.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::throttle::Throttle;
use crate::counters::Counter;
use crate::daemon::sessions::{Evicted, SessionTable, Ticket};
use crate::net::live::BUSY_REPLY;
use crate::net::socket::Socket;

/// Why a connection is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address failed to log in too often; blocked this much longer.
    Blocked(Duration),
    /// The address already has this many sessions (`max_sessions_per_ip`).
    PerAddress(usize),
    /// Every worker busy with a logged-in session and the queue full, or
    /// queued too long; or evicted to make room for a newcomer.
    Busy,
}

impl Refusal {
    /// The one line the client gets before the connection is closed.
    pub fn reply(&self) -> &'static [u8] {
        match self {
            Refusal::Blocked(_) => {
                b"-ERR [SYS/TEMP] too many failed logins from your address; try again later\r\n"
            }
            Refusal::PerAddress(_) => b"-ERR [SYS/TEMP] too many connections from your address\r\n",
            Refusal::Busy => BUSY_REPLY,
        }
    }

    /// What `--stats` counts it as.
    pub fn counter(&self) -> Counter {
        match self {
            Refusal::Blocked(_) => Counter::RefusedThrottle,
            Refusal::PerAddress(_) => Counter::RefusedPerAddress,
            Refusal::Busy => Counter::RefusedLimit,
        }
    }

    /// The `reason=` of the log line.
    pub fn reason(&self) -> String {
        match self {
            Refusal::Blocked(left) => format!(
                "too many failed logins, blocked for {}s",
                left.as_secs().max(1)
            ),
            Refusal::PerAddress(open) => {
                format!("too many sessions from this address ({open} open)")
            }
            Refusal::Busy => "all workers busy with logged-in sessions (max_sessions)".into(),
        }
    }
}

/// The admission rules and the table they count in.
pub struct Admission {
    table: Arc<SessionTable>,
    throttle: Option<Arc<Throttle>>,
    /// `proxy_protocol_from`, canonical.
    proxies: Vec<IpAddr>,
}

/// An admitted connection's standing.
pub struct Admitted {
    pub ticket: Ticket,
    /// The peer is a trusted proxy: a PROXY header comes first, and the
    /// client it names is admitted by [`Admission::admit_proxied`].
    pub proxied: bool,
}

impl Admission {
    pub fn new(
        table: Arc<SessionTable>,
        throttle: Option<Arc<Throttle>>,
        proxies: &[IpAddr],
    ) -> Admission {
        Admission {
            table,
            throttle,
            proxies: proxies.iter().map(|ip| ip.to_canonical()).collect(),
        }
    }

    pub fn table(&self) -> &Arc<SessionTable> {
        &self.table
    }

    /// A new connection from `peer`. A trusted proxy is let through
    /// uncounted (its clients are admitted once their header names them);
    /// anyone else is checked against the failed-login block and the
    /// per-address limit.
    pub fn admit(&self, stream: &Socket, peer: SocketAddr) -> Result<Admitted, Refusal> {
        // Lets shutdown, eviction and `--kick` wake the worker, without
        // a descriptor of its own.
        let waker = || Some(stream.waker());
        if self.proxies.contains(&peer.ip().to_canonical()) {
            return Ok(Admitted {
                ticket: self.table.admit_proxied(waker()),
                proxied: true,
            });
        }
        self.check_blocked(peer.ip())?;
        let ticket = self
            .table
            .admit(peer.ip(), waker())
            .map_err(|e| Refusal::PerAddress(e.open))?;
        Ok(Admitted {
            ticket,
            proxied: false,
        })
    }

    /// The client a trusted proxy's header names, under the same rules as
    /// a direct one; its slot is counted on `ticket`.
    pub fn admit_proxied(&self, ticket: &mut Ticket, client: IpAddr) -> Result<(), Refusal> {
        self.check_blocked(client)?;
        ticket
            .count_for(client)
            .map_err(|e| Refusal::PerAddress(e.open))
    }

    fn check_blocked(&self, ip: IpAddr) -> Result<(), Refusal> {
        match &self.throttle {
            Some(throttle) => throttle.check(ip, Instant::now()).map_err(Refusal::Blocked),
            None => Ok(()),
        }
    }

    /// Every worker is busy and a newcomer waits: the unauthenticated
    /// session idle longest makes room (its client is told
    /// [`BUSY_REPLY`]). Logged-in sessions are never evicted.
    pub fn make_room(&self) -> Option<Evicted> {
        self.table.evict_idlest()
    }
}

/// Counts the refusal and tells the client why, without ever waiting for
/// it; the caller then closes. A TLS client expects a handshake, not
/// text: it is only closed.
pub fn refuse(stream: &TcpStream, refusal: Refusal, tls: bool) {
    crate::counters::bump(refusal.counter());
    if !tls && stream.set_nonblocking(true).is_ok() {
        let _ = (&*stream).write(refusal.reply());
    }
}

/// The log line of a refusal.
pub fn log_refusal(client: IpAddr, refusal: Refusal) {
    log::warn!(
        "refused connection: rip={} reason={}",
        client.to_canonical(),
        refusal.reason()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::throttle::Policy;
    use crate::test_support::ip;
    use std::net::TcpListener;

    #[test]
    fn refusal_replies_are_byte_exact() {
        assert_eq!(
            Refusal::Busy.reply(),
            b"-ERR [SYS/TEMP] server busy, try again\r\n"
        );
        assert_eq!(
            Refusal::PerAddress(3).reply(),
            b"-ERR [SYS/TEMP] too many connections from your address\r\n"
        );
        assert_eq!(
            Refusal::Blocked(Duration::from_secs(9)).reply(),
            b"-ERR [SYS/TEMP] too many failed logins from your address; try again later\r\n"
        );
    }

    #[test]
    fn direct_and_proxied_clients_meet_the_same_rules() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let stream = Socket::new(listener.accept().unwrap().0);
        let throttle = Arc::new(Throttle::new(Policy::new(Duration::from_secs(2))));
        let admission = Admission::new(
            Arc::new(SessionTable::new(1)),
            Some(Arc::clone(&throttle)),
            &[ip("10.0.0.1")],
        );
        let peer = |a: &str| SocketAddr::new(ip(a), 4000);
        let first = admission.admit(&stream, peer("192.0.2.1")).unwrap();
        assert!(!first.proxied);
        assert_eq!(
            admission.admit(&stream, peer("192.0.2.1")).err(),
            Some(Refusal::PerAddress(1))
        );
        // Through the proxy, the same client meets the same limit.
        let mut via = admission.admit(&stream, peer("::ffff:10.0.0.1")).unwrap();
        assert!(via.proxied, "the proxy is recognised in any spelling");
        assert_eq!(
            admission.admit_proxied(&mut via.ticket, ip("192.0.2.1")),
            Err(Refusal::PerAddress(1))
        );
        // A blocked address is refused either way.
        let now = Instant::now();
        for _ in 0..100 {
            throttle.failed(ip("192.0.2.9"), now);
        }
        assert!(matches!(
            admission.admit(&stream, peer("192.0.2.9")).err(),
            Some(Refusal::Blocked(_))
        ));
        let mut via = admission.admit(&stream, peer("10.0.0.1")).unwrap();
        assert!(matches!(
            admission.admit_proxied(&mut via.ticket, ip("192.0.2.9")),
            Err(Refusal::Blocked(_))
        ));
    }
}
