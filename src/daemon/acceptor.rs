//! The acceptor: one mio poll loop over the listeners, the signalfd and a waker; admission and hand-off to the pool.

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::auth::throttle::Throttle;
use crate::control::server::ControlServer;
use crate::counters::{self, Counter};

use crate::daemon::listeners::Listener;
use crate::daemon::pool::Pool;
use crate::daemon::sessions::{SessionTable, Ticket};
use crate::daemon::signals::{SignalEvent, Signals};

const SIGNALS: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// The control socket's listener; its conversations take the tokens after.
const CONTROL: usize = 1 << 20;

/// When accept(2) fails for want of file descriptors the pending
/// connection stays queued and, with edge-triggered polling, no new event
/// comes for it: retry on a timer instead.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

const REFUSED_FULL: &[u8] = b"-ERR [SYS/TEMP] too many connections\r\n";
pub(crate) const REFUSED_PER_IP: &[u8] =
    b"-ERR [SYS/TEMP] too many connections from your address\r\n";
pub(crate) const REFUSED_BLOCKED: &[u8] =
    b"-ERR [SYS/TEMP] too many failed logins from your address; try again later\r\n";

/// An admitted connection on its way to a worker.
pub struct Job {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Accepted on an implicit-TLS listener: handshake before the greeting.
    pub tls: bool,
    /// Holds the client's per-address slot until the session ends. For a
    /// trusted proxy it is not counted yet: the worker counts it for the
    /// client its PROXY header names.
    pub ticket: Ticket,
    /// The peer is in `proxy_protocol_from`: a PROXY header comes first.
    pub proxied: bool,
}

/// Why the acceptor stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Signal(Signal),
    /// [`Stopper::stop`] was called.
    Requested,
    /// A privileged helper process ended; the text says which and how.
    HelperDied(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Signal(s) => write!(f, "received {}", s.as_str()),
            StopReason::Requested => f.write_str("stop requested"),
            StopReason::HelperDied(what) => f.write_str(what),
        }
    }
}

/// Stops a running acceptor from another thread.
#[derive(Clone)]
pub struct Stopper {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl Stopper {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// Keeps a flood of refused connections from flooding the log: a few lines
/// per second, then a count of what was left out.
struct LogLimiter {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    const PER_SECOND: u32 = 5;

    fn new() -> LogLimiter {
        LogLimiter {
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log one more line at `now`; reports what was suppressed
    /// when a new window starts.
    fn allow(&mut self, now: Instant) -> bool {
        let expired = match self.window_start {
            None => true,
            Some(start) => now.duration_since(start) >= Duration::from_secs(1),
        };
        if expired {
            if self.suppressed > 0 {
                log::warn!(
                    "{} more refused connections were not logged",
                    self.suppressed
                );
            }
            self.window_start = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < Self::PER_SECOND {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// The poll loop and everything it watches.
pub struct Acceptor {
    poll: Poll,
    listeners: Vec<Listener>,
    signals: Option<Signals>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    refusals: LogLimiter,
    /// What SIGHUP does (reload the log level and TLS material).
    on_reload: Option<Box<dyn FnMut() + Send>>,
    /// The privileged helpers: if one ends, the daemon must stop.
    helpers: Vec<Pid>,
    throttle: Option<Arc<Throttle>>,
    /// `proxy_protocol_from`, canonical.
    proxies: Vec<IpAddr>,
    /// `--who`, `--kick`, `--stats`.
    control: Option<ControlServer>,
}

impl Acceptor {
    /// Peers whose connections start with a PROXY header. Their own
    /// address is neither throttled nor counted per address here: the
    /// worker does both for the client the header names.
    pub fn trust_proxies(&mut self, proxies: &[IpAddr]) {
        self.proxies = proxies.iter().map(|ip| ip.to_canonical()).collect();
    }

    /// The helper processes whose end stops the daemon.
    pub fn watch_helpers(&mut self, pids: &[Pid]) {
        self.helpers = pids.to_vec();
    }

    /// Refuses addresses the throttle has blocked, right at accept.
    pub fn use_throttle(&mut self, throttle: Arc<Throttle>) {
        self.throttle = Some(throttle);
    }

    /// Registers `listeners` (and `signals`, when the daemon handles them)
    /// with a new poll instance.
    pub fn new(listeners: Vec<Listener>, signals: Option<Signals>) -> io::Result<Acceptor> {
        let poll = Poll::new()?;
        for (i, l) in listeners.iter().enumerate() {
            poll.registry().register(
                &mut SourceFd(&l.socket.as_raw_fd()),
                Token(i),
                Interest::READABLE,
            )?;
        }
        if let Some(s) = &signals {
            poll.registry()
                .register(&mut SourceFd(&s.as_raw_fd()), SIGNALS, Interest::READABLE)?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Acceptor {
            poll,
            listeners,
            signals,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            refusals: LogLimiter::new(),
            on_reload: None,
            helpers: Vec::new(),
            throttle: None,
            proxies: Vec::new(),
            control: None,
        })
    }

    /// Serves the control socket from this loop.
    pub fn serve_control(&mut self, mut server: ControlServer) -> io::Result<()> {
        server.register(self.poll.registry(), CONTROL)?;
        self.control = Some(server);
        Ok(())
    }

    /// Runs `reload` in the poll loop on each SIGHUP.
    pub fn on_reload(&mut self, reload: impl FnMut() + Send + 'static) {
        self.on_reload = Some(Box::new(reload));
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// The resolved addresses being listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.local).collect()
    }

    /// Accepts connections until a stop signal or [`Stopper::stop`]. Never
    /// blocks on a client: refusals are written without blocking.
    pub fn run(&mut self, pool: &Pool<Job>, table: &Arc<SessionTable>) -> io::Result<StopReason> {
        let mut events = Events::with_capacity(64);
        let mut retry_all = false;
        loop {
            let control_due = self.control.as_ref().and_then(ControlServer::next_deadline);
            let timeout = match (retry_all.then_some(ACCEPT_RETRY), control_due) {
                (retry, None) => retry,
                (retry, Some(due)) => {
                    let left = due.saturating_duration_since(Instant::now());
                    Some(retry.map_or(left, |r| r.min(left)))
                }
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if retry_all {
                retry_all = false;
                for i in 0..self.listeners.len() {
                    retry_all |= self.accept_all(i, pool, table);
                }
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    SIGNALS => {
                        if let Some(reason) = self.take_signals() {
                            return Ok(reason);
                        }
                    }
                    t if self.control.as_ref().is_some_and(|c| c.owns(t)) => {
                        if let Some(control) = self.control.as_mut() {
                            control.ready(t, self.poll.registry());
                        }
                    }
                    Token(i) => retry_all |= self.accept_all(i, pool, table),
                }
            }
            if let Some(control) = self.control.as_mut() {
                control.expire(Instant::now(), self.poll.registry());
            }
            if self.stop.load(Ordering::SeqCst) {
                return Ok(StopReason::Requested);
            }
        }
    }

    fn take_signals(&mut self) -> Option<StopReason> {
        while let Some(event) = self.signals.as_ref()?.next() {
            match event {
                SignalEvent::Stop(s) => return Some(StopReason::Signal(s)),
                SignalEvent::Reload => match self.on_reload.as_mut() {
                    Some(reload) => reload(),
                    None => log::info!("received SIGHUP: nothing to reload"),
                },
                SignalEvent::Child => {
                    if let Some(reason) = self.reap_children() {
                        return Some(reason);
                    }
                }
            }
        }
        None
    }

    /// Collects ended children; a helper among them stops the daemon.
    fn reap_children(&mut self) -> Option<StopReason> {
        let mut died = None;
        loop {
            let (pid, how) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exited with status {code}")),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid, format!("was killed by {}", sig.as_str()))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return died,
                Ok(_) => continue,
            };
            if self.helpers.contains(&pid) {
                let text = format!("the privileged helper (pid {pid}) {how}");
                log::error!("{text}");
                died = Some(StopReason::HelperDied(text));
            }
        }
    }

    /// Accepts until the listener has nothing pending. Returns `true` when
    /// accepting must be retried later (out of file descriptors).
    fn accept_all(&mut self, index: usize, pool: &Pool<Job>, table: &Arc<SessionTable>) -> bool {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return false;
            };
            let tls = listener.tls;
            match listener.socket.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, tls, pool, table),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return false,
                    // The client gave up before we got to it.
                    io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset => continue,
                    _ => {
                        if self.refusals.allow(Instant::now()) {
                            log::error!("cannot accept connections on {}: {e}", listener.local);
                        }
                        return true;
                    }
                },
            }
        }
    }

    fn admit(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: bool,
        pool: &Pool<Job>,
        table: &Arc<SessionTable>,
    ) {
        if self.proxies.contains(&peer.ip().to_canonical()) {
            let handle = stream.try_clone().ok();
            let ticket = table.admit_proxied(handle);
            self.submit(stream, peer, tls, ticket, true, pool);
            return;
        }
        if let Some(throttle) = &self.throttle {
            if let Err(left) = throttle.check(peer.ip(), Instant::now()) {
                if self.refusals.allow(Instant::now()) {
                    log::warn!(
                        "refused connection: rip={} reason=too many failed logins, blocked for {}s",
                        peer.ip().to_canonical(),
                        left.as_secs().max(1)
                    );
                }
                counters::bump(Counter::RefusedThrottle);
                refuse(stream, REFUSED_BLOCKED, tls);
                return;
            }
        }
        // A second handle lets shutdown wake the worker; without one (out
        // of descriptors) the session still runs, it just cannot be woken.
        let handle = stream.try_clone().ok();
        let ticket = match table.admit(peer.ip(), handle) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                if self.refusals.allow(Instant::now()) {
                    log::warn!(
                        "refused connection: rip={} reason=too many sessions from this address ({} open)",
                        peer.ip(),
                        refusal.open
                    );
                }
                counters::bump(Counter::RefusedPerAddress);
                refuse(stream, REFUSED_PER_IP, tls);
                return;
            }
        };
        self.submit(stream, peer, tls, ticket, false, pool);
    }

    fn submit(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: bool,
        ticket: Ticket,
        proxied: bool,
        pool: &Pool<Job>,
    ) {
        log::debug!("connection from {peer}");
        if let Err(job) = pool.submit(Job {
            stream,
            peer,
            tls,
            ticket,
            proxied,
        }) {
            if self.refusals.allow(Instant::now()) {
                log::warn!(
                    "refused connection: rip={} reason=all workers busy and the queue is full (max_sessions)",
                    peer.ip()
                );
            }
            counters::bump(Counter::RefusedLimit);
            refuse(job.stream, REFUSED_FULL, tls);
        } else {
            counters::bump(Counter::ConnectionsAccepted);
        }
    }
}

/// Tells the client why and closes, without ever waiting for it. A TLS
/// client expects a handshake, not text: it is only closed.
pub(crate) fn refuse(stream: TcpStream, reply: &[u8], tls: bool) {
    if !tls && stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write(reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::listeners;
    use crate::daemon::pool::PoolLimits;
    use std::io::{BufRead, BufReader, Read};
    use std::thread;

    /// A running acceptor whose "sessions" greet and wait for end of file.
    struct Harness {
        addr: SocketAddr,
        stopper: Stopper,
        thread: thread::JoinHandle<StopReason>,
    }

    fn start(max_workers: usize, queue_len: usize, per_ip: usize) -> Harness {
        let listener = listeners::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local;
        let mut acceptor = Acceptor::new(vec![listener], None).unwrap();
        let stopper = acceptor.stopper();
        let thread = thread::spawn(move || {
            let pool = Pool::new(
                PoolLimits {
                    max_workers,
                    queue_len,
                    stack_size: 64 * 1024,
                },
                |job: Job| {
                    let mut stream = job.stream;
                    stream.set_nonblocking(false).unwrap();
                    let _ = stream.write_all(b"+OK hi\r\n");
                    let _ = stream.read(&mut [0u8; 8]);
                },
            );
            let table = Arc::new(SessionTable::new(per_ip));
            acceptor.run(&pool, &table).unwrap()
        });
        Harness {
            addr,
            stopper,
            thread,
        }
    }

    fn first_line(stream: &TcpStream) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn full_pool_and_queue_refuse_with_sys_temp() {
        let h = start(1, 1, 0);
        let served = TcpStream::connect(h.addr).unwrap();
        assert_eq!(first_line(&served), "+OK hi\r\n");
        let queued = TcpStream::connect(h.addr).unwrap();
        let refused = TcpStream::connect(h.addr).unwrap();
        assert_eq!(
            first_line(&refused),
            "-ERR [SYS/TEMP] too many connections\r\n"
        );
        assert_eq!(first_line(&refused), "", "then closed");
        drop(served);
        assert_eq!(
            first_line(&queued),
            "+OK hi\r\n",
            "queued one is served next"
        );
        h.stopper.stop();
        assert_eq!(h.thread.join().unwrap(), StopReason::Requested);
    }

    #[test]
    fn per_address_limit_refuses_and_recovers() {
        let h = start(4, 4, 1);
        let first = TcpStream::connect(h.addr).unwrap();
        assert_eq!(first_line(&first), "+OK hi\r\n");
        let second = TcpStream::connect(h.addr).unwrap();
        assert_eq!(
            first_line(&second),
            "-ERR [SYS/TEMP] too many connections from your address\r\n"
        );
        drop(first);
        // The slot comes back once the session has ended.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let again = TcpStream::connect(h.addr).unwrap();
            let line = first_line(&again);
            if line == "+OK hi\r\n" {
                break;
            }
            assert!(Instant::now() < deadline, "slot never released: {line}");
            thread::sleep(Duration::from_millis(20));
        }
        h.stopper.stop();
        h.thread.join().unwrap();
    }

    #[test]
    fn log_limiter_allows_a_few_per_second() {
        let mut limiter = LogLimiter::new();
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| limiter.allow(t0)).count();
        assert_eq!(allowed, LogLimiter::PER_SECOND as usize);
        assert_eq!(limiter.suppressed, 15);
        assert!(limiter.allow(t0 + Duration::from_millis(1001)));
        assert_eq!(limiter.suppressed, 0, "count reset in the new window");
    }
}
