//! The standalone daemon: startup in DESIGN.md's order, the accept loop, and an orderly shutdown.
//!
//! Startup: checks (daemon/preflight.rs) → file-descriptor budget
//! (daemon/fd_budget.rs) → TLS keys → listeners (bound, or from systemd)
//! and the control socket → detach (unless `-F`) → privileged helpers and
//! privilege drop (when root; all before any thread exists) → block
//! signals → startup recovery of spools a crash left mid-update (through
//! the helper's startup channel, closed after it) → worker pool →
//! `READY=1` → accept loop. SIGHUP reloads the log level and the TLS
//! certificate and key; SIGTERM/SIGINT stop; the end of the last
//! privileged helper stops the daemon with an error (while one lives, it
//! serves on), and so does the last helper channel given up as hung
//! (`limits::HELPER_LATE_REPLY_WAIT`).

pub mod acceptor;
pub mod admission;
pub mod control_answer;
pub mod demo;
pub mod demo_tls;
pub mod detach;
pub mod error;
pub mod fd_budget;
pub mod helpers_watch;
pub mod inetd;
pub mod listeners;
pub mod log_limiter;
pub mod pool;
pub mod preflight;
pub mod sessions;
pub mod signals;
pub mod systemd;
pub mod worker;

use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::access::Access;
use crate::auth::helper_client::StartupChannel;
use crate::auth::throttle::{Policy, Throttle};
use crate::config::Config;
use crate::control::server::ControlServer;
use crate::limits::{self, SHUTDOWN_FINISH, SHUTDOWN_GRACE};
use crate::net::tls::{TlsFiles, TlsReloader};
use crate::net::tls_conn::TlsService;
use crate::privsep::fork as privsep;

pub use error::DaemonError;

/// How the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Detached, with a pid file.
    Detached,
    /// `-F`: attached to the terminal, no pid file.
    Foreground,
    /// `--demo`: in the foreground as whoever started it, even root: no
    /// helper, no privilege change.
    Demo,
}

/// Startup recovery (`mailbox/startup.rs`), with the privileged helper's
/// startup channel when there is one. The channel is consumed: it is
/// closed when this returns, before anything is served, and the helper
/// then never opens a spool without a credential again.
pub fn recover_before_service(config: &Config, startup: Option<StartupChannel>) {
    let open = startup
        .as_ref()
        .map(|channel| move |user: &str, spool: &Path| channel.open(user, spool));
    let open = open
        .as_ref()
        .map(|f| f as crate::mailbox::startup::OwnerOpen);
    crate::mailbox::startup::recover_for(config, open);
}

/// Runs the daemon until SIGTERM or SIGINT. `config_path` is re-read on
/// SIGHUP.
pub fn run(config: &Config, config_path: &Path, mode: RunMode) -> Result<(), DaemonError> {
    let foreground = mode != RunMode::Detached;
    startup_checks(config, mode)?;
    signals::block_early()?;
    fd_budget::apply(config.max_sessions).map_err(DaemonError::Descriptors)?;
    if !foreground {
        // Before binding, so a second start says "already running" rather
        // than "address in use".
        detach::check_pid_file(&config.pid_file)?;
    }
    // Connected now: the notify socket may not be reachable after the drop.
    let notifier = systemd::Notifier::from_env();
    // TLS keys are read here, before detaching and before any privilege
    // drop, so that root-only key files work and a bad pair stops startup.
    let tls = tls_service(config)?;
    let listeners = match systemd::listeners_from_env()? {
        Some(passed) => passed,
        None => {
            let mut listeners = listeners::bind_each(&config.listen, false)?;
            if tls.is_some() {
                listeners.extend(listeners::bind_each(&config.listen_tls, true)?);
            }
            listeners
        }
    };
    if listeners.is_empty() {
        return Err(DaemonError::NoListeners);
    }
    if tls.is_none() && listeners.iter().any(|l| l.tls) {
        return Err(DaemonError::Activation(format!(
            "a socket named {} is implicit TLS, but tls_cert is not set",
            systemd::TLS_NAME
        )));
    }
    if mode == RunMode::Demo {
        let bound = |tls: bool| listeners.iter().find(|l| l.tls == tls).map(|l| l.local);
        if let Some(plain) = bound(false) {
            print!("{}", demo::instructions(config, plain, bound(true)));
        }
    }
    // As root, before the drop: the socket's owner and group.
    let control = match crate::privsep::control_socket::bind(&config.control_socket) {
        Ok(listener) => Some(listener),
        Err(e) => {
            log::warn!("{e}; ironpop --who, --kick and --stats will not work");
            None
        }
    };
    let pid_file = if foreground {
        None
    } else {
        Some(detach::detach(&config.pid_file)?)
    };
    let control_bound = control.is_some();
    let mut listener_fds: Vec<_> = listeners.iter().map(|l| l.socket.as_raw_fd()).collect();
    listener_fds.extend(control.as_ref().map(|c| c.as_raw_fd()));
    // Root writes the pid file but the dropped daemon cannot remove it: a
    // root keeper does, once the daemon is gone. Held until exit.
    let _pid_file_keeper = match &pid_file {
        Some(_) if nix::unistd::geteuid().is_root() => Some(
            crate::privsep::pid_file_keeper::spawn(&config.pid_file, &listener_fds)
                .map_err(|e| DaemonError::system("start the pid file's keeper", e))?,
        ),
        _ => None,
    };
    let separation = if mode == RunMode::Demo {
        privsep::direct(config, "demo")?
    } else {
        privsep::setup(config, privsep::helper_count(), &listener_fds)?
    };
    let (access, startup) = Access::new(config, separation)?;
    // No thread may exist before this point (forks above; signal mask below).
    let signals = signals::Signals::block()?;
    // Before the first connection: no spool stays damaged by a crash, no
    // MDA waits for a dead ironpop's dotlock.
    recover_before_service(config, startup);
    let throttle = Arc::new(Throttle::new(Policy::new(config.auth_fail_delay)));
    let helpers = access.helper_pids().to_vec();
    let table = Arc::new(sessions::SessionTable::new(config.max_sessions_per_ip));
    let admission = Arc::new(admission::Admission::new(
        Arc::clone(&table),
        Some(Arc::clone(&throttle)),
        &config.proxy_protocol_from,
    ));
    let mut acceptor = acceptor::Acceptor::new(listeners, Some(signals), Arc::clone(&admission))
        .map_err(|e| DaemonError::system("set up the event loop", e))?;
    acceptor.watch_helpers(&helpers);
    let stopper = acceptor.stopper();
    access.when_no_helper_answers(move |why| stopper.no_helper_answers(why));
    let server = Arc::new(worker::Server::new(
        config,
        access,
        throttle,
        Arc::clone(&admission),
        tls.clone(),
    ));
    let stopping = Arc::clone(&server.stopping);
    let pool = pool::Pool::new(
        pool::PoolLimits {
            max_workers: config.max_sessions,
            queue_len: limits::accept_queue_len(config.max_sessions),
            stack_size: limits::WORKER_STACK,
        },
        move |job| server.serve(job),
    );
    if let Some(listener) = control {
        let answer = control_answer::answerer(Arc::clone(&table), Instant::now());
        acceptor
            .serve_control(ControlServer::new(listener, answer))
            .map_err(|e| DaemonError::system("set up the control socket", e))?;
    }
    let notifier = Arc::new(notifier);
    acceptor.on_reload(reloader(
        config_path.to_path_buf(),
        Arc::clone(&notifier),
        tls,
    ));
    log::info!(
        "ironpop {} ready: max_sessions={} max_sessions_per_ip={}",
        env!("CARGO_PKG_VERSION"),
        config.max_sessions,
        config.max_sessions_per_ip
    );
    notifier.notify("READY=1");
    let reason = acceptor
        .run(&pool)
        .map_err(|e| DaemonError::system("wait for connections", e))?;
    notifier.notify("STOPPING=1");
    // Closing the listeners first: new clients are refused by the kernel
    // rather than queued behind a daemon that is going away.
    drop(acceptor);
    log::info!("{reason}: shutting down, {} sessions open", table.active());
    stopping.store(true, Ordering::SeqCst);
    pool.shutdown();
    shut_down_sessions(&table);
    if control_bound {
        // Possible unless privileges were dropped (the directory is root's).
        let _ = std::fs::remove_file(&config.control_socket);
    }
    if let acceptor::StopReason::HelperDied(what) = reason {
        return Err(DaemonError::HelperDied(what));
    }
    log::info!("stopped");
    Ok(())
}

/// What `ironpop -t` checks, before anything is bound: a configuration
/// that cannot serve stops the daemon before it logs "listening on".
fn startup_checks(config: &Config, mode: RunMode) -> Result<(), DaemonError> {
    let purpose = if mode == RunMode::Demo || !nix::unistd::geteuid().is_root() {
        preflight::Purpose::UnprivilegedStart
    } else {
        preflight::Purpose::RootStart
    };
    let mut problems = Vec::new();
    for finding in preflight::run(config, purpose) {
        match finding.verdict {
            preflight::Verdict::Ok(_) => {}
            preflight::Verdict::Warning(_) => {
                log::warn!("{}", preflight::describe(config, &finding))
            }
            preflight::Verdict::Error(_) => problems.push(preflight::describe(config, &finding)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DaemonError::Preflight(problems))
    }
}

/// SIGHUP: re-reads the config for the log level and the TLS files for
/// new connections (sessions in progress keep theirs). A broken config or
/// key pair is reported and the running settings stay.
fn reloader(
    path: PathBuf,
    notifier: Arc<systemd::Notifier>,
    tls: Option<Arc<TlsService>>,
) -> impl FnMut() + Send + 'static {
    move || {
        notifier.reloading();
        match crate::config::load(&path) {
            Ok(config) => {
                crate::logging::set_level(config.log_level);
                log::info!(
                    "received SIGHUP: reloaded {} (log_level = {})",
                    path.display(),
                    config.log_level.to_string().to_lowercase()
                );
            }
            Err(e) => log::error!("received SIGHUP: keeping the running settings: {e}"),
        }
        if let Some(tls) = &tls {
            reload_tls(tls);
        }
        notifier.notify("READY=1");
    }
}

/// The TLS service when `tls_cert` is set; the files are read now.
pub(crate) fn tls_service(config: &Config) -> Result<Option<Arc<TlsService>>, DaemonError> {
    let Some(files) = TlsFiles::from_config(config) else {
        return Ok(None);
    };
    let reloader = TlsReloader::new(files).map_err(DaemonError::Tls)?;
    log::info!(
        "TLS certificate {} loaded{}",
        config
            .tls_cert
            .as_deref()
            .unwrap_or(Path::new(""))
            .display(),
        if config.tls_client_ca.is_some() {
            "; client certificates requested"
        } else {
            ""
        }
    );
    Ok(Some(Arc::new(TlsService::new(
        Arc::new(reloader),
        config.tls_cert_user,
        config.auth_timeout.min(limits::MAX_HANDSHAKE_TIME),
    ))))
}

/// SIGHUP: new connections get the reread certificate and key; sessions
/// in progress keep theirs. A broken file keeps the old pair in force.
fn reload_tls(tls: &TlsService) {
    let reloader = tls.reloader();
    match reloader.reload() {
        Ok(()) => log::info!(
            "received SIGHUP: reloaded TLS certificate {}",
            reloader.files().cert.display()
        ),
        Err(e) => log::error!("received SIGHUP: keeping the previous TLS certificate: {e}"),
    }
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
