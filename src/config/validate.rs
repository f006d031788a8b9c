//! Raw entries → validated [`Config`]: value syntax, repeats, cross-key checks.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::keyword::Keyword;
use super::lex::{shorten, Entry};
use super::{
    default_listen_tls, facility_from_name, Config, ConfigError, Expire, LockMethod, Passdb,
};
use crate::limits::{
    self, MAX_FAIL_DELAY_SECS, MAX_LOCK_TIMEOUT_SECS, MAX_SESSIONS_LIMIT, MAX_TIMEOUT_SECS,
};

/// Keys that may be repeated (each line adds to the list).
const LIST_KEYS: &[&str] = &[
    "listen",
    "listen_tls",
    "lock_methods",
    "proxy_protocol_from",
];

/// Every key, in the order `render` prints them.
pub(super) const KEYS: &[&str] = &[
    "listen",
    "listen_tls",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_cert_user",
    "plaintext_auth",
    "user",
    "group",
    "passdb",
    "mailbox",
    "state_dir",
    "pid_file",
    "control_socket",
    "max_sessions",
    "max_sessions_per_ip",
    "auth_timeout",
    "idle_timeout",
    "auth_fail_delay",
    "lock_methods",
    "lock_timeout",
    "expire_days",
    "login_delay",
    "proxy_protocol_from",
    "syslog_facility",
    "log_level",
];

/// Turns raw entries into a validated configuration.
pub fn validate(entries: &[Entry<'_>], source: &Path) -> Result<Config, ConfigError> {
    let mut c = Config::defaults(source);
    // First line of every key seen, and lines that said `none`.
    let mut seen: Vec<(&str, usize)> = Vec::new();
    let mut nones: Vec<(&str, usize)> = Vec::new();
    for e in entries {
        let at = |msg: String| ConfigError::new(source, Some(e.line), msg);
        if !KEYS.contains(&e.key) {
            return Err(at(unknown_key(e.key)));
        }
        let first = seen.iter().find(|(k, _)| *k == e.key).map(|&(_, l)| l);
        let is_list = LIST_KEYS.contains(&e.key);
        if let Some(l) = first {
            if !is_list {
                return Err(at(format!(
                    "'{}' is already set on line {l} (it takes one value)",
                    e.key
                )));
            }
        } else {
            seen.push((e.key, e.line));
        }
        if is_list {
            let words: Vec<&str> = e.value.split_whitespace().collect();
            if words.contains(&"none") {
                if e.key == "lock_methods" {
                    return Err(at(
                        "lock_methods cannot be 'none': the MDA's locks must be honoured".into(),
                    ));
                }
                if words.len() > 1 || first.is_some() {
                    return Err(at(format!(
                        "'{} = none' cannot be combined with other {} values",
                        e.key, e.key
                    )));
                }
                nones.push((e.key, e.line));
            } else if let Some(&(_, l)) = nones.iter().find(|(k, _)| *k == e.key) {
                return Err(at(format!(
                    "'{} = none' on line {l} cannot be combined with other {} values",
                    e.key, e.key
                )));
            }
            if first.is_none() {
                clear_list(&mut c, e.key);
            }
            if words.first() != Some(&"none") {
                for w in words {
                    add_to_list(&mut c, e.key, w).map_err(at)?;
                }
            }
        } else {
            set_scalar(&mut c, e.key, e.value).map_err(at)?;
        }
    }
    let line_of = |key: &str| seen.iter().find(|(k, _)| *k == key).map(|&(_, l)| l);
    cross_check(&mut c, &line_of, source)?;
    Ok(c)
}

fn cross_check(
    c: &mut Config,
    line_of: &dyn Fn(&str) -> Option<usize>,
    source: &Path,
) -> Result<(), ConfigError> {
    let err = |key: &str, msg: &str| ConfigError::new(source, line_of(key), msg);
    match (&c.tls_cert, &c.tls_key) {
        (None, Some(_)) => {
            return Err(err("tls_key", "tls_key is set but tls_cert is not"));
        }
        (Some(_), None) => {
            return Err(err(
                "tls_cert",
                "tls_cert is set but tls_key is not (the certificate's private key file)",
            ));
        }
        _ => {}
    }
    if c.tls_client_ca.is_some() && c.tls_cert.is_none() {
        return Err(err(
            "tls_client_ca",
            "tls_client_ca needs TLS: set tls_cert and tls_key as well",
        ));
    }
    if line_of("listen_tls").is_none() {
        if c.tls_cert.is_some() {
            let defaults = default_listen_tls();
            if let Some(a) = defaults.iter().find(|a| c.listen.contains(a)) {
                return Err(err(
                    "listen",
                    &format!("{a} is in listen and in listen_tls's default; set listen_tls"),
                ));
            }
            c.listen_tls = defaults;
        }
    } else if !c.listen_tls.is_empty() && c.tls_cert.is_none() {
        return Err(err(
            "listen_tls",
            "listen_tls needs a certificate: set tls_cert and tls_key",
        ));
    }
    if c.listen.is_empty() && c.listen_tls.is_empty() {
        // Point at whichever `none` came last: it removed the last listener.
        let line = line_of("listen").max(line_of("listen_tls"));
        return Err(ConfigError::new(
            source,
            line,
            "no listener left: set listen or listen_tls to at least one address",
        ));
    }
    Ok(())
}

fn clear_list(c: &mut Config, key: &str) {
    match key {
        "listen" => c.listen.clear(),
        "listen_tls" => c.listen_tls.clear(),
        "lock_methods" => c.lock_methods.clear(),
        _ => c.proxy_protocol_from.clear(),
    }
}

fn add_to_list(c: &mut Config, key: &str, word: &str) -> Result<(), String> {
    match key {
        "listen" | "listen_tls" => {
            let addr = socket_addr(key, word)?;
            // Port 0 asks the kernel for a fresh port each time: no clash.
            if addr.port() != 0 && (c.listen.contains(&addr) || c.listen_tls.contains(&addr)) {
                return Err(format!("{addr} is listed twice in listen/listen_tls"));
            }
            if key == "listen" {
                c.listen.push(addr);
            } else {
                c.listen_tls.push(addr);
            }
        }
        "lock_methods" => {
            let m: LockMethod = keyword(key, word)?;
            if c.lock_methods.contains(&m) {
                return Err(format!("lock method '{word}' is listed twice"));
            }
            c.lock_methods.push(m);
        }
        _ => {
            let ip =
                IpAddr::from_str(word).map_err(|_| bad(key, "an IPv4 or IPv6 address", word))?;
            if !c.proxy_protocol_from.contains(&ip) {
                c.proxy_protocol_from.push(ip);
            }
        }
    }
    Ok(())
}

fn set_scalar(c: &mut Config, key: &str, v: &str) -> Result<(), String> {
    match key {
        "tls_cert" => c.tls_cert = Some(abs_path(key, v)?),
        "tls_key" => c.tls_key = Some(abs_path(key, v)?),
        "tls_client_ca" => c.tls_client_ca = Some(abs_path(key, v)?),
        "tls_cert_user" => c.tls_cert_user = keyword(key, v)?,
        "plaintext_auth" => c.plaintext_auth = keyword(key, v)?,
        "user" => c.user = account_name(key, v)?,
        "group" => c.group = account_name(key, v)?,
        "passdb" => c.passdb = passdb(v)?,
        "mailbox" => c.mailbox = mailbox_template(v)?,
        "state_dir" => c.state_dir = abs_path(key, v)?,
        "pid_file" => c.pid_file = abs_path(key, v)?,
        "control_socket" => c.control_socket = abs_path(key, v)?,
        "max_sessions" => c.max_sessions = count(key, v, MAX_SESSIONS_LIMIT)?,
        "max_sessions_per_ip" => c.max_sessions_per_ip = count(key, v, MAX_SESSIONS_LIMIT)?,
        "auth_timeout" => c.auth_timeout = seconds(key, v, 1, MAX_TIMEOUT_SECS)?,
        "idle_timeout" => c.idle_timeout = seconds(key, v, 1, MAX_TIMEOUT_SECS)?,
        "auth_fail_delay" => c.auth_fail_delay = seconds(key, v, 0, MAX_FAIL_DELAY_SECS)?,
        "lock_timeout" => c.lock_timeout = seconds(key, v, 0, MAX_LOCK_TIMEOUT_SECS)?,
        "expire_days" => c.expire_days = expire_days(key, v)?,
        "login_delay" => c.login_delay = seconds(key, v, 0, limits::MAX_LOGIN_DELAY_SECS)?,
        "syslog_facility" => {
            // The logger's own table, so -t accepts exactly what the daemon can open.
            if facility_from_name(v).is_none() {
                return Err(bad(
                    key,
                    "a syslog facility such as mail, daemon or local0",
                    v,
                ));
            }
            c.syslog_facility = v.to_owned();
        }
        "log_level" => c.log_level = keyword(key, v)?,
        // `validate` only passes keys from KEYS; list keys never get here.
        _ => return Err(unknown_key(key)),
    }
    Ok(())
}

/// One word of `T`'s list.
fn keyword<T: Keyword>(key: &str, v: &str) -> Result<T, String> {
    T::from_word(v).ok_or_else(|| bad(key, &T::choices(), v))
}

fn bad(key: &str, wanted: &str, got: &str) -> String {
    format!("'{key}' must be {wanted}, not '{}'", shorten(got))
}

fn socket_addr(key: &str, v: &str) -> Result<SocketAddr, String> {
    SocketAddr::from_str(v).map_err(|_| bad(key, "ADDRESS:PORT or [IPV6]:PORT", v))
}

fn abs_path(key: &str, v: &str) -> Result<PathBuf, String> {
    if !v.starts_with('/') {
        return Err(format!(
            "'{key}' must be an absolute path (the daemon runs in /), not '{}'",
            shorten(v)
        ));
    }
    Ok(PathBuf::from(v))
}

/// User and group names: what useradd accepts, or a numeric id.
fn account_name(key: &str, v: &str) -> Result<String, String> {
    let ok = v.len() <= 32
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(bad(key, "a user or group name", v));
    }
    Ok(v.to_owned())
}

fn passdb(v: &str) -> Result<Passdb, String> {
    match v {
        "system" => Ok(Passdb::System),
        "pam" => Ok(Passdb::Pam),
        _ => match v.strip_prefix("passwd-file:") {
            Some(path) => Ok(Passdb::PasswdFile(abs_path("passwd-file", path.trim())?)),
            None => Err(bad("passdb", "system, pam or passwd-file:PATH", v)),
        },
    }
}

/// `%u`, `%h` and `%%` only; absolute; names the user somehow.
fn mailbox_template(v: &str) -> Result<String, String> {
    let mut names_user = false;
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('u' | 'h') => names_user = true,
                Some('%') => {}
                Some(other) => {
                    return Err(format!(
                        "'mailbox' has an unknown escape '%{other}' (use %u for the user, %h for the home directory, %% for %)"
                    ))
                }
                None => return Err("'mailbox' ends with a lone '%'".into()),
            }
        }
    }
    if !(v.starts_with('/') || v.starts_with("%h")) {
        return Err(format!(
            "'mailbox' must be an absolute path or start with %h, not '{}'",
            shorten(v)
        ));
    }
    if !names_user {
        return Err("'mailbox' must contain %u or %h, or every user would share one spool".into());
    }
    Ok(v.to_owned())
}

fn count(key: &str, v: &str, max: u64) -> Result<usize, String> {
    let wanted = format!("a whole number from 1 to {max}");
    match v.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => usize::try_from(n).map_err(|_| bad(key, &wanted, v)),
        _ => Err(bad(key, &wanted, v)),
    }
}

fn expire_days(key: &str, v: &str) -> Result<Expire, String> {
    match v.parse::<u64>() {
        _ if v == "never" => Ok(Expire::Never),
        Ok(n) if n <= limits::MAX_EXPIRE_DAYS => Ok(Expire::Days(n)),
        _ => Err(bad(
            key,
            &format!(
                "never or a whole number of days from 0 to {}",
                limits::MAX_EXPIRE_DAYS
            ),
            v,
        )),
    }
}

fn seconds(key: &str, v: &str, min: u64, max: u64) -> Result<Duration, String> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(bad(
            key,
            &format!("a whole number of seconds from {min} to {max}"),
            v,
        )),
    }
}

/// "unknown key 'listn' (did you mean 'listen'?)"
fn unknown_key(key: &str) -> String {
    let best = KEYS
        .iter()
        .map(|k| (edit_distance(&key.to_ascii_lowercase(), k), *k))
        .min();
    match best {
        Some((d, k)) if d <= 2 || d <= k.len() / 3 => {
            format!("unknown key '{}' (did you mean '{k}'?)", shorten(key))
        }
        _ => format!("unknown key '{}'", shorten(key)),
    }
}

/// Levenshtein distance; keys are short, so the quadratic cost is nothing.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

#[cfg(test)]
pub(super) fn distance_for_tests(a: &str, b: &str) -> usize {
    edit_distance(a, b)
}
