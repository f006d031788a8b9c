//! `ironpop -t` runs every startup check short of binding: each broken setting exits 2 naming the key and the file, and the daemon stops before "listening on".

use crate::harness::*;
use crate::tls::Pki;
use std::path::{Path, PathBuf};

/// Config lines that pass every check in `dir`: a passwd file, a spool
/// directory, a state directory, and an account that exists (root drops
/// to nobody, like the harness).
pub(crate) fn usable_lines(dir: &Path) -> String {
    for sub in ["mail", "state"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("passwd"), "alice:{PLAIN}x\nbob:*\n").unwrap();
    give_to_nobody(dir);
    let (user, group) = if nix::unistd::getuid().is_root() {
        ("nobody".to_string(), "nogroup".to_string())
    } else {
        let u = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap();
        let g = nix::unistd::Group::from_gid(nix::unistd::getgid())
            .unwrap()
            .unwrap();
        (u.name, g.name)
    };
    format!(
        "listen = 127.0.0.1:0\nplaintext_auth = localhost\nuser = {user}\ngroup = {group}\n\
         passdb = passwd-file:{d}/passwd\nmailbox = {d}/mail/%u\nstate_dir = {d}/state\n\
         pid_file = {d}/ironpop.pid\ncontrol_socket = {d}/control\n",
        d = dir.display()
    )
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let conf = dir.join("ironpop.conf");
    std::fs::write(&conf, text).unwrap();
    conf
}

fn check(conf: &Path) -> Output {
    ironpop(&["-t", "-f", conf.to_str().unwrap()])
}

/// `-t` exits 2 with an error line naming the config, `key` and `file`.
fn refused(conf: &Path, key: &str, file: &str) -> String {
    let out = check(conf);
    let text = out.all_text();
    assert_eq!(out.status.code(), Some(2), "-t accepted it:\n{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("ironpop: error: "))
        .unwrap_or_else(|| panic!("no error line:\n{text}"));
    assert!(
        line.contains(&format!("{}: {key}: ", conf.display())) && line.contains(file),
        "the error does not name {key} and {file}:\n{text}"
    );
    line.to_string()
}

#[test]
fn a_usable_config_passes_with_the_count_of_usable_entries() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(dir.path(), &usable_lines(dir.path()));
    let out = check(&conf);
    let text = out.all_text();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "ironpop: checked: {}: passdb: {}/passwd: 2 entries, 1 usable",
            conf.display(),
            dir.path().display()
        )),
        "{text}"
    );
    assert!(text.contains(": state_dir: "), "{text}");
    assert!(!text.contains("error"), "{text}");
}

#[test]
fn missing_certificate_and_swapped_pair_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = usable_lines(d) + "listen_tls = 127.0.0.1:0\n";
    let missing = write(
        d,
        &format!(
            "{base}tls_cert = {d}/none.crt\ntls_key = {d}/none.key\n",
            d = d.display()
        ),
    );
    let line = refused(&missing, "tls_cert", "none.crt");
    assert!(line.contains("No such file or directory"), "{line}");

    let pki = Pki::new(d, "check");
    let (crt, key) = pki.leaf("server", "localhost", false, false);
    let swapped = write(
        d,
        &format!(
            "{base}tls_cert = {}\ntls_key = {}\n",
            key.display(),
            crt.display()
        ),
    );
    refused(&swapped, "tls_cert", &key.display().to_string());

    let (other_crt, _) = pki.leaf("other", "localhost", false, false);
    let mismatched = write(
        d,
        &format!(
            "{base}tls_cert = {}\ntls_key = {}\n",
            other_crt.display(),
            key.display()
        ),
    );
    let line = refused(&mismatched, "tls_key", &key.display().to_string());
    assert!(line.contains("does not belong"), "{line}");

    let good = write(
        d,
        &format!(
            "{base}tls_cert = {}\ntls_key = {}\ntls_client_ca = {d}/no-ca.pem\n",
            crt.display(),
            key.display(),
            d = d.display()
        ),
    );
    refused(&good, "tls_client_ca", "no-ca.pem");
}

#[test]
fn unknown_user_and_group_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = usable_lines(dir.path());
    let conf = write(
        dir.path(),
        &(base.replace("\nuser = ", "\n# user = ") + "user = nosuchuser\n"),
    );
    refused(&conf, "user", "nosuchuser");
    let conf = write(
        dir.path(),
        &(base.replace("\ngroup = ", "\n# group = ") + "group = nosuchgroup\n"),
    );
    refused(&conf, "group", "nosuchgroup");
}

#[test]
fn missing_passwd_file_state_dir_and_spool_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = usable_lines(d);
    let conf = write(d, &base.replace("/passwd\n", "/no-passwd\n"));
    refused(&conf, "passdb", "no-passwd");
    let conf = write(d, &base.replace("/state\n", "/no-state\n"));
    refused(&conf, "state_dir", "no-state");
    let conf = write(d, &base.replace("/mail/%u", "/no-mail/%u"));
    refused(&conf, "mailbox", "no-mail");
}

#[test]
fn pam_without_the_pam_feature_is_refused() {
    if cfg!(feature = "pam") {
        return; // This build has PAM: tests/it/pam.rs covers passdb = pam.
    }
    let dir = tempfile::tempdir().unwrap();
    let base = usable_lines(dir.path());
    let conf = write(
        dir.path(),
        &base.replace("passdb = passwd-file:", "passdb = pam\n# "),
    );
    let line = refused(&conf, "passdb", "");
    assert!(line.contains("--features pam"), "{line}");
}

#[test]
fn a_named_pipe_as_the_config_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // `ironpop` runs under a 30 s timeout: a hang fails here.
    let out = check(&fifo);
    assert_eq!(out.status.code(), Some(2), "{}", out.all_text());
    assert!(
        out.all_text().contains(&format!(
            "{}: not a regular file (it is a named pipe)",
            fifo.display()
        )),
        "{}",
        out.all_text()
    );
}

#[test]
fn a_control_character_is_printed_once_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(dir.path(), "user = a\u{0}b\n");
    let out = check(&conf);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.all_text().contains(&format!(
            "{}:1: control character \"\\u{{0}}\" is not allowed",
            conf.display()
        )),
        "{}",
        out.all_text()
    );
}

#[test]
fn the_daemon_stops_before_listening_on_what_minus_t_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = write(
        d,
        &(usable_lines(d).replace("/state\n", "/no-state\n")
            + &format!(
                "listen_tls = 127.0.0.1:0\ntls_cert = {d}/none.crt\ntls_key = {d}/none.key\n",
                d = d.display()
            )),
    );
    let out = ironpop(&["-F", "-f", conf.to_str().unwrap()]);
    let text = out.all_text();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("listening on"), "{text}");
    assert!(text.contains("not starting: "), "{text}");
    assert!(
        text.contains(": tls_cert: ") && text.contains("none.crt"),
        "{text}"
    );
    assert!(
        text.contains(": state_dir: ") && text.contains("no-state"),
        "{text}"
    );
}

#[test]
fn the_detached_daemon_warns_about_syslog_and_removes_its_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Like /run: the pid file's directory is writable only by whoever
    // starts the daemon (root drops privileges afterwards).
    let run_dir = d.join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let pid_file = run_dir.join("ironpop.pid");
    let conf = write(
        d,
        &usable_lines(d).replace(
            &format!("pid_file = {}/ironpop.pid", d.display()),
            &format!("pid_file = {}", pid_file.display()),
        ),
    );
    let out = ironpop(&["-f", conf.to_str().unwrap()]);
    let text = out.all_text();
    assert!(out.status.success(), "{text}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file written")
        .trim()
        .parse()
        .unwrap();
    let syslog_missing = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log"))
        .is_err();
    assert_eq!(
        text.contains("warning: syslog cannot be reached (/dev/log: "),
        syslog_missing,
        "the terminal must hear of an unreachable syslog, and only then:\n{text}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pid_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} still exists 30 s after SIGTERM",
            pid_file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Gone, or a zombie waiting for whoever inherited it to reap it.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state.rsplit(')').next().unwrap_or("").trim_start();
    assert!(
        state.is_empty() || state.starts_with('Z'),
        "the daemon still runs: {state}"
    );
}

#[test]
fn a_pid_file_in_a_missing_directory_is_refused_by_minus_t_and_a_detached_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conf = write(
        d,
        &usable_lines(d).replace("/ironpop.pid\n", "/no-run/ironpop.pid\n"),
    );
    let line = refused(&conf, "pid_file", "no-run");
    assert!(line.contains("-F does not use it"), "{line}");
    // Without -F the daemon says so before it binds; with -F the file is
    // not used and nothing is refused for it.
    let out = ironpop(&["-f", conf.to_str().unwrap()]);
    let text = out.all_text();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("listening on"), "{text}");
    assert!(
        text.contains("cannot write pid_file") && text.contains("no-run"),
        "{text}"
    );
    let fine = write(d, &usable_lines(d));
    let out = check(&fine);
    assert_eq!(out.status.code(), Some(0), "{}", out.all_text());
    assert!(
        out.all_text().contains(": pid_file: "),
        "{}",
        out.all_text()
    );
}
