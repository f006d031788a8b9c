//! The `ironpop` binary: parses the command line and dispatches to a mode.
//!
//! Exit codes: 0 success (including a clean shutdown on SIGTERM/SIGINT),
//! 1 runtime failure (cannot listen, cannot detach, ...), 2 usage or
//! configuration error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ironpop::cli::{self, Mode};
use ironpop::config::{self, Config};
use ironpop::control::command;
use ironpop::daemon::{self, demo, preflight, RunMode};
use ironpop::logging;

const RUNTIME_FAILURE: u8 = 1;
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match cli::parse(&args) {
        Ok(options) => options,
        Err(e) => return fail(USAGE_ERROR, &e),
    };
    match options.mode {
        Mode::Help => {
            print!("{}", cli::usage());
            ExitCode::SUCCESS
        }
        Mode::Version => {
            println!("ironpop {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Mode::CheckConfig => check_config(&options.config),
        Mode::HashPassword => match ironpop::auth::hash_password_command() {
            Ok(hash) => {
                println!("{hash}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(RUNTIME_FAILURE, &e),
        },
        Mode::Daemon => match load(&options.config) {
            Ok(config) => {
                let mode = if options.foreground {
                    RunMode::Foreground
                } else {
                    RunMode::Detached
                };
                serve(&config, &options.config, mode)
            }
            Err(code) => code,
        },
        Mode::Inetd { tls } => inetd(&options.config, tls),
        Mode::Demo(dir) => run_demo(dir, options.listen),
        Mode::Who | Mode::Kick(_) | Mode::Stats { .. } => control(&options.mode, &options.config),
    }
}

/// `--who`, `--kick`, `--stats`: exit 1 when the daemon cannot be asked
/// or `--kick` matched nothing.
fn control(mode: &Mode, config_path: &Path) -> ExitCode {
    let config = match load(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result = match mode {
        Mode::Kick(target) => command::kick(&config, target),
        Mode::Stats { format } => command::stats(&config, *format),
        _ => command::who(&config),
    };
    match result {
        Ok(printed) => {
            print!("{}", printed.text);
            if printed.nothing_matched {
                ExitCode::from(RUNTIME_FAILURE)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(RUNTIME_FAILURE, &e),
    }
}

fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("ironpop: {error}");
    ExitCode::from(code)
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| fail(USAGE_ERROR, &e))
}

/// `-t`: the effective settings on stdout; the startup checks' findings
/// and the warnings on stderr. Exit 2 when the daemon would not start.
fn check_config(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    print!("{}", config.render());
    // What the checks log (a passwd file's bad or clear-text entries)
    // belongs on the terminal too.
    logging::init_stderr(log::LevelFilter::Warn);
    let findings = preflight::run(&config, preflight::Purpose::CheckCommand);
    for finding in &findings {
        let label = match finding.verdict {
            preflight::Verdict::Ok(_) => "checked",
            preflight::Verdict::Warning(_) => "warning",
            preflight::Verdict::Error(_) => "error",
        };
        eprintln!(
            "ironpop: {label}: {}",
            preflight::describe(&config, finding)
        );
    }
    for warning in config.warnings() {
        eprintln!("ironpop: warning: {warning}");
    }
    match ironpop::mailbox::startup::waiting(&config.state_dir) {
        Ok(spools) if spools.is_empty() => {}
        Ok(spools) => {
            eprintln!(
                "ironpop: {} interrupted update(s) wait for recovery (done at the next start, or at the owner's next login):",
                spools.len()
            );
            for spool in spools {
                eprintln!("ironpop:   {spool}");
            }
        }
        Err(e) => eprintln!(
            "ironpop: warning: cannot read state_dir {}: {e}",
            config.state_dir.display()
        ),
    }
    if findings.iter().any(preflight::Finding::is_error) {
        eprintln!("ironpop: {}: the daemon would not start", path.display());
        return ExitCode::from(USAGE_ERROR);
    }
    ExitCode::SUCCESS
}

fn serve(config: &Config, config_path: &Path, mode: RunMode) -> ExitCode {
    let foreground = mode != RunMode::Detached;
    if foreground {
        logging::init_stderr(config.log_level);
    } else {
        // Said now: once detached, standard error is /dev/null.
        if let Err(why) = logging::syslog_reachable(Path::new(logging::SYSLOG_SOCKET)) {
            eprintln!("ironpop: {}", logging::syslog_unreachable_warning(&why));
        }
        if let Err(e) = logging::init_syslog(&config.syslog_facility, config.log_level) {
            return fail(RUNTIME_FAILURE, &e);
        }
    }
    logging::install_panic_hook();
    match daemon::run(config, config_path, mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            // With -F the logger already wrote to stderr; before detaching
            // the terminal must see why the daemon did not start.
            if foreground {
                ExitCode::from(RUNTIME_FAILURE)
            } else {
                fail(RUNTIME_FAILURE, &e)
            }
        }
    }
}

/// `--demo`: the instructions are printed once the listeners are bound
/// (`daemon::run`), so they name the ports actually in use.
fn run_demo(dir: Option<PathBuf>, listen: Option<SocketAddr>) -> ExitCode {
    let dir = dir.unwrap_or_else(|| PathBuf::from(demo::DEFAULT_DIR));
    let (mut config, path) = match demo::prepare(&dir) {
        Ok(path) => match load(&path) {
            Ok(config) => (config, path),
            Err(code) => return code,
        },
        Err(e) => return fail(RUNTIME_FAILURE, &e),
    };
    if let Some(addr) = listen {
        demo::listen_on(&mut config, addr);
    }
    serve(&config, &path, RunMode::Demo)
}

/// `-i`: stderr is (usually) the client's socket, so it is pointed at
/// /dev/null first and every message, even a config error, goes to syslog.
fn inetd(config_path: &Path, tls: bool) -> ExitCode {
    daemon::inetd::silence_stderr();
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            let _ = logging::init_syslog("mail", log::LevelFilter::Info);
            log::error!("{e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    if logging::init_syslog(&config.syslog_facility, config.log_level).is_err() {
        return ExitCode::from(RUNTIME_FAILURE);
    }
    logging::install_panic_hook();
    match daemon::inetd::run(&config, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(RUNTIME_FAILURE)
        }
    }
}
