//! The configuration file: `key = value` lines → raw settings → validated [`Config`].
//!
//! SKELETON: the parser is written in the config work package; the types
//! below are the contract the rest of the daemon uses.

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
#[derive(Debug, Clone)]
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
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    pub auth_timeout: Duration,
    pub idle_timeout: Duration,
    pub auth_fail_delay: Duration,
    pub lock_methods: Vec<LockMethod>,
    pub lock_timeout: Duration,
    pub proxy_protocol_from: Vec<IpAddr>,
    pub syslog_facility: String,
    pub log_level: log::LevelFilter,
}
