//! Load-generator plumbing: a release `ironpop` on loopback, a raw POP3 client, /proc readings.

pub mod compare;
pub mod dovecot;
pub mod oracle;
pub mod popa3d;
pub mod tls;

#[path = "../../tests/support/loopback.rs"]
#[allow(dead_code)]
pub mod loopback;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The server under test: cargo builds it with the bench profile (release).
pub const BIN: &str = env!("CARGO_BIN_EXE_ironpop");

pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Linux reports utime/stime in USER_HZ, which is 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// `ironpop -F -f CONF` with its log drained in the background.
pub struct Server {
    child: Child,
    /// The plain POP3 listener.
    pub addr: SocketAddr,
    /// The implicit-TLS listener, when the config has `listen_tls`.
    pub tls_addr: Option<SocketAddr>,
}

impl Server {
    /// Starts the server on `conf` and waits for a `listening on` line
    /// per `listen`/`listen_tls` line of it.
    pub fn start(conf: &Path) -> Server {
        let text = std::fs::read_to_string(conf).expect("read config");
        let listeners = text.lines().filter(|l| l.starts_with("listen")).count();
        let mut child = Command::new(BIN)
            .arg("-F")
            .arg("-f")
            .arg(conf)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ironpop");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // Keep reading for the server's whole life: a full pipe would
            // stall its logging and so the figures.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let mut words = rest.split_whitespace();
                    let addr = words.next().unwrap_or_default().parse::<SocketAddr>();
                    let tls = words.next() == Some("(pop3s)");
                    let _ = tx.send(addr.ok().map(|a| (a, tls)));
                } else if line.contains("ERROR") || line.contains("panicked") {
                    eprintln!("ironpop: {line}");
                }
            }
        });
        let (mut addr, mut tls_addr) = (None, None);
        for _ in 0..listeners {
            let (a, tls) = rx
                .recv_timeout(Duration::from_secs(30))
                .ok()
                .flatten()
                .expect("ironpop logged its listening addresses");
            *(if tls { &mut tls_addr } else { &mut addr }) = Some(a);
        }
        Server {
            child,
            addr: addr.expect("a plain listener"),
            tls_addr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server CPU seconds so far (all threads, living and exited).
pub fn cpu_seconds(pid: u32) -> f64 {
    let (user, sys) = cpu_split(pid);
    user + sys
}

/// Server (user, system) CPU seconds so far, its privileged helper
/// processes included: started as root, the password checks run there.
pub fn cpu_split(pid: u32) -> (f64, f64) {
    let mut total = own_cpu(pid).map_or((0.0, 0.0), |(u, s, _)| (u, s));
    for (user, sys, _) in children(pid) {
        total.0 += user;
        total.1 += sys;
    }
    total
}

/// (user, system, ppid) of one process from /proc/PID/stat.
fn own_cpu(pid: u32) -> Option<(f64, f64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "pid (comm) ": state is index 0, ppid 1, utime 11, stime 12.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let ppid = f.get(1).and_then(|v| v.parse().ok())?;
    Some((ticks(11) / USER_HZ, ticks(12) / USER_HZ, ppid))
}

/// The living children of `pid` (the server's privileged helpers).
pub fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| own_cpu(p).is_some_and(|(_, _, ppid)| ppid == pid))
        .collect()
}

/// Nanoseconds on a CPU so far of every living thread of `pids`, from
/// /proc/PID/task/TID/schedstat: exact, where /proc/PID/stat counts
/// 10 ms ticks.
pub fn on_cpu_ns(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// CPU of the living children of `pid`.
fn children(pid: u32) -> Vec<(f64, f64, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(own_cpu)
        .filter(|&(_, _, ppid)| ppid == pid)
        .collect()
}

/// CPU seconds of `pid` and its children, living and exited (a reaped
/// child's time is in its parent's cutime/cstime): a forking server's
/// whole cost.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let with_reaped = |p: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Some((ticks(11) + ticks(12) + ticks(13) + ticks(14)) / USER_HZ)
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let children: f64 = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| own_cpu(p).is_some_and(|(_, _, ppid)| ppid == pid))
        .filter_map(with_reaped)
        .sum();
    with_reaped(pid).unwrap_or(0.0) + children
}

/// CPU seconds of the calling thread.
pub fn thread_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// A `/proc/PID/status` value in kB (VmRSS, Threads, ...).
pub fn status_value(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit; children
/// (the server) inherit it. Returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let want = hard.min(65_536);
    let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
    getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(s, _)| s)
}

/// A raw POP3 client.
pub struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        Client::with_stream(TcpStream::connect(addr)?)
    }

    /// Connects from the loopback address `src` (each of 127/8 is its own
    /// client address to the server's failed-login throttle).
    pub fn connect_from(addr: SocketAddr, src: std::net::Ipv4Addr) -> io::Result<Client> {
        Client::with_stream(loopback::connect_from(addr, src)?)
    }

    /// [`Client::connect_from`] giving up on the connect and on every
    /// reply after `timeout` (a server whose queue is full may not answer).
    pub fn connect_from_within(
        addr: SocketAddr,
        src: std::net::Ipv4Addr,
        timeout: Duration,
    ) -> io::Result<Client> {
        Client::with_timeout(connect_within(addr, src, timeout)?, timeout)
    }

    fn with_stream(s: TcpStream) -> io::Result<Client> {
        Client::with_timeout(s, IO_TIMEOUT)
    }

    fn with_timeout(s: TcpStream, timeout: Duration) -> io::Result<Client> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let w = s.try_clone()?;
        let mut c = Client {
            r: BufReader::with_capacity(256 * 1024, s),
            w,
        };
        c.expect_ok("greeting")?;
        Ok(c)
    }

    pub fn line(&mut self) -> io::Result<String> {
        reply_line(&mut self.r)
    }

    fn expect_ok(&mut self, what: &str) -> io::Result<String> {
        positive(self.line()?, what)
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)
    }

    /// One command, one `+OK` line.
    pub fn cmd(&mut self, cmd: &str) -> io::Result<String> {
        self.send(format!("{cmd}\r\n").as_bytes())?;
        self.expect_ok(cmd)
    }

    /// Reads a multi-line body up to and including `.`; returns its octets.
    pub fn multi(&mut self) -> io::Result<u64> {
        let mut n = 0u64;
        loop {
            let l = self.line()?;
            if l == ".\r\n" {
                return Ok(n);
            }
            n += l.len() as u64;
        }
    }

    pub fn login(&mut self, user: &str, pass: &str) -> io::Result<()> {
        self.cmd(&format!("USER {user}"))?;
        self.cmd(&format!("PASS {pass}"))?;
        Ok(())
    }

    /// RETR of a large message, read in big blocks; returns octets received
    /// up to and including the terminating `.` line.
    pub fn retr_raw(&mut self, msg: u32) -> io::Result<u64> {
        self.cmd(&format!("RETR {msg}"))?;
        let mut tail: Vec<u8> = Vec::with_capacity(16);
        let mut total = 0u64;
        loop {
            let buf = self.r.fill_buf()?;
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = buf.len();
            tail.extend_from_slice(&buf[n.saturating_sub(5)..]);
            tail.drain(..tail.len().saturating_sub(5));
            self.r.consume(n);
            total += n as u64;
            if tail == b"\r\n.\r\n" {
                return Ok(total);
            }
        }
    }

    /// Reads whatever is left (after QUIT) until the server closes.
    pub fn drain(mut self) {
        let mut sink = Vec::new();
        let _ = self.r.read_to_end(&mut sink);
    }
}

/// A bench environment: a temp dir with config, passwd file and spools.
pub struct Setup {
    /// Removed on drop, with everything in it.
    pub _dir: tempfile::TempDir,
    pub conf: PathBuf,
    /// When the passwd file was written: passwd_file re-reads a file whose
    /// ctime is less than 2 s old at every login ("racy clean").
    pub written: Instant,
}

/// Password of every bench account, and its sha256-crypt hash with 1000
/// rounds (a cheap hash, so the figures are about the server, not crypt).
pub const PASSWORD: &str = "bench-Secret-1";
pub const CHEAP_HASH: &str =
    "$5$rounds=1000$ironpopbench$.TxhieEcpBU.Q5XaKH/NTeUgMv4Gl8Bs40HrnzsdQU4";
/// [`PASSWORD`] as sha512-crypt with the default 5000 rounds: what
/// `ENCRYPT_METHOD SHA512` (Debian's login.defs) and Dovecot's
/// SHA512-CRYPT write.
pub const SHA512_HASH: &str = "$6$ironpopbench$k.yaAox4TKreRiVwOcps.Tvsk4YstZJjhW3vLJiM.wDJjNxJyEKZiroIO48PDS6wFaKO5gNWajHTLxjDd8vtx.";

/// An account with a `{PLAIN}` password.
pub const PLAIN_USER: &str = "plain";

/// `{PLAIN}` + [`PASSWORD`]: the passwd-file field of a cleartext entry.
pub fn plain_secret() -> String {
    format!("{{PLAIN}}{PASSWORD}")
}

impl Setup {
    /// `accounts` are (user, passwd-file password field); `spools` are
    /// (user, bytes) written to the mail directory; `extra` is appended
    /// to the config.
    pub fn new(
        accounts: &[(String, String)],
        spools: &[(String, Vec<u8>)],
        max_sessions: usize,
        extra: &str,
    ) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("ironpop-bench-load-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        for sub in ["mail", "state"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        let passwd: String = accounts
            .iter()
            .map(|(u, secret)| format!("{u}:{secret}\n"))
            .collect();
        std::fs::write(root.join("passwd"), passwd).expect("write passwd");
        for (user, data) in spools {
            std::fs::write(root.join("mail").join(user), data).expect("write spool");
        }
        // As root the server drops to an unprivileged account (it refuses
        // to serve as root), and virtual users' spools must be that
        // account's, as on a real install.
        let (me, group) = if nix::unistd::geteuid().is_root() {
            give_to_nobody(root);
            ("nobody".to_string(), "nogroup".to_string())
        } else {
            let me = nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map_or_else(|| "root".into(), |u| u.name);
            let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
                .ok()
                .flatten()
                .map_or_else(|| "root".into(), |g| g.name);
            (me, group)
        };
        let conf = format!(
            "listen = 127.0.0.1:0\n\
             passdb = passwd-file:{root}/passwd\n\
             mailbox = {root}/mail/%u\n\
             state_dir = {root}/state\n\
             pid_file = {root}/ironpop.pid\n\
             control_socket = {root}/control\n\
             plaintext_auth = localhost\n\
             auth_fail_delay = 0\n\
             max_sessions = {max_sessions}\n\
             max_sessions_per_ip = {max_sessions}\n\
             log_level = info\n\
             user = {me}\n\
             group = {group}\n\
             {extra}",
            root = root.display()
        );
        let conf_path = root.join("ironpop.conf");
        std::fs::write(&conf_path, conf).expect("write config");
        Setup {
            _dir: dir,
            conf: conf_path,
            written: Instant::now(),
        }
    }

    /// Appends `lines` to the config (before the server starts).
    pub fn append_conf(&self, lines: &str) {
        let mut conf = std::fs::read_to_string(&self.conf).expect("read config");
        conf.push_str(lines);
        std::fs::write(&self.conf, conf).expect("write config");
    }

    /// The directory holding `passwd`, `mail/` and the config.
    pub fn root(&self) -> &Path {
        self._dir.path()
    }

    /// Waits until the passwd file is old enough to be cached.
    pub fn settle(&self) {
        let left = Duration::from_millis(2100).saturating_sub(self.written.elapsed());
        thread::sleep(left);
    }
}

/// Hands the temp tree to nobody (uid 65534), the account the server drops
/// to when the bench runs as root.
pub fn give_to_nobody(root: &std::path::Path) {
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        nix::unistd::chown(&p, nobody, None).expect("chown to nobody");
        if p.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir").flatten() {
                stack.push(e.path());
            }
        }
    }
}

/// One reply line from the server (end of file is an error: the bench
/// never expects the server to hang up mid-conversation). Shared by the
/// plain and the TLS client.
pub(crate) fn reply_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut l = String::new();
    if r.read_line(&mut l)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(l)
}

/// `line` when it is a positive reply, else an error naming `what`.
pub(crate) fn positive(line: String, what: &str) -> io::Result<String> {
    if line.starts_with("+OK") {
        Ok(line)
    } else {
        Err(io::Error::other(format!("{what}: {}", line.trim_end())))
    }
}

/// A TCP connection from the loopback address `src` to `addr`, given up
/// after `timeout`: a server that stops accepting fills its backlog, and
/// a blocking connect would then wait out the SYN retries (minutes).
pub fn connect_within(
    addr: SocketAddr,
    src: std::net::Ipv4Addr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use nix::sys::socket::{
        bind, connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::{AsFd, AsRawFd};
    let SocketAddr::V4(to) = addr else {
        return Err(io::ErrorKind::Unsupported.into());
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(src, 0)),
    )?;
    match connect(fd.as_raw_fd(), &SockaddrIn::from(to)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let mut polled = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLOUT,
    )];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    if nix::poll::poll(&mut polled, ms)? == 0 {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let err = getsockopt(&fd, sockopt::SocketError)?;
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}
