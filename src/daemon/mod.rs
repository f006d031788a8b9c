//! The standalone daemon: startup in DESIGN.md's order, the accept loop, and an orderly shutdown.
//!
//! Startup: identity check → file-descriptor limit → bind listeners →
//! account database and maildrop opener → detach (unless `-F`; before any
//! thread exists) → block signals → worker pool → accept loop. Privilege
//! separation (helper process, privilege drop) comes with the daemon
//! integration work and slots in after the listeners are bound.

pub mod acceptor;
pub mod demo;
pub mod detach;
pub mod error;
pub mod listeners;
pub mod pool;
pub mod sessions;
pub mod signals;
pub mod worker;

use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::config::Config;
use crate::limits;
use crate::mailbox::MboxOpener;

pub use error::DaemonError;

/// After SIGTERM, sessions in the middle of a command get this long to
/// finish it; idle sessions are closed at once.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// After the grace period every connection is cut; sessions still busy
/// with the mailbox (an update in progress) get this long to finish it.
const SHUTDOWN_FINISH: Duration = Duration::from_secs(20);

/// File descriptors one session may hold: the socket, its shutdown handle,
/// the spool, its lock files.
const FDS_PER_SESSION: u64 = 6;

/// Runs the daemon until SIGTERM or SIGINT. `foreground` (`-F`, demo)
/// stays attached to the terminal and writes no pid file.
pub fn run(config: &Config, foreground: bool) -> Result<(), DaemonError> {
    report_identity();
    raise_fd_limit(config.max_sessions);
    if !foreground {
        // Before binding, so a second start says "already running" rather
        // than "address in use".
        detach::check_pid_file(&config.pid_file)?;
    }
    let listeners = listeners::bind_all(&config.listen)?;
    let auth = crate::auth::build_authenticator(config).map_err(DaemonError::Auth)?;
    let maildrops = Arc::new(MboxOpener::new(config));
    let _pid_file = if foreground {
        None
    } else {
        Some(detach::detach(&config.pid_file)?)
    };
    // No thread may exist before this point (fork above; signal mask below).
    let signals = signals::Signals::block()?;
    let server = Arc::new(worker::Server::new(config, auth, maildrops));
    let stopping = Arc::clone(&server.stopping);
    let pool = pool::Pool::new(
        pool::PoolLimits {
            max_workers: config.max_sessions,
            queue_len: limits::accept_queue_len(config.max_sessions),
            stack_size: limits::WORKER_STACK,
        },
        move |job| server.serve(job),
    );
    let table = Arc::new(sessions::SessionTable::new(config.max_sessions_per_ip));
    let mut acceptor = acceptor::Acceptor::new(listeners, Some(signals))
        .map_err(|e| DaemonError::system("set up the event loop", e))?;
    log::info!(
        "ironpop {} ready: max_sessions={} max_sessions_per_ip={}",
        env!("CARGO_PKG_VERSION"),
        config.max_sessions,
        config.max_sessions_per_ip
    );
    let reason = acceptor
        .run(&pool, &table)
        .map_err(|e| DaemonError::system("wait for connections", e))?;
    // Closing the listeners first: new clients are refused by the kernel
    // rather than queued behind a daemon that is going away.
    drop(acceptor);
    log::info!("{reason}: shutting down, {} sessions open", table.active());
    stopping.store(true, Ordering::SeqCst);
    pool.shutdown();
    shut_down_sessions(&table);
    log::info!("stopped");
    Ok(())
}

/// Ends every session without UPDATE: idle ones at once, busy ones after
/// their current command or the grace period.
fn shut_down_sessions(table: &sessions::SessionTable) {
    table.close_all(Shutdown::Read);
    if table.wait_all_ended(SHUTDOWN_GRACE) {
        return;
    }
    log::warn!(
        "closing {} sessions still busy after {}s",
        table.active(),
        SHUTDOWN_GRACE.as_secs()
    );
    table.close_all(Shutdown::Both);
    if !table.wait_all_ended(SHUTDOWN_FINISH) {
        log::warn!("exiting with {} sessions unfinished", table.active());
    }
}

fn report_identity() {
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        log::warn!(
            "running as root without privilege separation: sessions run with full privileges"
        );
    } else {
        log::info!("running as uid {uid} without privilege separation");
    }
}

/// Lifts the soft descriptor limit towards what `max_sessions` needs (the
/// common default of 1024 would cap a 512-session daemon).
fn raise_fd_limit(max_sessions: usize) {
    let wanted = (max_sessions as u64)
        .saturating_mul(FDS_PER_SESSION)
        .saturating_add(64);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= wanted {
        return;
    }
    let target = wanted.min(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_err() || target < wanted {
        log::warn!(
            "max_sessions = {max_sessions} needs about {wanted} file descriptors, \
             the limit is {target}; raise it (ulimit -n, LimitNOFILE=) or lower max_sessions"
        );
    }
}
