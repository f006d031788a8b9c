//! Startup checks short of binding: what `ironpop -t` reports and what stops the daemon before it logs "listening on".
//!
//! Each check looks at one part of the configuration and says what it
//! found, naming the key, the file and the reason. [`CHECKS`] is the one
//! list: a new key with something to check adds its function there, and
//! both `-t` and the daemon run it.
//!
//! The checks read what the daemon reads at startup (the TLS files, the
//! account database, the directories); they bind nothing and change
//! nothing. They may run as root: `-t` reports what a root start would do.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

use crate::config::{Config, Passdb};
use crate::net::tls::TlsFiles;
use crate::privsep::accounts::AccountDb;
use crate::privsep::privileges;

/// Who the checks are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `ironpop -t`: everything a start as root would need, with counts.
    CheckCommand,
    /// The daemon started as root: it will drop to `user`/`group`.
    RootStart,
    /// The daemon started as an ordinary user (or the demo): no privilege
    /// change, so `user`/`group` are not used and the files must suit the
    /// caller.
    UnprivilegedStart,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fine; the text says what was found (shown by `-t`).
    Ok(String),
    /// The daemon starts, but the administrator should know.
    Warning(String),
    /// The daemon would not start (or could serve nobody).
    Error(String),
}

/// A verdict about one config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key: &'static str,
    pub verdict: Verdict,
}

impl Finding {
    fn ok(key: &'static str, text: String) -> Finding {
        Finding {
            key,
            verdict: Verdict::Ok(text),
        }
    }

    fn error(key: &'static str, text: String) -> Finding {
        Finding {
            key,
            verdict: Verdict::Error(text),
        }
    }

    /// An error finding for a file or directory that could not be used:
    /// `what` names it, the system's reason follows.
    fn io_error(key: &'static str, what: String, e: &std::io::Error) -> Finding {
        Finding::error(key, format!("{what}: {}", crate::config::io_reason(e)))
    }

    pub fn is_error(&self) -> bool {
        matches!(self.verdict, Verdict::Error(_))
    }
}

/// The identity the daemon's files must suit: the configured one after
/// the privilege drop, or the caller's.
struct Runner {
    uid: Uid,
    groups: Vec<Gid>,
    /// For messages: "user ironpop" or "uid 1000".
    name: String,
}

/// The context every check gets.
pub struct Context<'a> {
    pub config: &'a Config,
    pub purpose: Purpose,
    /// `None` when the configured user/group cannot be resolved (that
    /// check reports why); the file checks then skip the access test.
    runner: Option<Runner>,
}

/// One check over the configuration.
type Check = fn(&Context<'_>) -> Vec<Finding>;

/// Every startup check, in the order `-t` reports them.
const CHECKS: &[Check] = &[
    tls,
    identity,
    passdb,
    state_dir,
    pid_file,
    mailbox_dir,
    descriptors,
    syslog,
];

/// Runs every check.
pub fn run(config: &Config, purpose: Purpose) -> Vec<Finding> {
    let runner = match purpose {
        Purpose::UnprivilegedStart => Some(caller()),
        Purpose::CheckCommand | Purpose::RootStart => {
            privileges::resolve(&config.user, &config.group)
                .ok()
                .map(|id| Runner {
                    uid: id.uid,
                    groups: id.groups,
                    name: format!("user {}", id.user),
                })
        }
    };
    let cx = Context {
        config,
        purpose,
        runner,
    };
    CHECKS.iter().flat_map(|check| check(&cx)).collect()
}

/// One line per finding: `CONFIG: key: text`.
pub fn describe(config: &Config, finding: &Finding) -> String {
    let text = match &finding.verdict {
        Verdict::Ok(t) | Verdict::Warning(t) | Verdict::Error(t) => t,
    };
    format!("{}: {}: {text}", config.source.display(), finding.key)
}

fn caller() -> Runner {
    let uid = nix::unistd::geteuid();
    let mut groups = nix::unistd::getgroups().unwrap_or_default();
    groups.push(nix::unistd::getegid());
    Runner {
        uid,
        groups,
        name: format!("uid {uid} (not started as root)"),
    }
}

/// `tls_cert`, `tls_key`, `tls_client_ca`: readable, parseable, the key
/// belongs to the certificate, the CA bundle holds usable certificates.
fn tls(cx: &Context<'_>) -> Vec<Finding> {
    let Some(files) = TlsFiles::from_config(cx.config) else {
        return Vec::new();
    };
    match files.load() {
        Ok(_) => {
            let mut found = vec![Finding::ok(
                "tls_cert",
                format!(
                    "{} and {} load and belong together",
                    files.cert.display(),
                    files.key.display()
                ),
            )];
            if let Some(ca) = &files.client_ca {
                found.push(Finding::ok(
                    "tls_client_ca",
                    format!("{} loads", ca.display()),
                ));
            }
            found
        }
        Err(e) => vec![Finding::error(e.key(), e.to_string())],
    }
}

/// `user`, `group`: they exist and are not root (only used when started
/// as root).
fn identity(cx: &Context<'_>) -> Vec<Finding> {
    if cx.purpose == Purpose::UnprivilegedStart {
        return Vec::new();
    }
    let c = cx.config;
    // Each name on its own first, so the message blames the right key.
    match nix::unistd::User::from_name(&c.user) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return vec![Finding::error(
                "user",
                format!(
                    "user {:?} does not exist; create it (e.g. adduser --system {}) \
                     or name another account",
                    c.user, c.user
                ),
            )]
        }
        Err(e) => {
            return vec![Finding::error(
                "user",
                format!("cannot look up user {:?}: {e}", c.user),
            )]
        }
    }
    match nix::unistd::Group::from_name(&c.group) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return vec![Finding::error(
                "group",
                format!("group {:?} does not exist; name another group", c.group),
            )]
        }
        Err(e) => {
            return vec![Finding::error(
                "group",
                format!("cannot look up group {:?}: {e}", c.group),
            )]
        }
    }
    match privileges::resolve(&c.user, &c.group) {
        Ok(id) => vec![Finding::ok(
            "user",
            format!(
                "sessions run as user {}({}) group {}({}) groups {}",
                id.user,
                id.uid,
                id.group,
                id.gid,
                id.groups
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )],
        Err(e) => vec![Finding::error("user", e.to_string())],
    }
}

/// `passdb`: the account database can be read (and, for `-t`, how many
/// of its entries can log in).
fn passdb(cx: &Context<'_>) -> Vec<Finding> {
    let c = cx.config;
    let daemon_uid = cx.runner.as_ref().map_or(Uid::from_raw(0), |r| r.uid);
    let check_command = cx.purpose == Purpose::CheckCommand;
    let text = match &c.passdb {
        // The daemon parses the file when it sets up its helpers (and
        // logs its warnings then): before binding, opening it is enough.
        Passdb::PasswdFile(path) if !check_command => {
            return match std::fs::File::open(path) {
                Ok(_) => Vec::new(),
                Err(e) => vec![Finding::io_error(
                    "passdb",
                    format!("cannot read passwd file {}", path.display()),
                    &e,
                )],
            };
        }
        Passdb::PasswdFile(path) => {
            let db = crate::privsep::passwd_file::PasswdFile::new(path.clone(), c.mailbox.clone());
            match db.census() {
                Ok((0, _)) => return vec![warning(format!("{} has no entries", path.display()))],
                Ok((all, usable)) => {
                    format!("{}: {all} entries, {usable} usable", path.display())
                }
                Err(e) => return vec![Finding::error("passdb", e)],
            }
        }
        _ => {
            if let Err(e) = AccountDb::for_config(c, daemon_uid) {
                return vec![Finding::error("passdb", e)];
            }
            if !check_command {
                return Vec::new();
            }
            match &c.passdb {
                Passdb::System => match crate::privsep::system::census() {
                    Ok(0) => return vec![warning("/etc/shadow has no usable password".into())],
                    Ok(usable) => {
                        format!("passwd and shadow: {usable} accounts with a usable password")
                    }
                    Err(e) => return vec![Finding::error("passdb", e)],
                },
                _ => "PAM service ironpop (accounts are PAM's to count)".to_string(),
            }
        }
    };
    vec![Finding::ok("passdb", text)]
}

/// A passdb nobody can log in with.
fn warning(what: String) -> Finding {
    Finding {
        key: "passdb",
        verdict: Verdict::Warning(format!("{what}: nobody can log in")),
    }
}

/// `pid_file`: a daemon started without `-F` writes it when it detaches,
/// so its directory must exist. Only `-t` looks: at a start the daemon
/// checks it itself before binding (`detach::check_pid_file`), and with
/// `-F` the file is not used, so a start must not be refused for it.
fn pid_file(cx: &Context<'_>) -> Vec<Finding> {
    if cx.purpose != Purpose::CheckCommand {
        return Vec::new();
    }
    let path = &cx.config.pid_file;
    let finding = match super::detach::pid_file_directory(path) {
        Ok(()) => Finding::ok(
            "pid_file",
            format!(
                "{} (written when ironpop detaches; -F does not use it)",
                path.display()
            ),
        ),
        Err(e) => Finding::error(
            "pid_file",
            format!(
                "{}: {e}; a start without -F would fail (-F does not use it)",
                path.display()
            ),
        ),
    };
    vec![finding]
}

/// `state_dir`: a directory the sessions' identity may write (session
/// locks and update journals live there).
fn state_dir(cx: &Context<'_>) -> Vec<Finding> {
    let dir = &cx.config.state_dir;
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => {
            return vec![Finding::io_error(
                "state_dir",
                dir.display().to_string(),
                &e,
            )]
        }
    };
    if !meta.is_dir() {
        return vec![Finding::error(
            "state_dir",
            format!("{} is not a directory", dir.display()),
        )];
    }
    let Some(runner) = &cx.runner else {
        return Vec::new();
    };
    if !may_write(&meta, runner) {
        return vec![Finding::error(
            "state_dir",
            format!(
                "{} (owner uid {}, gid {}, mode {:o}) is not writable by {}, which keeps \
                 session locks and update journals there",
                dir.display(),
                meta.uid(),
                meta.gid(),
                meta.permissions().mode() & 0o7777,
                runner.name
            ),
        )];
    }
    vec![Finding::ok(
        "state_dir",
        format!("{} is writable by {}", dir.display(), runner.name),
    )]
}

/// Whether `runner` may create files in a directory with `meta`, by its
/// mode bits (the first class that applies decides, as in the kernel;
/// ACLs are not consulted).
fn may_write(meta: &std::fs::Metadata, runner: &Runner) -> bool {
    const WRITE_SEARCH: u32 = 0o3;
    let mode = meta.permissions().mode();
    if runner.uid.is_root() {
        return true;
    }
    let bits = if meta.uid() == runner.uid.as_raw() {
        mode >> 6
    } else if runner.groups.iter().any(|g| g.as_raw() == meta.gid()) {
        mode >> 3
    } else {
        mode
    };
    bits & WRITE_SEARCH == WRITE_SEARCH
}

/// `mailbox`: the directory the template's spools live in exists (the
/// part before the first `%`; `%h` templates depend on each account).
fn mailbox_dir(cx: &Context<'_>) -> Vec<Finding> {
    let template = &cx.config.mailbox;
    let Some(dir) = fixed_directory(template) else {
        return vec![Finding::ok(
            "mailbox",
            format!("{template}: the directory depends on each account"),
        )];
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => vec![Finding::ok(
            "mailbox",
            format!("spools live under {}", dir.display()),
        )],
        Ok(_) => vec![Finding::error(
            "mailbox",
            format!("{} (from {template}) is not a directory", dir.display()),
        )],
        Err(e) => vec![Finding::io_error(
            "mailbox",
            format!("{} (from {template})", dir.display()),
            &e,
        )],
    }
}

/// `syslog_facility`: for `-t`, whether the detached daemon's log lines
/// would reach a syslog daemon (`-F` and systemd log to standard error).
fn syslog(cx: &Context<'_>) -> Vec<Finding> {
    if cx.purpose != Purpose::CheckCommand {
        return Vec::new();
    }
    let socket = Path::new(crate::logging::SYSLOG_SOCKET);
    let verdict = match crate::logging::syslog_reachable(socket) {
        Ok(()) => Verdict::Ok(format!("syslog listens at {}", socket.display())),
        Err(why) => Verdict::Warning(format!(
            "syslog cannot be reached ({why}): the detached daemon's log lines would be \
             lost; under systemd (-F) they go to the journal"
        )),
    };
    vec![Finding {
        key: "syslog_facility",
        verdict,
    }]
}

/// The directory part of `template` before any `%` escape: `/var/mail`
/// for `/var/mail/%u`, `/srv` for `/srv/%u/mbox`; `None` when even the
/// first component depends on the account (`%h/mbox`).
fn fixed_directory(template: &str) -> Option<PathBuf> {
    let fixed = template.split('%').next().unwrap_or("");
    let dir = &fixed[..fixed.rfind('/')?];
    Some(PathBuf::from(if dir.is_empty() { "/" } else { dir }))
}

#[cfg(test)]
#[path = "preflight_tests.rs"]
mod tests;

/// `max_sessions` against this process's file descriptor limit (a service
/// gets its unit's `LimitNOFILE=`; the daemon raises its soft limit up to
/// the hard one itself).
fn descriptors(cx: &Context<'_>) -> Vec<Finding> {
    match crate::daemon::fd_budget::check(cx.config.max_sessions) {
        None => Vec::new(),
        Some(too_few @ crate::daemon::fd_budget::Fit::TooFew { .. }) => {
            vec![Finding::error("max_sessions", too_few.to_string())]
        }
        Some(fit) => vec![Finding::ok("max_sessions", fit.to_string())],
    }
}
