//! The acceptor: one mio poll loop over the listeners, the signalfd and a waker; it admits connections (daemon/admission.rs) and hands them to the pool.
//!
//! Each source is a token in [`Acceptor::run`]'s dispatch; a new one (a
//! control socket) is one more arm there. Besides events, the loop wakes on
//! a timer while accept(2) is short of descriptors or connections wait in
//! the queue, so neither spins nor waits unboundedly.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::control::server::ControlServer;
use crate::counters::{self, Counter};
use crate::daemon::admission::{self, Admission, Refusal};
use crate::daemon::helpers_watch::HelperWatch;
use crate::daemon::listeners::Listener;
use crate::daemon::log_limiter::LogLimiter;
use crate::daemon::pool::Pool;
use crate::daemon::sessions::Ticket;
use crate::daemon::signals::{SignalEvent, Signals};
use crate::limits;
use crate::net::socket::Socket;

const SIGNALS: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// The control socket's listener; its conversations take the tokens after.
const CONTROL: usize = 1 << 20;

/// An admitted connection on its way to a worker.
pub struct Job {
    pub stream: Socket,
    pub peer: SocketAddr,
    /// Accepted on an implicit-TLS listener: handshake before the greeting.
    pub tls: bool,
    /// Holds the client's per-address slot until the session ends. For a
    /// trusted proxy it is not counted yet: the worker counts it for the
    /// client its PROXY header names.
    pub ticket: Ticket,
    /// The peer is in `proxy_protocol_from`: a PROXY header comes first.
    pub proxied: bool,
    /// When it was handed to the pool; a queued job waits a bounded time.
    pub submitted: Instant,
}

/// Why the acceptor stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Signal(Signal),
    /// [`Stopper::stop`] was called.
    Requested,
    /// No privileged helper is left, or none answers any more; the text
    /// says which and how.
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
    /// Why the daemon cannot serve on, when that is why it stops.
    failure: Arc<Mutex<Option<String>>>,
}

impl Stopper {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Stops the acceptor because no privileged helper answers any more:
    /// it returns [`StopReason::HelperDied`] with `why`, and the daemon
    /// exits with an error for its supervisor to restart it.
    pub fn no_helper_answers(&self, why: String) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
        self.stop();
    }
}

/// The poll loop and everything it watches.
pub struct Acceptor {
    poll: Poll,
    listeners: Vec<Listener>,
    signals: Option<Signals>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    admission: Arc<Admission>,
    /// Refused and evicted connections: a few lines a second.
    refusals: LogLimiter,
    /// accept(2) failures (out of descriptors): one line a second.
    accept_errors: LogLimiter,
    /// What SIGHUP does (reload the log level and TLS material).
    on_reload: Option<Box<dyn FnMut() + Send>>,
    /// The privileged helpers: when the last one ends, the daemon stops.
    helpers: HelperWatch,
    /// `--who`, `--kick`, `--stats`.
    control: Option<ControlServer>,
}

impl Acceptor {
    /// The helper processes whose end, once none is left, stops the daemon.
    pub fn watch_helpers(&mut self, pids: &[Pid]) {
        self.helpers = HelperWatch::new(pids);
    }

    /// Registers `listeners` (and `signals`, when the daemon handles them)
    /// with a new poll instance; connections are admitted by `admission`.
    pub fn new(
        listeners: Vec<Listener>,
        signals: Option<Signals>,
        admission: Arc<Admission>,
    ) -> io::Result<Acceptor> {
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
            failure: Arc::default(),
            admission,
            refusals: LogLimiter::new("refused connections", limits::REFUSAL_LOG_LINES_PER_SECOND),
            accept_errors: LogLimiter::new(
                "failures to accept a connection",
                limits::ACCEPT_ERROR_LOG_LINES_PER_SECOND,
            ),
            on_reload: None,
            helpers: HelperWatch::new(&[]),
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
            failure: Arc::clone(&self.failure),
        }
    }

    /// The resolved addresses being listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.local).collect()
    }

    /// Accepts connections until a stop signal, [`Stopper::stop`], the
    /// end of the last helper or [`Stopper::no_helper_answers`]. Never
    /// blocks on a client: refusals are written without blocking.
    pub fn run(&mut self, pool: &Pool<Job>) -> io::Result<StopReason> {
        let mut events = Events::with_capacity(64);
        let mut retry_accept = false;
        loop {
            // The earliest of: an accept retry, a queued connection's
            // check, a control conversation's deadline, a count of
            // left-out log lines.
            let now = Instant::now();
            let own = match (retry_accept, pool.queued() > 0) {
                (true, _) => Some(limits::ACCEPT_RETRY),
                (false, true) => Some(limits::QUEUE_CHECK),
                (false, false) => None,
            };
            let timeout = [
                self.control.as_ref().and_then(ControlServer::next_deadline),
                self.refusals.due(),
                self.accept_errors.due(),
            ]
            .into_iter()
            .flatten()
            .map(|due| due.saturating_duration_since(now))
            .chain(own)
            .min();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if retry_accept {
                retry_accept = false;
                for i in 0..self.listeners.len() {
                    retry_accept |= self.accept_all(i, pool);
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
                    Token(i) => retry_accept |= self.accept_all(i, pool),
                }
            }
            let now = Instant::now();
            if let Some(control) = self.control.as_mut() {
                control.expire(now, self.poll.registry());
            }
            self.refusals.flush(now);
            self.accept_errors.flush(now);
            self.expire_queued(pool);
            if self.stop.load(Ordering::SeqCst) {
                let failure = self
                    .failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                return Ok(failure.map_or(StopReason::Requested, StopReason::HelperDied));
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
                    if let Some(why) = self.helpers.reap() {
                        return Some(StopReason::HelperDied(why));
                    }
                }
            }
        }
        None
    }

    /// Accepts until the listener has nothing pending. Returns `true` when
    /// accepting must be retried later (out of file descriptors).
    fn accept_all(&mut self, index: usize, pool: &Pool<Job>) -> bool {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return false;
            };
            let tls = listener.tls;
            match listener.socket.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, tls, pool),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return false,
                    // The client gave up before we got to it.
                    io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset => continue,
                    _ => {
                        if self.accept_errors.allow(Instant::now()) {
                            log::error!(
                                "cannot accept connections on {}: {e}; retrying every {} ms",
                                listener.local,
                                limits::ACCEPT_RETRY.as_millis()
                            );
                        }
                        return true;
                    }
                },
            }
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, tls: bool, pool: &Pool<Job>) {
        let stream = Socket::new(stream);
        let admitted = match self.admission.admit(&stream, peer) {
            Ok(admitted) => admitted,
            Err(refusal) => return self.refuse(&stream, peer, tls, refusal),
        };
        log::debug!("connection from {peer}");
        if pool.saturated() {
            if let Some(evicted) = self.admission.make_room() {
                counters::bump(Counter::RefusedEviction);
                if self.refusals.allow(Instant::now()) {
                    log::warn!(
                        "evicted an idle connection: rip={} idle={}s reason=all workers busy, \
                         making room for rip={}",
                        evicted
                            .ip
                            .map_or_else(|| "unknown".into(), |ip| ip.to_canonical().to_string()),
                        evicted.idle.as_secs(),
                        peer.ip().to_canonical()
                    );
                }
            }
        }
        let job = Job {
            stream,
            peer,
            tls,
            ticket: admitted.ticket,
            proxied: admitted.proxied,
            submitted: Instant::now(),
        };
        match pool.submit(job) {
            Ok(()) => counters::bump(Counter::ConnectionsAccepted),
            Err(job) => self.refuse(&job.stream, peer, tls, Refusal::Busy),
        }
    }

    /// Turns away queued connections that waited [`limits::MAX_QUEUE_WAIT`]
    /// for a worker: every worker is busy with a logged-in session.
    fn expire_queued(&mut self, pool: &Pool<Job>) {
        let now = Instant::now();
        let expired = pool.take_expired(|job| {
            now.saturating_duration_since(job.submitted) >= limits::MAX_QUEUE_WAIT
        });
        for job in expired {
            self.refuse(&job.stream, job.peer, job.tls, Refusal::Busy);
        }
    }

    fn refuse(&mut self, stream: &TcpStream, peer: SocketAddr, tls: bool, refusal: Refusal) {
        if self.refusals.allow(Instant::now()) {
            admission::log_refusal(peer.ip(), refusal);
        }
        admission::refuse(stream, refusal, tls);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::listeners;
    use crate::daemon::pool::PoolLimits;
    use crate::daemon::sessions::SessionTable;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::thread;
    use std::time::Duration;

    /// A running acceptor whose "sessions" greet and wait for end of file.
    struct Harness {
        addr: SocketAddr,
        stopper: Stopper,
        thread: thread::JoinHandle<StopReason>,
    }

    /// `evictable`: the sessions count as unauthenticated (they hold a
    /// worker), so newcomers may evict them; otherwise as logged in.
    fn start(max_workers: usize, queue_len: usize, per_ip: usize, evictable: bool) -> Harness {
        let listener = listeners::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local;
        let table = Arc::new(SessionTable::new(per_ip));
        let admission = Arc::new(Admission::new(table, None, &[]));
        let mut acceptor = Acceptor::new(vec![listener], None, admission).unwrap();
        let stopper = acceptor.stopper();
        let thread = thread::spawn(move || {
            let pool = Pool::new(
                PoolLimits {
                    max_workers,
                    queue_len,
                    stack_size: 64 * 1024,
                },
                move |job: Job| {
                    job.ticket.live.activity.serving();
                    if !evictable {
                        job.ticket.live.activity.authenticated();
                    }
                    let mut stream = job.stream;
                    stream.set_nonblocking(false).unwrap();
                    let _ = stream.write_all(b"+OK hi\r\n");
                    let _ = stream.read(&mut [0u8; 8]);
                },
            );
            acceptor.run(&pool).unwrap()
        });
        Harness {
            addr,
            stopper,
            thread,
        }
    }

    impl Harness {
        fn connect(&self) -> TcpStream {
            TcpStream::connect(self.addr).unwrap()
        }

        /// A new connection, already greeted by its session.
        fn greeted(&self) -> TcpStream {
            let stream = self.connect();
            assert_eq!(first_line(&stream), "+OK hi\r\n");
            stream
        }

        fn stop(self) -> StopReason {
            self.stopper.stop();
            self.thread.join().unwrap()
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
        let h = start(1, 1, 0, false);
        let served = h.greeted();
        let queued = h.connect();
        let refused = h.connect();
        assert_eq!(
            first_line(&refused),
            "-ERR [SYS/TEMP] server busy, try again\r\n"
        );
        assert_eq!(first_line(&refused), "", "then closed");
        drop(served);
        assert_eq!(
            first_line(&queued),
            "+OK hi\r\n",
            "queued one is served next"
        );
        assert_eq!(h.stop(), StopReason::Requested);
    }

    #[test]
    fn no_helper_answering_stops_with_the_reason() {
        let h = start(1, 1, 0, false);
        drop(h.greeted());
        h.stopper
            .no_helper_answers("no privileged helper answers any more".into());
        assert_eq!(
            h.thread.join().unwrap(),
            StopReason::HelperDied("no privileged helper answers any more".into())
        );
    }

    #[test]
    fn per_address_limit_refuses_and_recovers() {
        let h = start(4, 4, 1, false);
        let first = h.greeted();
        let second = h.connect();
        assert_eq!(
            first_line(&second),
            "-ERR [SYS/TEMP] too many connections from your address\r\n"
        );
        drop(first);
        // The slot comes back once the session has ended.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let again = h.connect();
            let line = first_line(&again);
            if line == "+OK hi\r\n" {
                break;
            }
            assert!(Instant::now() < deadline, "slot never released: {line}");
            thread::sleep(Duration::from_millis(20));
        }
        h.stop();
    }

    #[test]
    fn a_newcomer_evicts_the_idlest_unauthenticated_session() {
        let h = start(2, 2, 0, true);
        let oldest = h.greeted();
        thread::sleep(Duration::from_millis(20));
        let younger = h.greeted();
        let newcomer = h.connect();
        assert_eq!(first_line(&newcomer), "+OK hi\r\n", "served at once");
        assert_eq!(first_line(&oldest), "", "the idlest one was closed");
        drop(younger);
        h.stop();
    }
}
