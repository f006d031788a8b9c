//! Signals as events: SIGTERM, SIGINT, SIGHUP and SIGCHLD are blocked and read from a signalfd in the poll loop.

use std::os::fd::{AsRawFd, RawFd};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::daemon::error::DaemonError;

/// What the daemon does about a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM / SIGINT: stop accepting, let sessions finish, exit.
    Stop(Signal),
    /// SIGHUP: reload the log level (and TLS material).
    Reload,
    /// SIGCHLD: a child (a privileged helper) changed state.
    Child,
}

/// The signalfd of the handled signals.
pub struct Signals {
    fd: SignalFd,
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.add(Signal::SIGCHLD);
    // A file-size limit (RLIMIT_FSIZE) must make the update's write fail
    // with EFBIG, which the journal undoes, instead of killing the daemon:
    // with the signal blocked the kernel returns EFBIG, and `next` drains it.
    set.add(Signal::SIGXFSZ);
    set
}

/// Blocks the handled signals now, so that one arriving during startup
/// waits for the signalfd instead of killing the daemon half-started (a
/// SIGTERM right after the pid file appears would otherwise skip every
/// cleanup). Forked processes inherit the mask.
pub fn block_early() -> Result<(), DaemonError> {
    handled()
        .thread_block()
        .map_err(|e| DaemonError::system("block signals", e))
}

impl Signals {
    /// Blocks the handled signals in the calling thread and opens a
    /// signalfd for them. Must run before any thread is spawned: threads
    /// inherit the mask, so no worker ever takes one of these signals.
    pub fn block() -> Result<Signals, DaemonError> {
        let set = handled();
        block_early()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| DaemonError::system("create a signalfd", e))?;
        Ok(Signals { fd })
    }

    /// The next pending signal, if any (non-blocking).
    pub fn next(&self) -> Option<SignalEvent> {
        loop {
            let info = self.fd.read_signal().ok()??;
            let Ok(signo) = i32::try_from(info.ssi_signo) else {
                continue;
            };
            match Signal::try_from(signo) {
                Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => return Some(SignalEvent::Stop(s)),
                Ok(Signal::SIGHUP) => return Some(SignalEvent::Reload),
                Ok(Signal::SIGCHLD) => return Some(SignalEvent::Child),
                _ => continue,
            }
        }
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
