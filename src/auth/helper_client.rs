//! The network process's side of the privileged helper: a small pool of channels, and the per-session `Authenticator` over it.
//!
//! There are as many channels as helper processes, and each carries one
//! request at a time, so at most that many password hashes run at once
//! however many sessions log in; the others wait their turn here. A login
//! whose exchange fails gets `[SYS/TEMP]`: nothing but a well-formed
//! `Accepted` from a helper lets a session in. A channel that may be out
//! of step (helper gone, reply timed out) is dropped and never reused; one
//! that only failed this request (a garbled or truncated reply, socket
//! buffers short) serves the next.

use crate::counters::{self, Counter};
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use nix::sys::socket::{recvmsg, sendmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeVal;

use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

use crate::account::{AuthOutcome, Login, Password, Principal, Spool};
use crate::authenticator::{Authenticator, ScramLogin};
use crate::exhaustion::is_exhaustion_errno;
use crate::limits::{HELPER_REPLY_TIMEOUT, MAX_HELPER_FRAME, OFFERS_SCRAM_TTL};
use crate::privsep::helper_wire::{Request, Response, SpoolAnswer};
use crate::sasl::{ScramParams, SecretLookup, KEY_LEN};

struct Channel {
    fd: OwnedFd,
    pid: i32,
}

struct Idle {
    channels: Vec<Channel>,
    /// Channels in existence (idle or in use); 0 means every helper is gone.
    alive: usize,
}

/// The channels to the helper processes.
pub struct HelperPool {
    idle: Mutex<Idle>,
    freed: Condvar,
    offers_scram: Mutex<Option<(Instant, bool)>>,
}

/// What a helper said about a login, with the spool it opened.
#[derive(Debug)]
pub struct Verdict {
    pub response: Response,
    pub spool: Option<File>,
}

impl HelperPool {
    /// Takes over the network-side ends of the helpers' channels.
    pub fn new(channels: Vec<(OwnedFd, i32)>) -> io::Result<HelperPool> {
        let timeout = TimeVal::new(HELPER_REPLY_TIMEOUT.as_secs() as _, 0);
        let mut list = Vec::with_capacity(channels.len());
        for (fd, pid) in channels {
            setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
            setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
            list.push(Channel { fd, pid });
        }
        Ok(HelperPool {
            idle: Mutex::new(Idle {
                alive: list.len(),
                channels: list,
            }),
            freed: Condvar::new(),
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

    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Helpers still reachable.
    pub fn alive(&self) -> usize {
        self.lock().alive
    }

    fn take(&self) -> Result<Channel, String> {
        let mut idle = self.lock();
        loop {
            if let Some(c) = idle.channels.pop() {
                return Ok(c);
            }
            if idle.alive == 0 {
                return Err("no privileged helper is running".into());
            }
            idle = self
                .freed
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn give_back(&self, channel: Option<Channel>) {
        let mut idle = self.lock();
        match channel {
            Some(c) => idle.channels.push(c),
            None => idle.alive = idle.alive.saturating_sub(1),
        }
        drop(idle);
        self.freed.notify_all();
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
                    self.give_back(Some(channel));
                    return Ok(verdict);
                }
                Err(Failure::Request(e)) => {
                    // The channel is still in step (nothing was sent, or
                    // the whole reply was read): it serves the next login.
                    self.give_back(Some(channel));
                    log::warn!("privileged helper: a login failed: {e}");
                    return Err(format!("privileged helper: {e}"));
                }
                // A helper that died before it read the request never saw
                // it: another one may answer it.
                Err(Failure::Gone(e)) => self.give_up(channel, &e),
                Err(Failure::Channel(e)) => {
                    self.give_up(channel, &e);
                    return Err(format!("privileged helper failed: {e}"));
                }
            }
        }
    }

    /// Closes a channel for good: its helper sees end of file and exits;
    /// the daemon goes on with the others.
    fn give_up(&self, channel: Channel, e: &io::Error) {
        let pid = channel.pid;
        drop(channel);
        self.give_back(None);
        counters::bump(Counter::HelperFailures);
        log::error!("privileged helper (pid {pid}) failed and is given up: {e}");
    }
}

/// How an exchange with a helper failed.
enum Failure {
    /// This request failed; the channel is in step and can be reused.
    Request(io::Error),
    /// The helper was gone before the request reached it: the channel is
    /// closed, and another helper may take the request.
    Gone(io::Error),
    /// The channel cannot be trusted to be in step any more (the helper
    /// ended while working on the request, or a reply may still be on its
    /// way): it is closed.
    Channel(io::Error),
}

fn exchange(channel: &Channel, frame: &[u8]) -> Result<Verdict, Failure> {
    let fd = channel.fd.as_raw_fd();
    loop {
        match sendmsg::<()>(
            fd,
            &[IoSlice::new(frame)],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            // A send timeout (EAGAIN) means the helper stopped reading.
            Err(e) if e != nix::errno::Errno::EAGAIN && is_exhaustion_errno(e as i32) => {
                return Err(Failure::Request(e.into()))
            }
            Err(e @ (nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET)) => {
                return Err(Failure::Gone(e.into()))
            }
            Err(e) => return Err(Failure::Channel(e.into())),
            Ok(_) => break,
        }
    }
    let mut buf = vec![0u8; MAX_HELPER_FRAME + 1];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let (n, files, truncated) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            // Includes the reply timeout: a late reply would answer the
            // next request, so the channel is given up.
            Err(e) => return Err(Failure::Channel(e.into())),
            Ok(msg) => {
                // Every received descriptor is owned at once, before any
                // check can return, so none stays open on an error.
                let mut files: Vec<File> = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for cmsg in cmsgs {
                        if let ControlMessageOwned::ScmRights(received) = cmsg {
                            files.extend(received.into_iter().map(owned_file));
                        }
                    }
                }
                let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                break (msg.bytes, files, truncated);
            }
        }
    };
    if n == 0 {
        return Err(Failure::Channel(io::Error::other(
            "the helper closed the channel",
        )));
    }
    let mut files = files;
    if truncated {
        // The kernel drops descriptors this process has no room for.
        return Err(Failure::Request(io::Error::other(
            "the spool's descriptor did not arrive (out of file descriptors?)",
        )));
    }
    let response = buf
        .get(..n)
        .filter(|_| n <= MAX_HELPER_FRAME)
        .and_then(Response::decode)
        .ok_or_else(|| {
            Failure::Request(io::Error::other(format!("malformed reply ({n} bytes)")))
        })?;
    let wants_fd = matches!(
        response,
        Response::Accepted {
            spool: SpoolAnswer::Open,
            ..
        }
    );
    match (wants_fd, files.len()) {
        (true, 1) => Ok(Verdict {
            response,
            spool: files.pop(),
        }),
        (false, 0) => Ok(Verdict {
            response,
            spool: None,
        }),
        (_, k) => Err(Failure::Request(io::Error::other(format!(
            "reply carries {k} descriptors, which does not fit its content"
        )))),
    }
}

fn owned_file(fd: RawFd) -> File {
    // SAFETY: `fd` was just installed in this process by the kernel from
    // an SCM_RIGHTS message; nothing else refers to it, so this is its
    // only owner.
    File::from(unsafe { OwnedFd::from_raw_fd(fd) })
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
        Response::Accepted {
            user,
            mailbox,
            spool,
            server_signature,
        } => {
            let spool = match spool {
                SpoolAnswer::Open => Spool::Opened(verdict.spool),
                SpoolAnswer::Missing => Spool::Opened(None),
                SpoolAnswer::Refused(reason) => Spool::Refused(reason),
                SpoolAnswer::Failed(errno) => Spool::Failed(errno),
            };
            let principal = Principal { user, mailbox };
            return (
                AuthOutcome::Accepted(Login { principal, spool }),
                server_signature,
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
