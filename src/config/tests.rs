//! Tests of the config parser, validator, renderer and warnings.

use super::validate::{distance_for_tests, KEYS};
use super::*;
use std::io::Write as _;
use std::net::Ipv4Addr;

const SRC: &str = "/etc/ironpop/ironpop.conf";

fn ok(text: &str) -> Config {
    match parse(text, Path::new(SRC)) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn err(text: &str) -> ConfigError {
    match parse(text, Path::new(SRC)) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    }
}

/// Asserts the error is on `line` and its message contains `needle`.
fn err_at(text: &str, line: usize, needle: &str) {
    let e = err(text);
    assert_eq!(e.line(), Some(line), "{e}");
    assert!(e.message().contains(needle), "{e}");
    assert_eq!(e.to_string(), format!("{SRC}:{line}: {}", e.message()));
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const TLS: &str = "tls_cert = /etc/ssl/c.pem\ntls_key = /etc/ssl/k.pem\n";

#[test]
fn empty_file_gives_the_defaults() {
    let c = ok("");
    assert_eq!(c, Config::defaults(Path::new(SRC)));
    assert_eq!(c.listen, vec![sa("0.0.0.0:110"), sa("[::]:110")]);
    assert!(c.listen_tls.is_empty());
    assert_eq!(c.plaintext_auth, PlaintextAuth::TlsOnly);
    assert_eq!(c.user, "ironpop");
    assert_eq!(c.group, "mail");
    assert_eq!(c.passdb, Passdb::System);
    assert_eq!(c.mailbox, "/var/mail/%u");
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/ironpop"));
    assert_eq!(c.pid_file, PathBuf::from("/run/ironpop.pid"));
    assert_eq!(c.control_socket, PathBuf::from("/run/ironpop/control"));
    assert_eq!(c.max_sessions, 1024);
    assert_eq!(c.max_sessions_per_ip, 16);
    assert_eq!(c.auth_timeout, Duration::from_secs(60));
    assert_eq!(c.idle_timeout, Duration::from_secs(600));
    assert_eq!(c.auth_fail_delay, Duration::from_secs(2));
    assert_eq!(c.lock_methods, vec![LockMethod::Fcntl, LockMethod::Dotlock]);
    assert_eq!(c.lock_timeout, Duration::from_secs(30));
    assert!(c.proxy_protocol_from.is_empty());
    assert_eq!(c.syslog_facility, "mail");
    assert_eq!(c.log_level, log::LevelFilter::Info);
    assert_eq!(c.tls_cert_user, CertUserField::Cn);
    assert_eq!(c.source, PathBuf::from(SRC));
}

#[test]
fn comments_blank_lines_and_spacing() {
    let c = ok("# a comment\n\n   # indented comment\n\tmax_sessions=7   # trailing\nuser   =   pop  \r\nmailbox = /srv/mail#1/%u\n");
    assert_eq!(c.max_sessions, 7);
    assert_eq!(c.user, "pop");
    // A '#' glued to the value is part of it.
    assert_eq!(c.mailbox, "/srv/mail#1/%u");
}

#[test]
fn every_scalar_key_is_parsed() {
    let c = ok(&format!(
        "{TLS}tls_client_ca = /etc/ssl/ca.pem\n\
         tls_cert_user = san-email\n\
         plaintext_auth = localhost\n\
         user = vmail\n\
         group = 8\n\
         passdb = passwd-file:/etc/ironpop/users\n\
         mailbox = %h/mbox\n\
         state_dir = /var/tmp/ip\n\
         pid_file = /tmp/ip.pid\n\
         max_sessions = 3\n\
         max_sessions_per_ip = 2\n\
         auth_timeout = 5\n\
         idle_timeout = 900\n\
         auth_fail_delay = 0\n\
         lock_timeout = 0\n\
         syslog_facility = local3\n\
         log_level = debug\n"
    ));
    assert_eq!(c.tls_cert, Some(PathBuf::from("/etc/ssl/c.pem")));
    assert_eq!(c.tls_key, Some(PathBuf::from("/etc/ssl/k.pem")));
    assert_eq!(c.tls_client_ca, Some(PathBuf::from("/etc/ssl/ca.pem")));
    assert_eq!(c.tls_cert_user, CertUserField::SanEmail);
    assert_eq!(c.plaintext_auth, PlaintextAuth::Localhost);
    assert_eq!(c.user, "vmail");
    assert_eq!(c.group, "8");
    assert_eq!(c.passdb, Passdb::PasswdFile("/etc/ironpop/users".into()));
    assert_eq!(c.mailbox, "%h/mbox");
    assert_eq!(c.state_dir, PathBuf::from("/var/tmp/ip"));
    assert_eq!(c.pid_file, PathBuf::from("/tmp/ip.pid"));
    assert_eq!(c.max_sessions, 3);
    assert_eq!(c.max_sessions_per_ip, 2);
    assert_eq!(c.auth_timeout, Duration::from_secs(5));
    assert_eq!(c.idle_timeout, Duration::from_secs(900));
    assert_eq!(c.auth_fail_delay, Duration::ZERO);
    assert_eq!(c.lock_timeout, Duration::ZERO);
    assert_eq!(c.syslog_facility, "local3");
    assert_eq!(c.log_level, log::LevelFilter::Debug);
    // A certificate brings the implicit-TLS default listeners.
    assert_eq!(c.listen_tls, vec![sa("0.0.0.0:995"), sa("[::]:995")]);
}

#[test]
fn enum_values() {
    assert_eq!(ok("tls_cert_user = cn").tls_cert_user, CertUserField::Cn);
    assert_eq!(
        ok("tls_cert_user = email").tls_cert_user,
        CertUserField::Email
    );
    assert_eq!(
        ok("plaintext_auth = always").plaintext_auth,
        PlaintextAuth::Always
    );
    assert_eq!(
        ok("plaintext_auth = tls-only").plaintext_auth,
        PlaintextAuth::TlsOnly
    );
    assert_eq!(ok("passdb = pam").passdb, Passdb::Pam);
    assert_eq!(ok("passdb = system").passdb, Passdb::System);
    for (v, l) in [
        ("off", log::LevelFilter::Off),
        ("error", log::LevelFilter::Error),
        ("warn", log::LevelFilter::Warn),
        ("trace", log::LevelFilter::Trace),
    ] {
        assert_eq!(ok(&format!("log_level = {v}")).log_level, l);
    }
}

#[test]
fn explicit_listen_replaces_the_default_and_repeats_add() {
    let c = ok("listen = 127.0.0.1:0\nlisten = [::1]:1110 127.0.0.2:110\nlisten = 127.0.0.1:0");
    assert_eq!(
        c.listen,
        vec![
            sa("127.0.0.1:0"),
            sa("[::1]:1110"),
            sa("127.0.0.2:110"),
            sa("127.0.0.1:0")
        ]
    );
    assert!(c.listen_tls.is_empty());
}

#[test]
fn explicit_listen_tls_and_none() {
    let c = ok(&format!("{TLS}listen = none\nlisten_tls = 0.0.0.0:9995\n"));
    assert!(c.listen.is_empty());
    assert_eq!(c.listen_tls, vec![sa("0.0.0.0:9995")]);
    let c = ok(&format!("{TLS}listen_tls = none\n"));
    assert!(c.listen_tls.is_empty());
    assert_eq!(c.listen.len(), 2);
}

#[test]
fn lock_methods_and_proxies() {
    let c = ok("lock_methods = dotlock\nlock_methods = flock fcntl");
    assert_eq!(
        c.lock_methods,
        vec![LockMethod::Dotlock, LockMethod::Flock, LockMethod::Fcntl]
    );
    let c = ok("proxy_protocol_from = 10.0.0.1 ::1\nproxy_protocol_from = 10.0.0.2");
    assert_eq!(
        c.proxy_protocol_from,
        vec![
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            "::1".parse::<IpAddr>().unwrap(),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        ]
    );
    assert!(ok("proxy_protocol_from = none")
        .proxy_protocol_from
        .is_empty());
}

#[test]
fn unknown_keys_suggest_the_nearest() {
    err_at(
        "\n\nlistn = 0.0.0.0:110",
        3,
        "unknown key 'listn' (did you mean 'listen'?)",
    );
    assert_eq!(
        err("listn = 1").to_string(),
        "/etc/ironpop/ironpop.conf:1: unknown key 'listn' (did you mean 'listen'?)"
    );
    err_at("idle-timeout = 5", 1, "did you mean 'idle_timeout'?");
    err_at("Max_Sessions = 5", 1, "did you mean 'max_sessions'?");
    let e = err("frobnicate = yes");
    assert_eq!(e.message(), "unknown key 'frobnicate'");
}

#[test]
fn syntax_errors_name_the_line() {
    err_at(
        "user = a\njust some words\n",
        2,
        "expected 'key = value', found 'just some words'",
    );
    err_at("# c\n = value", 2, "missing key before '='");
    err_at("user =   # nothing", 1, "missing value for 'user'");
    err_at("user =", 1, "missing value for 'user'");
    err_at("max sessions = 4", 1, "not a key");
    err_at(
        "user = a\u{7}b",
        1,
        "control character \"\\u{7}\" is not allowed",
    );
    err_at(
        "user = a\u{0}b",
        1,
        "control character \"\\u{0}\" is not allowed",
    );
    let long = format!("mailbox = /{}", "a".repeat(crate::limits::MAX_CONFIG_LINE));
    err_at(&long, 1, "longer than");
}

#[test]
fn repeated_scalar_keys_are_errors() {
    err_at("user = a\n\nuser = b", 3, "'user' is already set on line 1");
    err_at(
        "idle_timeout = 600\nidle_timeout = 600",
        2,
        "already set on line 1",
    );
}

#[test]
fn bad_values_name_key_and_value() {
    err_at(
        "listen = localhost:110",
        1,
        "'listen' must be ADDRESS:PORT or [IPV6]:PORT, not 'localhost:110'",
    );
    err_at("listen = 0.0.0.0", 1, "ADDRESS:PORT");
    err_at("listen = ::1:110", 1, "ADDRESS:PORT");
    err_at("listen = 0.0.0.0:70000", 1, "ADDRESS:PORT");
    err_at("tls_cert_user = uid", 1, "cn, email or san-email");
    err_at("plaintext_auth = yes", 1, "tls-only, localhost or always");
    err_at("user = bad name", 1, "'user' must be a user or group name");
    err_at("group = -x", 1, "user or group name");
    err_at("passdb = ldap", 1, "system, pam or passwd-file:PATH");
    err_at("passdb = passwd-file:users", 1, "absolute path");
    err_at(
        "state_dir = var/lib",
        1,
        "'state_dir' must be an absolute path",
    );
    err_at("pid_file = x.pid", 1, "absolute path");
    err_at("control_socket = control", 1, "absolute path");
    err_at("tls_cert = c.pem", 1, "absolute path");
    err_at(
        "max_sessions = 0",
        1,
        "'max_sessions' must be a whole number from 1 to 100000, not '0'",
    );
    err_at("max_sessions = -3", 1, "whole number");
    err_at("max_sessions = 1e3", 1, "whole number");
    err_at("max_sessions_per_ip = 100001", 1, "whole number");
    err_at(
        "idle_timeout = 10m",
        1,
        "'idle_timeout' must be a whole number of seconds from 1 to 86400, not '10m'",
    );
    err_at("auth_timeout = 0", 1, "seconds from 1");
    err_at("auth_fail_delay = 61", 1, "seconds from 0 to 60");
    err_at("lock_timeout = 99999999999999999999999", 1, "seconds");
    err_at(
        "lock_methods = fcntl nfslock",
        1,
        "fcntl, dotlock or flock, not 'nfslock'",
    );
    err_at(
        "lock_methods = fcntl\nlock_methods = fcntl",
        2,
        "listed twice",
    );
    err_at("lock_methods = none", 1, "cannot be 'none'");
    err_at(
        "proxy_protocol_from = 10.0.0.0/8",
        1,
        "IPv4 or IPv6 address",
    );
    err_at("syslog_facility = mial", 1, "syslog facility");
    // Only what the syslog logger can open: nix has no authpriv.
    err_at("syslog_facility = authpriv", 1, "syslog facility");
    err_at(
        "log_level = loud",
        1,
        "off, error, warn, info, debug or trace",
    );
}

#[test]
fn mailbox_template_rules() {
    assert_eq!(
        ok("mailbox = /var/spool/mail/%u").mailbox,
        "/var/spool/mail/%u"
    );
    assert_eq!(ok("mailbox = /m/100%%/%u").mailbox, "/m/100%%/%u");
    err_at("mailbox = /var/mail/%n", 1, "unknown escape '%n'");
    err_at("mailbox = /var/mail/%", 1, "lone '%'");
    err_at("mailbox = mail/%u", 1, "absolute path or start with %h");
    err_at("mailbox = /var/mail/shared", 1, "must contain %u or %h");
}

#[test]
fn none_cannot_be_mixed() {
    err_at("listen = none 127.0.0.1:1", 1, "cannot be combined");
    err_at(
        "listen = 127.0.0.1:1\nlisten = none",
        2,
        "cannot be combined",
    );
    err_at(
        "listen = none\nlisten = 127.0.0.1:1",
        2,
        "'listen = none' on line 1 cannot be combined",
    );
}

#[test]
fn duplicate_addresses_are_errors_except_port_zero() {
    err_at(
        "listen = 127.0.0.1:110\nlisten = 127.0.0.1:110",
        2,
        "127.0.0.1:110 is listed twice",
    );
    err_at(
        &format!("{TLS}listen = 127.0.0.1:995\nlisten_tls = 127.0.0.1:995"),
        4,
        "listed twice",
    );
    ok("listen = 127.0.0.1:0 127.0.0.1:0");
}

#[test]
fn cross_key_checks() {
    err_at(
        "user = x\ntls_key = /k.pem",
        2,
        "tls_key is set but tls_cert is not",
    );
    err_at("tls_cert = /c.pem", 1, "tls_cert is set but tls_key is not");
    err_at(
        &format!("{TLS}listen_tls = none\nlisten = none"),
        4,
        "no listener left",
    );
    err_at("listen = none", 1, "no listener left");
    err_at(
        "listen_tls = 0.0.0.0:995",
        1,
        "listen_tls needs a certificate",
    );
    err_at("tls_client_ca = /ca.pem", 1, "tls_client_ca needs TLS");
    err_at(
        &format!("listen = 0.0.0.0:995\n{TLS}"),
        1,
        "listen_tls's default",
    );
    // listen_tls = none without a cert is fine as long as listen remains.
    assert!(ok("listen_tls = none").listen_tls.is_empty());
}

#[test]
fn error_without_line_has_file_prefix_only() {
    let e = ConfigError::new(Path::new("/x.conf"), None, "cannot read: gone");
    assert_eq!(e.to_string(), "/x.conf: cannot read: gone");
    assert_eq!(e.file(), Path::new("/x.conf"));
}

#[test]
fn render_round_trips_defaults_and_everything_set() {
    let defaults = Config::defaults(Path::new(SRC));
    assert_eq!(ok(&defaults.render()), defaults);
    let text = format!(
        "{TLS}tls_client_ca = /ca.pem\ntls_cert_user = email\nplaintext_auth = always\nuser = u\n\
         group = g\npassdb = passwd-file:/etc/p\nmailbox = %h/Mail/in%%box\nstate_dir = /s\npid_file = /p\n\
         max_sessions = 9\nmax_sessions_per_ip = 99\nauth_timeout = 1\nidle_timeout = 2\nauth_fail_delay = 0\n\
         lock_methods = flock\nlock_timeout = 7\nproxy_protocol_from = ::1 10.1.2.3\nsyslog_facility = daemon\n\
         log_level = trace\nlisten = none\nlisten_tls = [::1]:0 127.0.0.1:0\n"
    );
    let full = ok(&text);
    let rendered = full.render();
    assert_eq!(ok(&rendered), full, "{rendered}");
    // Every key appears exactly once.
    for k in KEYS {
        let n = rendered
            .lines()
            .filter(|l| l.starts_with(&format!("{k} =")) || l.starts_with(&format!("# {k} ")))
            .count();
        assert_eq!(n, 1, "{k} in\n{rendered}");
    }
    assert!(rendered.contains("listen = none\n"));
    assert!(rendered.contains("lock_methods = flock\n"));
    assert!(defaults.render().contains("# tls_cert is not set\n"));
    assert!(defaults
        .render()
        .contains("listen = 0.0.0.0:110 [::]:110\n"));
}

#[test]
fn warnings_for_risky_settings() {
    let has = |c: &Config, needle: &str| c.warnings().iter().any(|w| w.contains(needle));
    let base = "passdb = passwd-file:/p\nplaintext_auth = localhost\n";
    assert!(ok(base).warnings().is_empty(), "{:?}", ok(base).warnings());
    assert!(has(&ok(&format!("{base}idle_timeout = 30")), "RFC 1939"));
    assert!(!has(&ok(&format!("{base}idle_timeout = 600")), "RFC 1939"));
    assert!(has(&ok("plaintext_auth = always"), "unencrypted"));
    assert!(has(&ok("passdb = passwd-file:/p"), "no tls_cert"));
    assert!(!has(&ok("plaintext_auth = localhost"), "passdb"));
    assert!(has(&ok(&format!("{base}auth_fail_delay = 0")), "guess"));
    assert!(has(
        &ok(&format!("{base}max_sessions = 4")),
        "max_sessions_per_ip = 16"
    ));
    assert!(has(
        &ok(&format!("{base}lock_methods = dotlock")),
        "without fcntl"
    ));
    assert!(has(
        &ok(&format!("{base}tls_cert_user = email")),
        "tls_client_ca"
    ));
}

#[test]
fn load_reads_files_and_reports_problems() {
    let (dir, path) = crate::test_support::scratch_file(
        "ironpop.conf",
        "listen = 127.0.0.1:0\nmax_sessions = 4\n",
    );
    let c = load(&path).unwrap();
    assert_eq!(c.max_sessions, 4);
    assert_eq!(c.source, path);

    let missing = dir.path().join("nope.conf");
    let e = load(&missing).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: cannot read: No such file or directory",
            missing.display()
        )
    );
    assert_eq!(
        load(dir.path()).unwrap_err().to_string(),
        format!(
            "{}: not a regular file (it is a directory); give the config file itself",
            dir.path().display()
        )
    );
    // A named pipe is refused at once instead of waiting for a writer.
    let fifo = dir.path().join("fifo.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert!(load(&fifo)
        .unwrap_err()
        .to_string()
        .contains("not a regular file (it is a named pipe)"));

    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"user = a\nmailbox = /var/\xffmail/%u\n")
        .unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(e.message().contains("UTF-8"));

    std::fs::write(&path, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
    assert!(load(&path).unwrap_err().message().contains("larger than"));

    std::fs::write(&path, "# typo below\nlisten_tsl = 127.0.0.1:995\n").unwrap();
    assert_eq!(
        load(&path).unwrap_err().to_string(),
        format!(
            "{}:2: unknown key 'listen_tsl' (did you mean 'listen_tls'?)",
            path.display()
        )
    );
}

#[test]
fn edit_distance_is_levenshtein() {
    assert_eq!(distance_for_tests("listn", "listen"), 1);
    assert_eq!(distance_for_tests("kitten", "sitting"), 3);
    assert_eq!(distance_for_tests("", "abc"), 3);
    assert_eq!(distance_for_tests("same", "same"), 0);
}

#[test]
fn arbitrary_garbage_never_panics() {
    let samples = [
        "=",
        "==",
        "a=b=c",
        "#=",
        "listen = [",
        "listen = []:1",
        "mailbox = %",
        "\u{feff}user = x",
        "user = \u{2028}",
        "listen=\t",
        "\r\n\r\n",
        "passdb = passwd-file:",
        "é = ü",
    ];
    for s in samples {
        let _ = parse(s, Path::new(SRC));
    }
}
