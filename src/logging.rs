//! Logging: stderr via env_logger for `-F` and the demo, syslog for the detached daemon, and a panic hook that logs.

use std::ffi::CStr;

use log::{Level, LevelFilter, Log, Metadata, Record};
use nix::syslog::{self, Facility, LogFlags, Priority, Severity};

use crate::config::facility_from_name;

/// The syslog ident (program name in each line).
const IDENT: &CStr = c"ironpop";

/// Logs to stderr at `level`; `RUST_LOG`, when set, overrides it (with
/// env_logger's per-module syntax) for debugging.
pub fn init_stderr(level: LevelFilter) {
    let mut builder = env_logger::Builder::new();
    let from_env = std::env::var_os("RUST_LOG").is_some();
    // Without RUST_LOG the global maximum alone filters, so that a SIGHUP
    // can change the level (see `set_level`).
    builder.filter_level(if from_env { level } else { LevelFilter::Trace });
    builder.parse_env(env_logger::Env::default());
    // Already initialised (tests, demo after a failed start): keep it.
    if builder.try_init().is_ok() && !from_env {
        log::set_max_level(level);
    }
}

/// Logs to syslog with `facility` (a config name such as `mail` or
/// `local3`). The connection is opened now, before the process detaches
/// or changes identity.
pub fn init_syslog(facility: &str, level: LevelFilter) -> Result<(), String> {
    let facility = facility_from_name(facility)
        .ok_or_else(|| format!("unknown syslog facility '{facility}'"))?;
    syslog::openlog(
        Some(IDENT),
        LogFlags::LOG_PID | LogFlags::LOG_NDELAY,
        facility,
    )
    .map_err(|e| format!("cannot open syslog: {e}"))?;
    log::set_boxed_logger(Box::new(SyslogLogger { facility }))
        .map_err(|e| format!("cannot install the syslog logger: {e}"))?;
    log::set_max_level(level);
    Ok(())
}

/// Where syslog(3) sends its lines (glibc's `_PATH_LOG`).
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// Whether a syslog daemon listens at `path` (a datagram socket, as
/// journald and rsyslog provide, or a stream socket); `Err` says why not.
///
/// syslog(3) itself says nothing when it cannot connect: it drops the
/// line and tries to connect again at the next one. So the detached
/// daemon asks first, while standard error still reaches the terminal.
pub fn syslog_reachable(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::net::{UnixDatagram, UnixStream};
    let reason =
        |e: std::io::Error| format!("{}: {}", path.display(), crate::config::io_reason(&e));
    match UnixDatagram::unbound().and_then(|s| s.connect(path)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EPROTOTYPE) => {
            UnixStream::connect(path).map(drop).map_err(reason)
        }
        Err(e) => Err(reason(e)),
    }
}

/// What the detached daemon says on standard error, before it detaches,
/// when syslog cannot be reached (`why` from [`syslog_reachable`]).
pub fn syslog_unreachable_warning(why: &str) -> String {
    format!(
        "warning: syslog cannot be reached ({why}): log lines are lost until a syslog \
         daemon listens there (each line tries again); run with -F to log to standard error"
    )
}

/// Changes the level at run time (SIGHUP reload).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Sends panics to the log (in daemon mode stderr is /dev/null) with the
/// thread, message and location; the session's connection is closed by
/// unwinding and the daemon goes on.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::capture();
        match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => {
                log::error!("panic in thread {name}: {info}\n{backtrace}")
            }
            _ => log::error!("panic in thread {name}: {info}"),
        }
    }));
}

fn severity(level: Level) -> Severity {
    match level {
        Level::Error => Severity::LOG_ERR,
        Level::Warn => Severity::LOG_WARNING,
        Level::Info => Severity::LOG_INFO,
        Level::Debug | Level::Trace => Severity::LOG_DEBUG,
    }
}

struct SyslogLogger {
    facility: Facility,
}

impl Log for SyslogLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut message = record.args().to_string();
        // syslog(3) takes a C string: a NUL (from a client's bytes that
        // reached a log line) would otherwise drop the whole line.
        message.retain(|c| c != '\0');
        let priority = Priority::new(severity(record.level()), self.facility);
        let _ = syslog::syslog(priority, message.as_str());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_reachability_is_probed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let e = syslog_reachable(&path).unwrap_err();
        assert_eq!(e, format!("{}: No such file or directory", path.display()));
        let _dgram = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        syslog_reachable(&path).unwrap();
        let stream_path = dir.path().join("log-stream");
        let _stream = std::os::unix::net::UnixListener::bind(&stream_path).unwrap();
        syslog_reachable(&stream_path).unwrap();
    }

    #[test]
    fn severities_follow_levels() {
        assert_eq!(severity(Level::Error), Severity::LOG_ERR);
        assert_eq!(severity(Level::Warn), Severity::LOG_WARNING);
        assert_eq!(severity(Level::Trace), Severity::LOG_DEBUG);
    }
}
