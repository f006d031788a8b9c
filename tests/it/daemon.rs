//! Unix daemon integration, run as root: privilege drop, system accounts, helper death, inetd mode, socket activation, sd_notify, signals, packaging.
//!
//! Every test needs root (useradd, the privilege drop); as another user
//! they say so and pass, as the other integration tests do for missing
//! tools. CI runs as root. The fixtures live in `system.rs`.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::system::*;

#[test]
fn system_user_logs_in_to_a_dropped_daemon() {
    require_root!();
    let user = SystemUser::create("c0rrect horse");
    let s = setup(&user, "");
    let server = Server::start(&s.conf);
    let addr = server.addr();
    server.wait_log("ready:");
    server.wait_log("privileges dropped to user=nobody(65534) group=nogroup(65534)");
    // The serving process: every uid and gid is nobody's, no other group.
    assert_eq!(
        ids(server.pid()),
        (
            "65534 65534 65534 65534".into(),
            "65534 65534 65534 65534".into(),
            "65534".into()
        )
    );
    let helpers = server.helpers();
    assert!(!helpers.is_empty(), "helper processes exist");
    for h in &helpers {
        assert_eq!(ids(*h).0, "0 0 0 0", "helpers stay root");
        let comm = std::fs::read_to_string(format!("/proc/{h}/comm")).unwrap();
        assert_eq!(comm.trim(), "ironpop-helper");
    }

    let mut c = tcp(&addr);
    assert!(c.cmd(&format!("USER {}", user.name)).starts_with("+OK"));
    assert!(c.cmd("PASS wrong horse").starts_with("-ERR [AUTH]"));
    assert!(c.cmd(&format!("USER {}", user.name)).starts_with("+OK"));
    let ok = c.cmd("PASS c0rrect horse");
    assert!(ok.starts_with("+OK maildrop has 1 messages"), "{ok}");
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    assert_eq!(c.multi(), vec!["Subject: one\r\n", "\r\n", "hello\r\n"]);
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let mut c = tcp(&addr);
    c.cmd("USER no-such-user-here");
    assert!(c.cmd("PASS x").starts_with("-ERR [AUTH]"));

    let n = &user.name;
    server.wait_log(&format!("auth failed: user={n} method=USER rip=127.0.0.1"));
    server.wait_log(&format!(
        "login: user={n} method=USER rip=127.0.0.1 lip=127.0.0.1 tls=no"
    ));
    server.wait_log(&format!(
        "logout: user={n} rip=127.0.0.1 retr=1/23 top=0 dele=0/0 kept=1/23 reason=quit"
    ));
    assert!(!server.log().contains("c0rrect"), "no password in the log");
}

#[test]
fn locked_account_is_refused() {
    require_root!();
    let user = SystemUser::create("pw");
    assert!(Command::new("usermod")
        .args(["-L", &user.name])
        .status()
        .unwrap()
        .success());
    let s = setup(&user, "");
    let server = Server::start(&s.conf);
    let mut c = tcp(&server.addr());
    c.cmd(&format!("USER {}", user.name));
    assert!(c.cmd("PASS pw").starts_with("-ERR [AUTH]"));
    server.wait_log("is locked");
}

#[test]
fn spool_owned_by_another_user_is_refused() {
    require_root!();
    let user = SystemUser::create("pw");
    let s = setup(&user, "");
    // Someone else's file at the account's spool path (a misconfigured
    // template, or a planted file): serving or compacting it would hand
    // that person's mail to this account.
    let spool = s.dir.path().join("mail").join(&user.name);
    let before = std::fs::read(&spool).unwrap();
    nix::unistd::chown(&spool, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let server = Server::start(&s.conf);
    let mut c = tcp(&server.addr());
    c.cmd(&format!("USER {}", user.name));
    let reply = c.cmd("PASS pw");
    assert!(reply.starts_with("-ERR [SYS/PERM]"), "{reply}");
    assert!(
        !reply.contains("/mail/"),
        "no server path in the reply: {reply}"
    );
    server.wait_log("belongs to uid 65534");
    assert_eq!(std::fs::read(&spool).unwrap(), before, "spool untouched");
}

#[test]
fn killed_helper_lets_no_login_through_and_stops_the_daemon() {
    require_root!();
    let user = SystemUser::create("right");
    let s = setup(&user, "");
    let mut server = Server::start(&s.conf);
    let addr = server.addr();
    server.wait_log("ready:");
    let mut c = tcp(&addr);
    c.cmd(&format!("USER {}", user.name));
    for h in server.helpers() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(h),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let reply = c.cmd("PASS wrong");
    assert!(
        !reply.starts_with("+OK"),
        "wrong password after helper death: {reply:?}"
    );
    let status = server.wait_exit();
    assert!(!status.success(), "exits with an error: {status:?}");
    server.wait_log("the last privileged helper (pid");
    server.wait_log("was killed by SIGKILL");
}

#[test]
fn sighup_reloads_and_sigterm_stops_cleanly_with_sd_notify() {
    require_root!();
    let user = SystemUser::create("pw");
    let s = setup(&user, "");
    let notify_path = s.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    // The daemon writes to it after dropping to nobody.
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("-F")
        .arg("-f")
        .arg(&s.conf)
        .env("NOTIFY_SOCKET", &notify_path);
    let mut server = Server::spawn(cmd);
    let mut buf = [0u8; 256];
    let recv = |buf: &mut [u8]| {
        let n = notify.recv(buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(&mut buf), "READY=1");
    // READY comes after the drop.
    assert_eq!(ids(server.pid()).0, "65534 65534 65534 65534");

    std::fs::write(
        &s.conf,
        std::fs::read_to_string(&s.conf).unwrap() + "log_level = debug\n",
    )
    .unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(recv(&mut buf).starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(recv(&mut buf), "READY=1");
    server.wait_log("received SIGHUP: reloaded");
    // The new level is in effect: a connection is now logged at debug.
    let _c = tcp(&server.addr());
    server.wait_log("connection from 127.0.0.1");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(recv(&mut buf), "STOPPING=1");
    assert!(server.wait_exit().success());
    server.wait_log("received SIGTERM: shutting down");
}

#[test]
fn inetd_mode_over_a_socketpair() {
    require_root!();
    let user = SystemUser::create("inetd pw");
    let s = setup(&user, "");
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(WAIT)).unwrap();
    let mut child = Command::new(BIN)
        .arg("-i")
        .arg("-f")
        .arg(&s.conf)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(
            theirs.try_clone().unwrap(),
        )))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = Client::new(ours);
    c.cmd(&format!("USER {}", user.name));
    let ok = c.cmd("PASS inetd pw");
    assert!(ok.starts_with("+OK maildrop has 1 messages"), "{ok}");
    // The session runs dropped: the process is nobody's now.
    assert_eq!(ids(child.id() as i32).0, "65534 65534 65534 65534");
    let stat = c.cmd("STAT");
    assert!(stat.starts_with("+OK 1 23"), "{stat}");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert_eq!(c.line(), "", "closed after QUIT");
    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(stderr, "", "inetd mode never writes stderr");
}

#[test]
fn inetd_mode_on_a_tcp_connection_like_accept_yes() {
    require_root!();
    let user = SystemUser::create("tcp pw");
    let s = setup(&user, "");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut child = Command::new(BIN)
        .arg("-i")
        .arg("-f")
        .arg(&s.conf)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(
            conn.try_clone().unwrap(),
        )))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(conn)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = Client::new(client);
    c.cmd(&format!("USER {}", user.name));
    assert!(c
        .cmd("PASS tcp pw")
        .starts_with("+OK maildrop has 1 messages"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(child.wait().unwrap().success());
}

#[test]
fn inetd_tls_without_a_certificate_fails_quietly() {
    require_root!();
    let user = SystemUser::create("pw");
    let s = setup(&user, "");
    let out = Command::new(BIN)
        .args(["-i", "--tls", "-f"])
        .arg(&s.conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}

/// A free loopback port no parallel test's port-0 bind can take.
fn free_port() -> u16 {
    crate::ports::unassigned_port(&[std::net::Ipv4Addr::LOCALHOST], &[])
}

#[test]
fn socket_activation_with_systemd_socket_activate() {
    require_root!();
    if !tool("systemd-socket-activate") {
        return;
    }
    let user = SystemUser::create("sa pw");
    let s = setup(&user, "");
    let port = free_port();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--fdname=pop3")
        .arg(BIN)
        .arg("-F")
        .arg("-f")
        .arg(&s.conf);
    let server = Server::spawn(cmd);
    server.wait_log("Listening on");
    // systemd-socket-activate starts the daemon at the first connection.
    let mut c = tcp(&format!("127.0.0.1:{port}"));
    server.wait_log(&format!(
        "listening on 127.0.0.1:{port} (pop3) (socket from systemd)"
    ));
    c.cmd(&format!("USER {}", user.name));
    assert!(c.cmd("PASS sa pw").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn socket_activation_through_listen_fds_from_a_harness() {
    require_root!();
    use std::os::unix::process::CommandExt;
    let user = SystemUser::create("fd pw");
    let s = setup(&user, "");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    // LISTEN_PID must be the daemon's pid: a shell sets it to its own
    // ($$), moves the listener to descriptor 3 and execs the daemon in
    // its place.
    let script = if fd == 3 {
        "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" \"$@\"".to_string()
    } else {
        format!("export LISTEN_PID=$$ LISTEN_FDS=1; exec 3<&{fd} {fd}<&-; exec \"$0\" \"$@\"")
    };
    // bash, not sh: dash refuses descriptors above 9 ("Bad fd number"),
    // and a test binary running many tests at once holds more than that.
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .arg(BIN)
        .arg("-F")
        .arg("-f")
        .arg(&s.conf)
        .env("LISTEN_FDNAMES", "pop3");
    // SAFETY: the closure runs in the forked child before exec and makes
    // only the async-signal-safe fcntl(2) call, on the listener alone, so
    // that the shell inherits it.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::spawn(cmd);
    server.wait_log(&format!("listening on {addr} (pop3) (socket from systemd)"));
    drop(listener);
    let mut c = tcp(&addr.to_string());
    c.cmd(&format!("USER {}", user.name));
    assert!(c.cmd("PASS fd pw").starts_with("+OK"));
}

#[test]
fn brute_force_from_one_address_is_blocked() {
    require_root!();
    let user = SystemUser::create("pw");
    let s = setup(&user, "");
    let server = Server::start(&s.conf);
    let addr = server.addr();
    for _ in 0..4 {
        let mut c = tcp(&addr);
        for _ in 0..3 {
            c.cmd(&format!("USER {}", user.name));
            let r = c.cmd("PASS wrong");
            if !r.starts_with("-ERR [AUTH]") {
                break;
            }
        }
    }
    // Ten failures: the address is refused at connect, even with the
    // right password.
    let s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(
        line.starts_with("-ERR [SYS/TEMP] too many failed logins"),
        "{line}"
    );
    server.wait_log("refused connection: rip=127.0.0.1 reason=too many failed logins");
}

fn packaging(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(path)
}

#[test]
fn systemd_units_verify() {
    if !tool("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = [
        "systemd/ironpop.service",
        "systemd/ironpop.socket",
        "systemd/ironpop-pop3s.socket",
        "systemd/ironpop-inetd.socket",
        "systemd/ironpop-inetd@.service",
        "examples/ironpop-stats.service",
        "examples/ironpop-stats.timer",
    ];
    for path in units {
        let unit = Path::new(path).file_name().unwrap();
        let text = std::fs::read_to_string(packaging(path)).unwrap();
        // Point the units at the binary under test.
        std::fs::write(
            dir.path().join(unit),
            text.replace("/usr/sbin/ironpop", BIN),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.map(|path| dir.path().join(Path::new(path).file_name().unwrap())))
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let relevant: Vec<&str> = stderr
        .lines()
        // Documentation=man:... fails where the pages are not installed.
        .filter(|l| l.contains("ironpop") && !l.contains("Command 'man "))
        .collect();
    assert!(relevant.is_empty(), "systemd-analyze verify:\n{stderr}");
}

#[test]
fn inetd_snippets_name_a_valid_command_line() {
    let line = std::fs::read_to_string(packaging("inetd/inetd.conf")).unwrap();
    let entry = line
        .lines()
        .find(|l| l.starts_with("pop3"))
        .expect("a pop3 line");
    let fields: Vec<&str> = entry.split_whitespace().collect();
    assert_eq!(&fields[..5], ["pop3", "stream", "tcp", "nowait", "root"]);
    assert_eq!(fields[5], "/usr/sbin/ironpop");
    assert_eq!(&fields[6..], ["ironpop", "-i"]);
    let xinetd = std::fs::read_to_string(packaging("inetd/xinetd.ironpop")).unwrap();
    assert!(xinetd.contains("server_args     = -i"));
    assert!(xinetd.contains("server          = /usr/sbin/ironpop"));
    // The binary accepts exactly these arguments (checked with -t added).
    let status = Command::new(BIN)
        .args(["-i", "-t"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "-i -t is a usage error, -i alone parses"
    );
}
