//! The configuration file: `key = value` lines → raw settings → validated [`Config`].
//!
//! Syntax (documented for admins in ironpop.conf(5)):
//!
//! * one `key = value` per line; spaces around `=` and at both ends of the
//!   value are ignored; blank lines are ignored;
//! * `#` starts a comment at the start of a line or after whitespace, so
//!   `listen = 0.0.0.0:110  # plain` works; a `#` glued to other characters
//!   (`/srv/mail#1`) is part of the value, and no value can contain ` #`;
//! * list keys (`listen`, `listen_tls`, `lock_methods`,
//!   `proxy_protocol_from`) take one or more whitespace-separated values and
//!   may be repeated to add more; the first line replaces the default list;
//!   `none` sets the list empty (not for `lock_methods`);
//! * every other key may appear once; durations are whole seconds; paths
//!   are absolute (the daemon runs in `/`).
//!
//! Parsing has two steps: [`lex`] turns text into raw (key, value, line)
//! entries, [`validate`] turns entries into a [`Config`] and runs the
//! cross-key checks.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Default config file location.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ironpop/ironpop.conf";

/// When USER/PASS and plaintext SASL are allowed without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaintextAuth {
    /// Only over TLS (default).
    TlsOnly,
    /// Over TLS, or from a loopback address.
    Localhost,
    /// Always (not recommended).
    Always,
}

/// Which account database verifies passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passdb {
    /// passwd + shadow through the privileged helper.
    System,
    /// PAM service `ironpop`.
    Pam,
    /// Dovecot-style `user:password[:uid:gid:gecos:home:shell:extra]` file.
    PasswdFile(PathBuf),
}

/// Delivery-lock methods, taken in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMethod {
    Fcntl,
    Dotlock,
    Flock,
}

/// Certificate field that names the account for AUTH EXTERNAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertUserField {
    Cn,
    Email,
    SanEmail,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where this configuration came from (for messages).
    pub source: PathBuf,
    pub listen: Vec<SocketAddr>,
    pub listen_tls: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_cert_user: CertUserField,
    pub plaintext_auth: PlaintextAuth,
    pub user: String,
    pub group: String,
    pub passdb: Passdb,
    /// Spool path template: `%u` is the user name, `%h` the home directory.
    pub mailbox: String,
    pub state_dir: PathBuf,
    pub pid_file: PathBuf,
    /// The Unix socket `--who`, `--kick` and `--stats` ask.
    pub control_socket: PathBuf,
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    pub auth_timeout: Duration,
    pub idle_timeout: Duration,
    pub auth_fail_delay: Duration,
    pub lock_methods: Vec<LockMethod>,
    pub lock_timeout: Duration,
    /// RFC 2449 EXPIRE: retrieved messages are deleted this long after
    /// their first retrieval (default never).
    pub expire_days: Expire,
    /// RFC 2449 LOGIN-DELAY: minimum time between two logins to a spool.
    pub login_delay: Duration,
    pub proxy_protocol_from: Vec<IpAddr>,
    pub syslog_facility: String,
    pub log_level: log::LevelFilter,
}

mod expire;
mod facility;
mod keyword;
mod lex;
mod render;
#[cfg(test)]
mod tests;
mod validate;

pub use expire::Expire;
pub use facility::facility_from_name;
pub use lex::{lex, Entry};
pub use validate::validate;

use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::limits::{self, MAX_CONFIG_BYTES};

/// Default pid file of the detached daemon.
pub const DEFAULT_PID_FILE: &str = "/run/ironpop.pid";

/// Default control socket; systemd's `RuntimeDirectory=ironpop` makes its
/// directory.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ironpop/control";

/// What is wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    line: Option<usize>,
    message: String,
}

impl ConfigError {
    pub fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// The config file the error is in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The 1-based line, when the error belongs to one line.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let cannot =
        |e: std::io::Error| ConfigError::new(path, None, format!("cannot read: {}", io_reason(&e)));
    // Non-blocking, so that a named pipe given as the config cannot hang
    // `-t` waiting for a writer; only a regular file is read.
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let kind = file.metadata().map_err(cannot)?.file_type();
    if !kind.is_file() {
        return Err(ConfigError::new(
            path,
            None,
            format!(
                "not a regular file (it is {}); give the config file itself",
                file_kind(&kind)
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::new(
            path,
            None,
            format!("larger than {MAX_CONFIG_BYTES} bytes; is this really the config file?"),
        ));
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let line = e
                .as_bytes()
                .get(..valid)
                .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
                + 1;
            return Err(ConfigError::new(path, Some(line), "not valid UTF-8 text"));
        }
    };
    parse(&text, path)
}

/// Parses and validates config text; `source` names it in errors.
pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
    let entries = lex(text, source)?;
    validate(&entries, source)
}

/// What a non-regular file is, for messages.
fn file_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "something else"
    }
}

/// "No such file or directory", without std's " (os error 2)" suffix.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Listeners used when no `listen` line is given.
pub fn default_listen() -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], 110)),
        SocketAddr::from(([0u16; 8], 110)),
    ]
}

/// Implicit-TLS listeners used when a certificate is set and no
/// `listen_tls` line is given.
pub fn default_listen_tls() -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], 995)),
        SocketAddr::from(([0u16; 8], 995)),
    ]
}

impl Config {
    /// The configuration an empty config file gives.
    pub fn defaults(source: &Path) -> Config {
        Config {
            source: source.to_path_buf(),
            listen: default_listen(),
            listen_tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_cert_user: CertUserField::Cn,
            plaintext_auth: PlaintextAuth::TlsOnly,
            user: "ironpop".to_owned(),
            group: "mail".to_owned(),
            passdb: Passdb::System,
            mailbox: "/var/mail/%u".to_owned(),
            state_dir: PathBuf::from("/var/lib/ironpop"),
            pid_file: PathBuf::from(DEFAULT_PID_FILE),
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            max_sessions: limits::DEFAULT_MAX_SESSIONS,
            max_sessions_per_ip: limits::DEFAULT_MAX_SESSIONS_PER_IP,
            auth_timeout: limits::DEFAULT_AUTH_TIMEOUT,
            idle_timeout: limits::DEFAULT_IDLE_TIMEOUT,
            auth_fail_delay: limits::DEFAULT_AUTH_FAIL_DELAY,
            lock_methods: vec![LockMethod::Fcntl, LockMethod::Dotlock],
            lock_timeout: limits::DEFAULT_LOCK_TIMEOUT,
            expire_days: Expire::Never,
            login_delay: Duration::ZERO,
            proxy_protocol_from: Vec::new(),
            syslog_facility: "mail".to_owned(),
            log_level: log::LevelFilter::Info,
        }
    }

    /// True when a certificate is configured (STLS and `listen_tls` work).
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some()
    }
}
