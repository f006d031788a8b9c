//! The privileged helper process: forked as root before any thread exists, it checks credentials (passwords, client certificate chains, SCRAM proofs) and opens spools, and does nothing else.
//!
//! Each helper is single-threaded, holds no network socket, and talks to
//! the network process over one `SOCK_SEQPACKET` socketpair: a request
//! frame in, a response frame out (with the spool's descriptor attached by
//! SCM_RIGHTS). A request it cannot serve (malformed, a resource
//! exhausted, a failure while checking it) gets an `Unavailable` answer,
//! and the helper goes on: it exits only when its channel ends. The helper
//! never sleeps on a failure — the failed-login delay is the network
//! process's business — so a helper is busy only while hashing.
//!
//! No request on the channel names an account without a credential: a
//! compromised network process can have a spool opened only with the
//! account's password, a certificate chain the helper itself verifies
//! against `tls_client_ca`, or a SCRAM proof it checks against the stored
//! key (which never leaves the helper).
//!
//! The one request without a credential — startup recovery's "open this
//! account's spool" — has a channel of its own, the *startup channel*,
//! which only the first helper has. That helper serves the startup
//! channel first and nothing else, until it reads end of file: the daemon
//! closes its end after startup recovery, before its first accept. Then
//! the helper closes its own end and serves the ordinary channel, where
//! that request is refused. Nothing can reopen a socketpair, so once the
//! daemon serves clients the capability is gone for good, whatever the
//! daemon does later.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{
    recv, sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use nix::unistd::{self, ForkResult, Pid};

use rustls::pki_types::CertificateDer;
use zeroize::Zeroize;

pub use super::accounts::AccountDb;
use super::checked::Checked;
use super::helper_wire::{Accepted, Request, Response};
use super::spool::open_checked;
use crate::account::AuthOutcome;
use crate::exhaustion::is_exhaustion_errno;
use crate::limits::{HELPER_EXHAUSTION_PAUSE, HELPER_SEND_ATTEMPTS, MAX_HELPER_FRAME};
use crate::sasl::SecretLookup;

/// A running helper as the network process sees it.
#[derive(Debug)]
pub struct HelperProcess {
    pub pid: Pid,
    pub channel: OwnedFd,
    /// The daemon's end of the startup channel (see the module
    /// documentation), when asked for.
    pub startup: Option<OwnedFd>,
}

fn channel_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Forks one helper, with a startup channel if `startup`. Must be called
/// while the process is single-threaded and still root. `close_in_child`
/// are descriptors the helper must not keep (listening sockets, other
/// helpers' channels).
pub fn spawn(db: &AccountDb, close_in_child: &[RawFd], startup: bool) -> io::Result<HelperProcess> {
    let (ours, theirs) = channel_pair()?;
    let (startup_ours, startup_theirs) = match startup {
        true => {
            let (ours, theirs) = channel_pair()?;
            (Some(ours), Some(theirs))
        }
        false => (None, None),
    };
    let parent = unistd::getpid();
    // SAFETY: the daemon calls this before it starts any thread (see
    // daemon::run and daemon::inetd), so the child cannot inherit a lock
    // held by another thread. The child never returns: it runs the helper
    // loop and exits.
    match unsafe { unistd::fork() }? {
        ForkResult::Parent { child } => {
            drop((theirs, startup_theirs));
            Ok(HelperProcess {
                pid: child,
                channel: ours,
                startup: startup_ours,
            })
        }
        ForkResult::Child => {
            drop((ours, startup_ours));
            for &fd in close_in_child {
                let _ = unistd::close(fd);
            }
            let code = match become_helper(parent) {
                Ok(()) => run(theirs, startup_theirs, db),
                Err(e) => {
                    log::error!("privileged helper: cannot start: {e}");
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// The helper's own hardening: gone with its parent, deaf to the signals
/// the daemon handles (it ends when its channel closes), no core dumps of
/// memory that held password hashes, no stdio that could be a client.
fn become_helper(parent: Pid) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if unistd::getppid() != parent {
        return Err(io::Error::other(
            "the daemon exited while the helper started",
        ));
    }
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGPIPE,
    ] {
        set.add(s);
    }
    set.thread_block()?;
    let devnull = File::options().read(true).write(true).open("/dev/null")?;
    unistd::dup2_stdin(&devnull)?;
    unistd::dup2_stdout(&devnull)?;
    nix::sys::prctl::set_dumpable(false)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    let _ = nix::sys::prctl::set_name(c"ironpop-helper");
    Ok(())
}

/// The helper's life: the startup channel (if any) until the daemon
/// closes it, then the ordinary channel until it ends. Returns the exit
/// code.
pub(crate) fn run(channel: OwnedFd, startup: Option<OwnedFd>, db: &AccountDb) -> i32 {
    if let Some(startup) = startup {
        // Ends at end of file (the daemon is about to accept), or when the
        // channel breaks: either way it is closed here, for good.
        serve_with(&startup, db, handle_startup);
        drop(startup);
    }
    serve(&channel, db)
}

/// The ordinary request loop; returns the exit code.
pub(crate) fn serve(channel: &OwnedFd, db: &AccountDb) -> i32 {
    serve_with(channel, db, handle)
}

/// A request loop answering with `handle`; returns the exit code. Ends at
/// end of file (the daemon closed the channel) and only then, or when the
/// channel itself is broken: a request that cannot be served (malformed,
/// a resource exhausted, a panic while checking it) is answered with an
/// error and the loop goes on.
fn serve_with(channel: &OwnedFd, db: &AccountDb, handle: Handler) -> i32 {
    let mut buf = vec![0u8; MAX_HELPER_FRAME + 1];
    loop {
        let n = match recv(channel.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => return 0,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) if is_exhaustion_errno(e as i32) => {
                log::warn!("privileged helper: cannot read a request for now: {e}");
                std::thread::sleep(HELPER_EXHAUSTION_PAUSE);
                continue;
            }
            Err(e) => {
                log::error!("privileged helper: cannot read from its channel: {e}");
                return 1;
            }
        };
        // A frame filling the buffer was longer than any valid one.
        let request = buf
            .get(..n)
            .filter(|_| n <= MAX_HELPER_FRAME)
            .and_then(Request::decode);
        // Zeroed in place (the buffer is reused for the next request).
        buf.as_mut_slice().zeroize();
        let (response, spool) = match request {
            Some(request) => handle_guarded(db, request, handle),
            None => {
                log::error!("privileged helper: malformed request ({n} bytes) refused");
                (Response::Unavailable("malformed request".into()), None)
            }
        };
        if let Err(e) = reply(channel, &response, spool.as_ref()) {
            log::error!("privileged helper: cannot send a reply: {e}");
            return 1;
        }
    }
}

/// How a channel answers one request.
type Handler = fn(&AccountDb, Request) -> (Response, Option<File>);

/// `handle`, with a panic while serving one request turned into an
/// error answer to that request: the helper serves every other login.
fn handle_guarded(db: &AccountDb, request: Request, handle: Handler) -> (Response, Option<File>) {
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fault::before_request();
        handle(db, request)
    }));
    served.unwrap_or_else(|_| {
        log::error!("privileged helper: a request failed unexpectedly (panic); refused");
        (
            Response::Unavailable("the privileged helper failed on this request".into()),
            None,
        )
    })
}

fn handle(db: &AccountDb, request: Request) -> (Response, Option<File>) {
    // Every request that can open a spool carries a credential, checked
    // here: a password, a certificate chain, or a SCRAM proof.
    let (checked, server_signature) = match request {
        Request::Verify { user, password } => (db.verify(&user, password.as_bytes()), None),
        Request::Certificate { chain, authzid } => {
            let chain: Vec<CertificateDer<'_>> =
                chain.into_iter().map(CertificateDer::from).collect();
            (db.certificate(&chain, &authzid), None)
        }
        Request::ScramProof {
            user,
            auth_message,
            proof,
        } => {
            let (login, owner) = db.scram_login(&user, &auth_message, &proof);
            ((login.outcome, owner), login.server_signature)
        }
        Request::ScramParams { user } => {
            let response = match db.scram_params(&user) {
                SecretLookup::Found(p) => Response::ScramParams {
                    salt: p.salt,
                    iterations: p.iterations,
                },
                SecretLookup::NoSecret => Response::Rejected,
                SecretLookup::Unavailable(why) => Response::Unavailable(why),
            };
            return (response, None);
        }
        Request::OffersScram => return (Response::Flag(db.offers_scram()), None),
        Request::StartupSpool { user, mailbox } => {
            log::error!(
                "privileged helper: refused to open {} for {user:?} without a credential: \
                 startup recovery is over (the daemon serves clients)",
                mailbox.display()
            );
            return (
                Response::Unavailable("startup recovery is over".into()),
                None,
            );
        }
    };
    login_response(checked, server_signature)
}

/// The startup channel's only request: an account's own spool, opened
/// with a login's checks (`open_checked`), for startup recovery.
fn handle_startup(db: &AccountDb, request: Request) -> (Response, Option<File>) {
    match request {
        Request::StartupSpool { user, mailbox } => {
            login_response(db.startup_spool(&user, &mailbox), None)
        }
        _ => (
            Response::Unavailable("the startup channel serves startup recovery only".into()),
            None,
        ),
    }
}

/// An accepted login comes with its spool, opened and checked here.
fn login_response(
    checked: Checked,
    server_signature: Option<[u8; crate::sasl::KEY_LEN]>,
) -> (Response, Option<File>) {
    match checked {
        (AuthOutcome::Accepted(p), owner) => {
            let (spool, file) = open_checked(&p.mailbox, owner);
            let response = Response::Accepted(Accepted {
                user: p.user,
                mailbox: p.mailbox,
                spool,
                server_signature,
            });
            (response, file)
        }
        (AuthOutcome::Rejected, _) => (Response::Rejected, None),
        (AuthOutcome::Unavailable(why), _) => (Response::Unavailable(why), None),
    }
}

/// Sends the answer. When the spool's descriptor cannot be passed (out of
/// buffers or descriptors on either side), the login is answered
/// `Unavailable` without it instead; only a channel that cannot carry even
/// that is an error, which ends the helper.
fn reply(channel: &OwnedFd, response: &Response, spool: Option<&File>) -> io::Result<()> {
    let frame = response
        .encode()
        .or_else(|| Response::Unavailable("reply too large".into()).encode())
        .unwrap_or_default();
    let Some(spool) = spool else {
        return send_frame(channel, &frame, &[]);
    };
    let fds = [spool.as_fd().as_raw_fd()];
    let sent = fault::before_reply().and_then(|()| send_frame(channel, &frame, &fds));
    match sent {
        Err(e) if e.raw_os_error().is_some_and(is_exhaustion_errno) => {
            log::warn!(
                "privileged helper: cannot pass a spool to the daemon: {e}; login refused for now"
            );
            let refusal = Response::Unavailable(format!("cannot pass the spool: {e}"))
                .encode()
                .unwrap_or_default();
            send_frame(channel, &refusal, &[])
        }
        other => other,
    }
}

/// One frame, with `fds` attached. A shortage of socket buffers is waited
/// out a few times (the daemon is reading; it passes) before it counts.
fn send_frame(channel: &OwnedFd, frame: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let mut attempts = 0;
    loop {
        match sendmsg::<()>(
            channel.as_raw_fd(),
            &[IoSlice::new(frame)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            Err(e) if is_exhaustion_errno(e as i32) && attempts < HELPER_SEND_ATTEMPTS => {
                attempts += 1;
                std::thread::sleep(HELPER_EXHAUSTION_PAUSE);
            }
            Err(e) => return Err(e.into()),
            Ok(_) => return Ok(()),
        }
    }
}

/// Test-only fault injection (debug builds): the end-to-end tests make one
/// helper fail one request the way the kernel would, and check that only
/// that login fails. Release builds compile none of it.
mod fault {
    use std::io;

    /// Names a file; the helper that removes it first fails its next spool
    /// hand-off with ENOBUFS (only one helper can win the removal).
    #[cfg(debug_assertions)]
    const REPLY_ENOBUFS: &str = "IRONPOP_TEST_FAULT_REPLY_ENOBUFS";

    /// The same, but the request panics while being served.
    #[cfg(debug_assertions)]
    const REQUEST_PANIC: &str = "IRONPOP_TEST_FAULT_REQUEST_PANIC";

    /// The same, but the request takes [`SLOW_REQUEST`] (a hung account
    /// lookup), past the reply timeout the test gives the daemon.
    #[cfg(debug_assertions)]
    const REQUEST_SLOW: &str = "IRONPOP_TEST_FAULT_REQUEST_SLOW";

    #[cfg(debug_assertions)]
    const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_secs(5);

    #[cfg(debug_assertions)]
    fn armed(var: &str) -> bool {
        std::env::var_os(var).is_some_and(|path| std::fs::remove_file(path).is_ok())
    }

    pub(super) fn before_reply() -> io::Result<()> {
        #[cfg(debug_assertions)]
        if armed(REPLY_ENOBUFS) {
            return Err(io::Error::from_raw_os_error(nix::libc::ENOBUFS));
        }
        Ok(())
    }

    pub(super) fn before_request() {
        #[cfg(debug_assertions)]
        if armed(REQUEST_PANIC) {
            panic!("injected fault");
        }
        #[cfg(debug_assertions)]
        if armed(REQUEST_SLOW) {
            std::thread::sleep(SLOW_REQUEST);
        }
    }
}
