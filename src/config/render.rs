//! [`Config`] → config text (`ironpop -t`) and advice about risky settings.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::keyword::Keyword;
use super::{CertUserField, Config, Expire, LockMethod, Passdb, PlaintextAuth};
use crate::limits;

fn addrs(list: &[SocketAddr]) -> Vec<String> {
    list.iter().map(SocketAddr::to_string).collect()
}

fn opt_path(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

impl Config {
    /// Every key with its effective value, defaults included, in config
    /// syntax: the output parses back to an equal `Config`. Unset optional
    /// keys are printed as comments; empty lists as `none`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: Option<String>| {
            let _ = match value {
                Some(v) => writeln!(out, "{key} = {v}"),
                None => writeln!(out, "# {key} is not set"),
            };
        };
        let list = |items: Vec<String>| -> Option<String> {
            Some(if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(" ")
            })
        };
        line("listen", list(addrs(&self.listen)));
        line("listen_tls", list(addrs(&self.listen_tls)));
        line("tls_cert", opt_path(&self.tls_cert));
        line("tls_key", opt_path(&self.tls_key));
        line("tls_client_ca", opt_path(&self.tls_client_ca));
        line("tls_cert_user", Some(self.tls_cert_user.word().into()));
        line("plaintext_auth", Some(self.plaintext_auth.word().into()));
        line("user", Some(self.user.clone()));
        line("group", Some(self.group.clone()));
        let passdb = match &self.passdb {
            Passdb::System => "system".to_owned(),
            Passdb::Pam => "pam".to_owned(),
            Passdb::PasswdFile(p) => format!("passwd-file:{}", p.display()),
        };
        line("passdb", Some(passdb));
        line("mailbox", Some(self.mailbox.clone()));
        line("state_dir", Some(self.state_dir.display().to_string()));
        line("pid_file", Some(self.pid_file.display().to_string()));
        line(
            "control_socket",
            Some(self.control_socket.display().to_string()),
        );
        line("max_sessions", Some(self.max_sessions.to_string()));
        line(
            "max_sessions_per_ip",
            Some(self.max_sessions_per_ip.to_string()),
        );
        line(
            "auth_timeout",
            Some(self.auth_timeout.as_secs().to_string()),
        );
        line(
            "idle_timeout",
            Some(self.idle_timeout.as_secs().to_string()),
        );
        line(
            "auth_fail_delay",
            Some(self.auth_fail_delay.as_secs().to_string()),
        );
        let methods = self
            .lock_methods
            .iter()
            .map(|m| m.word().to_owned())
            .collect();
        line("lock_methods", list(methods));
        line(
            "lock_timeout",
            Some(self.lock_timeout.as_secs().to_string()),
        );
        let expire = match self.expire_days {
            Expire::Never => "never".to_owned(),
            Expire::Days(n) => n.to_string(),
        };
        line("expire_days", Some(expire));
        line("login_delay", Some(self.login_delay.as_secs().to_string()));
        let proxies = self
            .proxy_protocol_from
            .iter()
            .map(|a| a.to_string())
            .collect();
        line("proxy_protocol_from", list(proxies));
        line("syslog_facility", Some(self.syslog_facility.clone()));
        line("log_level", Some(self.log_level.word().into()));
        out
    }

    /// Settings that are valid but probably not what the admin wants;
    /// `ironpop -t` prints them and the daemon logs them at startup.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.idle_timeout < limits::RFC1939_MIN_IDLE_TIMEOUT {
            w.push(format!(
                "idle_timeout = {} is below RFC 1939's 10-minute minimum: clients may be logged out while the user is reading",
                self.idle_timeout.as_secs()
            ));
        }
        match self.plaintext_auth {
            PlaintextAuth::Always => w.push(
                "plaintext_auth = always lets passwords cross the network unencrypted".into(),
            ),
            PlaintextAuth::TlsOnly if !self.tls_enabled() => w.push(
                "plaintext_auth = tls-only but no tls_cert is set: every USER/PASS login will be refused".into(),
            ),
            _ => {}
        }
        if self.auth_fail_delay.is_zero() {
            w.push("auth_fail_delay = 0 lets clients guess passwords at full speed".into());
        }
        if self.max_sessions_per_ip > self.max_sessions {
            w.push(format!(
                "max_sessions_per_ip = {} is larger than max_sessions = {} and has no effect",
                self.max_sessions_per_ip, self.max_sessions
            ));
        }
        if self.tls_cert_user != CertUserField::Cn && self.tls_client_ca.is_none() {
            w.push("tls_cert_user is set but tls_client_ca is not, so no client certificates are requested".into());
        }
        if !self.lock_methods.contains(&LockMethod::Fcntl) {
            w.push(
                "lock_methods without fcntl: Debian's MDAs lock spools with fcntl and dotlock"
                    .into(),
            );
        }
        w
    }
}
