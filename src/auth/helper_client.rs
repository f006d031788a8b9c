//! The network process's side of the privileged helper: a small pool of channels, and the per-session `Authenticator` over it.
//!
//! There are as many channels as helper processes, and each carries one
//! request at a time, so at most that many password hashes run at once
//! however many sessions log in; the others wait their turn here. A login
//! whose exchange fails gets `[SYS/TEMP]`: nothing but a well-formed
//! `Accepted` from a helper lets a session in. A channel whose helper is
//! gone is dropped; one that only failed this request (a garbled or
//! truncated reply, socket buffers short) serves the next; one whose reply
//! timed out (a hung PAM or NSS lookup) serves again once the late reply
//! has come and been discarded, so one slow request costs a helper only
//! while it lasts. A login waits a bounded time for a free helper.

use crate::counters::{self, Counter};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

use super::helper_channel::{discard_late_reply, exchange, Channel, Failure, Verdict};
use crate::account::{AuthOutcome, Login, Password, Principal, Spool};
use crate::authenticator::{Authenticator, ScramLogin};
use crate::limits::{
    HELPER_LATE_REPLY_WAIT, HELPER_QUEUE_WAIT, HELPER_REPLY_TIMEOUT, OFFERS_SCRAM_TTL,
};
use crate::privsep::helper_wire::{Request, Response, SpoolAnswer};
use crate::sasl::{ScramParams, SecretLookup, KEY_LEN};

/// How long the pool waits on its helpers.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// For a reply: after this the login fails ([`HELPER_REPLY_TIMEOUT`]).
    pub reply: Duration,
    /// For a free helper: after this the login fails ([`HELPER_QUEUE_WAIT`]).
    pub free_helper: Duration,
    /// For a reply that timed out, before its channel is given up
    /// ([`HELPER_LATE_REPLY_WAIT`]).
    pub late_reply: Duration,
}

impl Waits {
    /// The limits of `limits.rs`. Debug builds take shorter waits for a
    /// reply and for a late reply, in milliseconds, from
    /// `IRONPOP_TEST_HELPER_REPLY_TIMEOUT_MS` and
    /// `IRONPOP_TEST_HELPER_LATE_REPLY_MS` (the end-to-end tests of slow and
    /// hung helpers); release builds ignore them.
    pub fn standard() -> Waits {
        #[cfg(debug_assertions)]
        let test_ms = |var: &str, standard: Duration| {
            std::env::var(var)
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map_or(standard, Duration::from_millis)
        };
        #[cfg(not(debug_assertions))]
        let test_ms = |_: &str, standard: Duration| standard;
        Waits {
            reply: test_ms("IRONPOP_TEST_HELPER_REPLY_TIMEOUT_MS", HELPER_REPLY_TIMEOUT),
            free_helper: HELPER_QUEUE_WAIT,
            late_reply: test_ms("IRONPOP_TEST_HELPER_LATE_REPLY_MS", HELPER_LATE_REPLY_WAIT),
        }
    }
}

struct Idle {
    channels: Vec<Channel>,
    /// Channels in existence (idle, in use, or waiting for a late reply);
    /// 0 means every helper is gone.
    alive: usize,
}

/// What the pool does once no helper answers any more.
type NoneAnswers = Box<dyn FnOnce(String) + Send>;

/// The channel list, shared with the threads that wait for late replies.
struct Shared {
    idle: Mutex<Idle>,
    freed: Condvar,
    /// Called once, when the last channel is given up.
    none_answers: Mutex<Option<NoneAnswers>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns a channel in step to the idle list.
    fn give_back(&self, channel: Channel) {
        self.lock().channels.push(channel);
        self.freed.notify_all();
    }

    /// Closes a channel for good: its helper sees end of file and exits;
    /// the daemon goes on with the others.
    fn give_up(&self, channel: Channel, e: &io::Error) {
        let pid = channel.pid;
        drop(channel);
        self.lost(pid, e);
    }

    /// Counts the closed channel of helper `pid` out.
    fn lost(&self, pid: i32, e: &io::Error) {
        let mut idle = self.lock();
        idle.alive = idle.alive.saturating_sub(1);
        let left = idle.alive;
        drop(idle);
        self.freed.notify_all();
        log::error!("privileged helper (pid {pid}) failed and is given up: {e}");
        if left == 0 {
            // A helper that died stops the daemon (helpers_watch.rs); one
            // that hangs for good is as useless, so it stops it too.
            let why = format!(
                "no privileged helper answers any more (the last one, pid {pid}, was given up)"
            );
            log::error!("{why}");
            let hook = self
                .none_answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(hook) = hook {
                hook(why);
            }
        }
    }
}

/// The channels to the helper processes.
pub struct HelperPool {
    shared: Arc<Shared>,
    waits: Waits,
    offers_scram: Mutex<Option<(Instant, bool)>>,
}

impl HelperPool {
    /// Takes over the network-side ends of the helpers' channels.
    pub fn new(channels: Vec<(OwnedFd, i32)>) -> io::Result<HelperPool> {
        HelperPool::with_waits(channels, Waits::standard())
    }

    /// The same, waiting on the helpers as `waits` says.
    pub fn with_waits(channels: Vec<(OwnedFd, i32)>, waits: Waits) -> io::Result<HelperPool> {
        let timeout = TimeVal::new(waits.reply.as_secs() as _, waits.reply.subsec_micros() as _);
        let mut list = Vec::with_capacity(channels.len());
        for (fd, pid) in channels {
            setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
            setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
            list.push(Channel { fd, pid });
        }
        Ok(HelperPool {
            shared: Arc::new(Shared {
                idle: Mutex::new(Idle {
                    alive: list.len(),
                    channels: list,
                }),
                freed: Condvar::new(),
                none_answers: Mutex::new(None),
            }),
            waits,
            offers_scram: Mutex::new(None),
        })
    }

    /// Whether SCRAM-SHA-256 can be offered: a helper's answer, reused for
    /// [`OFFERS_SCRAM_TTL`].
    pub fn offers_scram(&self) -> bool {
        let mut cached = self
            .offers_scram
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((at, answer)) = *cached {
            if at.elapsed() < OFFERS_SCRAM_TTL {
                return answer;
            }
        }
        let answer = matches!(
            self.ask(&Request::OffersScram),
            Ok(Verdict {
                response: Response::Flag(true),
                ..
            })
        );
        *cached = Some((Instant::now(), answer));
        answer
    }

    /// Calls `hook` with the reason once the last channel has been given
    /// up (every helper hung past [`Waits::late_reply`], or failed): the
    /// daemon stops rather than answer every login `[SYS/TEMP]` for good.
    pub fn when_none_answers(&self, hook: impl FnOnce(String) + Send + 'static) {
        *self
            .shared
            .none_answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(hook));
    }

    /// Helpers still reachable.
    pub fn alive(&self) -> usize {
        self.shared.lock().alive
    }

    /// A free channel, waiting at most `waits.free_helper` for one.
    fn take(&self) -> Result<Channel, String> {
        let deadline = Instant::now() + self.waits.free_helper;
        let mut idle = self.shared.lock();
        loop {
            if let Some(c) = idle.channels.pop() {
                return Ok(c);
            }
            if idle.alive == 0 {
                return Err("no privileged helper is running".into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "every privileged helper stayed busy for {} s",
                    self.waits.free_helper.as_secs_f32()
                ));
            }
            idle = self
                .shared
                .freed
                .wait_timeout(idle, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Asks a helper to check `password` (and open the spool). `Err` means
    /// no trustworthy answer was had.
    pub fn verify(&self, user: &str, password: &[u8]) -> Result<Verdict, String> {
        self.ask(&Request::Verify {
            user: user.to_owned(),
            password: Password::new(password.to_vec()),
        })
    }

    /// One request, one answer from whichever helper is free.
    pub fn ask(&self, request: &Request) -> Result<Verdict, String> {
        let Some(frame) = request.encode() else {
            // Longer than any real user name or password: not worth a hash.
            return Ok(Verdict {
                response: Response::Rejected,
                spool: None,
            });
        };
        let frame = Zeroizing::new(frame);
        counters::bump(Counter::HelperRequests);
        loop {
            let channel = self
                .take()
                .inspect_err(|_| counters::bump(Counter::HelperFailures))?;
            match exchange(&channel, &frame) {
                Ok(verdict) => {
                    self.shared.give_back(channel);
                    return Ok(verdict);
                }
                Err(Failure::Request(e)) => {
                    // The channel is still in step (nothing was sent, or
                    // the whole reply was read): it serves the next login.
                    self.shared.give_back(channel);
                    log::warn!("privileged helper: a login failed: {e}");
                    return Err(format!("privileged helper: {e}"));
                }
                // A helper that died before it read the request never saw
                // it: another one may answer it.
                Err(Failure::Gone(e)) => self.shared.give_up(channel, &e),
                Err(Failure::Late(e)) => {
                    counters::bump(Counter::HelperFailures);
                    log::warn!(
                        "privileged helper (pid {}) did not answer in time ({} s): \
                         the login fails; the helper serves again once its late \
                         answer is in",
                        channel.pid,
                        self.waits.reply.as_secs_f32()
                    );
                    self.await_late_reply(channel);
                    return Err(format!("privileged helper: {e}"));
                }
                Err(Failure::Channel(e)) => {
                    counters::bump(Counter::HelperFailures);
                    self.shared.give_up(channel, &e);
                    return Err(format!("privileged helper failed: {e}"));
                }
            }
        }
    }

    /// Keeps a channel whose reply timed out out of the idle list until
    /// that reply has come and been discarded (then it serves again), or
    /// [`Waits::late_reply`] has passed (then it is given up; the deadline
    /// is looked at each time a receive times out, so up to one
    /// [`Waits::reply`] later). A thread of
    /// its own waits, so the login that timed out is answered at once.
    fn await_late_reply(&self, channel: Channel) {
        let shared = Arc::clone(&self.shared);
        let deadline = Instant::now() + self.waits.late_reply;
        let pid = channel.pid;
        let waiter = std::thread::Builder::new()
            .name("helper-late-reply".into())
            .spawn(move || match discard_late_reply(&channel, deadline) {
                Ok(()) => {
                    log::warn!(
                        "privileged helper (pid {pid}) answered late; \
                         the reply was discarded and the helper serves again"
                    );
                    shared.give_back(channel);
                }
                Err(e) => shared.give_up(channel, &e),
            });
        if let Err(e) = waiter {
            // The closure, and the channel with it, is already dropped.
            self.shared.lost(pid, &e);
        }
    }
}

/// One session's view of the helper, as its `Authenticator`. The spool
/// comes with the credential check (password, certificate chain or SCRAM
/// proof, all checked by the helper) and is handed to the session in the
/// same value, so the network process can open only what a valid
/// credential unlocked.
pub struct HelperSession {
    pool: Arc<HelperPool>,
}

impl HelperSession {
    pub fn new(pool: Arc<HelperPool>) -> HelperSession {
        HelperSession { pool }
    }
}

impl Authenticator for HelperSession {
    fn verify_password(&self, user: &str, password: &[u8]) -> AuthOutcome<Login> {
        login(self.pool.verify(user, password)).0
    }

    fn verify_certificate(
        &self,
        chain: &[CertificateDer<'_>],
        authzid: &str,
    ) -> AuthOutcome<Login> {
        login(self.pool.ask(&Request::Certificate {
            chain: chain.iter().map(|c| c.as_ref().to_vec()).collect(),
            authzid: authzid.to_owned(),
        }))
        .0
    }

    fn offers_scram(&self) -> bool {
        self.pool.offers_scram()
    }

    fn scram_params(&self, user: &str) -> SecretLookup {
        let verdict = self.pool.ask(&Request::ScramParams {
            user: user.to_owned(),
        });
        match verdict.map(|v| v.response) {
            Ok(Response::ScramParams { salt, iterations }) => {
                SecretLookup::Found(ScramParams { salt, iterations })
            }
            Ok(Response::Unavailable(why)) | Err(why) => SecretLookup::Unavailable(why),
            Ok(_) => SecretLookup::NoSecret,
        }
    }

    fn scram_login(&self, user: &str, auth_message: &[u8], proof: &[u8; KEY_LEN]) -> ScramLogin {
        let (outcome, server_signature) = login(self.pool.ask(&Request::ScramProof {
            user: user.to_owned(),
            auth_message: auth_message.to_vec(),
            proof: *proof,
        }));
        match (outcome, server_signature) {
            (AuthOutcome::Accepted(login), Some(sig)) => ScramLogin {
                outcome: AuthOutcome::Accepted(login),
                server_signature: Some(sig),
            },
            // The spool the helper opened is closed right here.
            (AuthOutcome::Accepted(_), None) => ScramLogin::failed(AuthOutcome::Unavailable(
                "the privileged helper accepted a SCRAM proof without a signature".into(),
            )),
            (other, _) => ScramLogin::failed(other),
        }
    }
}

/// The daemon's end of the first helper's startup channel
/// (`privsep/helper.rs`): startup recovery asks it for the spools it
/// cannot open itself. Dropping it closes the channel, and the helper
/// never answers that request again.
pub struct StartupChannel {
    pool: HelperPool,
}

impl StartupChannel {
    pub fn new(fd: OwnedFd, pid: i32) -> io::Result<StartupChannel> {
        Ok(StartupChannel {
            pool: HelperPool::new(vec![(fd, pid)])?,
        })
    }

    /// `user`'s spool, if it is `spool`, opened by the helper with a
    /// login's checks.
    pub fn open(&self, user: &str, spool: &Path) -> AuthOutcome<Login> {
        login(self.pool.ask(&Request::StartupSpool {
            user: user.to_owned(),
            mailbox: spool.to_path_buf(),
        }))
        .0
    }
}

/// Turns a helper's answer to a login into an outcome; an accepted login
/// carries the spool the helper opened.
fn login(verdict: Result<Verdict, String>) -> (AuthOutcome<Login>, Option<[u8; KEY_LEN]>) {
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => return (AuthOutcome::Unavailable(e), None),
    };
    let outcome = match verdict.response {
        Response::Accepted(accepted) => {
            let spool = match accepted.spool {
                SpoolAnswer::Open => Spool::Opened(verdict.spool),
                SpoolAnswer::Missing => Spool::Opened(None),
                SpoolAnswer::Refused(reason) => Spool::Refused(reason),
                SpoolAnswer::Failed(errno) => Spool::Failed(errno),
            };
            let principal = Principal {
                user: accepted.user,
                mailbox: accepted.mailbox,
            };
            return (
                AuthOutcome::Accepted(Login { principal, spool }),
                accepted.server_signature,
            );
        }
        Response::Rejected => AuthOutcome::Rejected,
        Response::Unavailable(why) => AuthOutcome::Unavailable(why),
        Response::ScramParams { .. } | Response::Flag(_) => {
            AuthOutcome::Unavailable("the privileged helper answered another question".into())
        }
    };
    (outcome, None)
}

#[cfg(test)]
#[path = "helper_client_tests.rs"]
mod tests;
