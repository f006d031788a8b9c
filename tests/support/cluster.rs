//! A cluster on one machine: ironpop nodes in their own UTS, PID and mount namespaces sharing one spool and state dir, behind Debian's HAProxy running the shipped packaging/haproxy/ironpop.cfg.
//!
//! Shared by tests/it/cluster.rs and benches/cluster.rs (included with
//! `#[path]`). Needs root (unshare, dropping to nobody) and `haproxy`.
//! Node N listens on 127.0.0.1N (127.0.0.11, .12, …), all on one port,
//! as separate hosts would; HAProxy reaches them from 127.0.0.1, which is
//! every node's `proxy_protocol_from`.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

// `ports.rs`, included by every program that includes this file.
use crate::ports::unassigned_port;

/// The HAProxy configuration shipped in the package.
pub const SHIPPED_HAPROXY_CFG: &str = include_str!("../../packaging/haproxy/ironpop.cfg");

/// How long a node or HAProxy may take to come up or go down.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The uid and gid nodes drop to (nobody/nogroup), which owns the shared files.
const NOBODY: u32 = 65534;

/// A child process whose stderr (and stdout) lines are collected.
struct Logged {
    child: Child,
}

fn collect(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
            l.push_str(&line);
            l.push('\n');
        }
    });
}

fn spawn_logged(mut cmd: Command, log: &Arc<Mutex<String>>) -> Logged {
    let mut child = cmd
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    collect(child.stdout.take().expect("stdout"), Arc::clone(log));
    collect(child.stderr.take().expect("stderr"), Arc::clone(log));
    Logged { child }
}

/// Waits until `log` holds `needle` at least `count` times.
fn wait_count(log: &Mutex<String>, needle: &str, count: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if log.lock().unwrap().matches(needle).count() >= count {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The child of `unshare --fork`: pid 1 of the new pid namespace.
fn init_pid_of(p: &Logged) -> Option<i32> {
    let unshare = p.child.id();
    std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One node: `unshare --uts --pid --mount --fork`, then `hostname nodeN`
/// and `exec ironpop -F` as the namespace's pid 1.
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    conf: PathBuf,
    /// Everything every incarnation of this node logged.
    log: Arc<Mutex<String>>,
    running: Option<Logged>,
}

impl Node {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The node's log from byte `from` on (a mark taken with `log().len()`).
    pub fn log_since(&self, from: usize) -> String {
        self.log().get(from..).unwrap_or_default().to_string()
    }

    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        wait_count(&self.log, needle, count, timeout)
    }

    fn start(&mut self) {
        assert!(self.running.is_none(), "{} is already running", self.name);
        let ready = self.log().matches(" ready: ").count();
        let mut cmd = Command::new("unshare");
        cmd.args(["--uts", "--pid", "--mount", "--fork", "sh", "-c"])
            .arg(r#"hostname "$0" && exec "$1" -F -f "$2""#)
            .arg(&self.name)
            .arg(env!("CARGO_BIN_EXE_ironpop"))
            .arg(&self.conf);
        self.running = Some(spawn_logged(cmd, &self.log));
        if !self.wait_log(" ready: ", ready + 1, START_TIMEOUT) {
            let log = self.log();
            self.kill();
            panic!("{} did not start:\n{log}", self.name);
        }
    }

    /// The pid (as seen from here) of the node's namespace init: ironpop's
    /// main process, the child of `unshare`.
    pub fn init_pid(&self) -> i32 {
        let p = self.running.as_ref().expect("node running");
        init_pid_of(p).unwrap_or_else(|| panic!("{}: unshare has no child", self.name))
    }

    /// SIGKILL to the namespace's init, which makes the kernel kill every
    /// process of the namespace (session workers, privileged helpers) at
    /// once: the node dies as a machine would, with no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.running.take() {
            if let Some(init) = init_pid_of(&p) {
                let _ = kill(Pid::from_raw(init), Signal::SIGKILL);
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// SIGTERM to ironpop, as `systemctl stop` does; waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.running.take() {
            if let Some(init) = init_pid_of(&p) {
                let _ = kill(Pid::from_raw(init), Signal::SIGTERM);
            }
            let _ = p.child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster's loopback ports: HAProxy's two frontends, and the POP3 and
/// POP3S port every node listens on (each at its own address).
pub struct Ports {
    pub front: u16,
    pub front_tls: u16,
    pub node: u16,
    pub node_tls: u16,
}

/// The shipped configuration rewritten for this machine, and nothing else:
/// loopback addresses and ports, faster health checks, servers beyond
/// `nodes` dropped, and a global section for a foreground process (no
/// syslog, chroot or user switch). Panics when a line it rewrites is
/// missing, so a change to the shipped file that the cluster tests no
/// longer cover fails loudly.
pub fn loopback_haproxy_cfg(shipped: &str, p: &Ports, nodes: usize, check_inter_ms: u32) -> String {
    let mut out = String::from("global\n    maxconn 2000\n");
    let mut in_global = false;
    let mut rewritten = 0;
    for line in shipped.lines() {
        if !line.starts_with([' ', '#']) && !line.trim().is_empty() {
            in_global = line.trim() == "global";
            if in_global {
                continue;
            }
        }
        if in_global {
            continue;
        }
        let mut l = line.to_string();
        let before = l.clone();
        l = l.replace("bind :110", &format!("bind 127.0.0.1:{}", p.front));
        l = l.replace("bind :995", &format!("bind 127.0.0.1:{}", p.front_tls));
        l = l.replace(
            "inter 2s fall 2 rise 2",
            &format!("inter {check_inter_ms} fall 2 rise 1"),
        );
        l = l.replace(" port 110 ", &format!(" port {} ", p.node));
        for n in 1..=9 {
            l = l.replace(
                &format!("192.0.2.1{n}:110"),
                &format!("127.0.0.1{n}:{}", p.node),
            );
            l = l.replace(
                &format!("192.0.2.1{n}:995"),
                &format!("127.0.0.1{n}:{}", p.node_tls),
            );
        }
        if l.trim_start().starts_with("server node") {
            let n: usize = l.trim_start()["server node".len()..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .expect("server nodeN");
            if n > nodes {
                continue;
            }
        }
        rewritten += usize::from(l != before);
        out.push_str(&l);
        out.push('\n');
    }
    assert!(
        rewritten >= 5 + 2 * nodes,
        "the shipped HAProxy configuration no longer has the lines the cluster tests rewrite \
         (binds :110/:995, `inter 2s fall 2 rise 2`, `port 110`, servers 192.0.2.1N); \
         {rewritten} rewritten:\n{out}"
    );
    out
}

/// Everything a cluster needs to start.
pub struct Spec<'a> {
    pub nodes: usize,
    /// passwd-file lines.
    pub passwd: &'a str,
    /// Extra lines for every node's configuration.
    pub node_conf: &'a str,
    /// Milliseconds between HAProxy's health checks.
    pub check_inter_ms: u32,
    /// Whether nodes listen for POP3S too (`node_conf` then names
    /// `tls_cert` and `tls_key`).
    pub tls: bool,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// HAProxy's POP3 (110) and POP3S (995) frontends.
    pub front: SocketAddr,
    pub front_tls: SocketAddr,
    haproxy: Option<Logged>,
    haproxy_log: Arc<Mutex<String>>,
    // Dropped last: every process must be gone before its files are.
    dir: tempfile::TempDir,
}

fn own_by_nobody(path: &Path) {
    let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
    nix::unistd::chown(path, nobody, Some(nix::unistd::Gid::from_raw(NOBODY)))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

impl Cluster {
    pub fn start(spec: &Spec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("ironpop-cluster-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["mail", "state"] {
            std::fs::create_dir(root.join(sub)).unwrap();
            own_by_nobody(&root.join(sub));
        }
        std::fs::write(root.join("passwd"), spec.passwd).unwrap();
        let hosts: Vec<Ipv4Addr> = (1..=spec.nodes)
            .map(|n| Ipv4Addr::new(127, 0, 0, 10 + n as u8))
            .collect();
        let front = unassigned_port(&[Ipv4Addr::LOCALHOST], &[]);
        let node = unassigned_port(&hosts, &[]);
        let ports = Ports {
            front,
            front_tls: unassigned_port(&[Ipv4Addr::LOCALHOST], &[front]),
            node,
            node_tls: unassigned_port(&hosts, &[node]),
        };
        let mut nodes = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let name = format!("node{}", i + 1);
            let conf = root.join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "# node {name} of a cluster test\nlisten = {host}:{}\n{}user = nobody\n\
                     group = nogroup\npassdb = passwd-file:{}\nmailbox = {}/%u\n\
                     state_dir = {}\npid_file = {}/{name}.pid\ncontrol_socket = {}/{name}.control\n\
                     proxy_protocol_from = 127.0.0.1\n\
                     plaintext_auth = always\nauth_fail_delay = 0\n{}\n",
                    ports.node,
                    if spec.tls {
                        format!("listen_tls = {host}:{}\n", ports.node_tls)
                    } else {
                        String::new()
                    },
                    root.join("passwd").display(),
                    root.join("mail").display(),
                    root.join("state").display(),
                    root.display(),
                    root.display(),
                    spec.node_conf,
                ),
            )
            .unwrap();
            nodes.push(Node {
                name,
                addr: SocketAddr::from((*host, ports.node)),
                conf,
                log: Arc::default(),
                running: None,
            });
        }
        // The pid files are written by the unprivileged node.
        own_by_nobody(root);
        for node in &mut nodes {
            node.start();
        }
        let cfg = root.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            loopback_haproxy_cfg(SHIPPED_HAPROXY_CFG, &ports, spec.nodes, spec.check_inter_ms),
        )
        .unwrap();
        let haproxy_log = Arc::default();
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&cfg);
        let haproxy = Some(spawn_logged(cmd, &haproxy_log));
        let mut cluster = Cluster {
            nodes,
            front: SocketAddr::from((Ipv4Addr::LOCALHOST, ports.front)),
            front_tls: SocketAddr::from((Ipv4Addr::LOCALHOST, ports.front_tls)),
            haproxy,
            haproxy_log,
            dir,
        };
        cluster.wait_haproxy_listening();
        cluster
    }

    fn wait_haproxy_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(self.front).is_err() {
            if let Some(Ok(Some(status))) = self.haproxy.as_mut().map(|h| h.child.try_wait()) {
                panic!("haproxy exited ({status}):\n{}", self.haproxy_log());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen:\n{}",
                self.haproxy_log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn spool_path(&self, user: &str) -> PathBuf {
        self.dir().join("mail").join(user)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// Replaces `user`'s spool (owned by the nodes' user, as virtual users'
    /// spools are).
    pub fn write_spool(&self, user: &str, data: &[u8]) {
        let path = self.spool_path(user);
        std::fs::write(&path, data).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        own_by_nobody(&path);
    }

    pub fn haproxy_log(&self) -> String {
        self.haproxy_log.lock().unwrap().clone()
    }

    pub fn wait_haproxy_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        wait_count(&self.haproxy_log, needle, count, timeout)
    }

    /// Starts node `i` again (same name, address and configuration).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].start();
    }

    /// Which nodes logged `needle` after the marks (`log().len()` per node).
    pub fn nodes_logging(&self, marks: &[usize], needle: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].log_since(marks[i]).contains(needle))
            .collect()
    }

    /// [`Cluster::nodes_logging`], waiting up to `timeout` for at least one
    /// node: a node writes its log line after the client saw the reply.
    pub fn wait_nodes_logging(
        &self,
        marks: &[usize],
        needle: &str,
        timeout: Duration,
    ) -> Vec<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.nodes_logging(marks, needle);
            if !found.is_empty() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every node's log length now, for [`Cluster::nodes_logging`].
    pub fn marks(&self) -> Vec<usize> {
        self.nodes.iter().map(|n| n.log().len()).collect()
    }

    /// Every node's and HAProxy's log, for failure messages.
    pub fn all_logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push_str(&format!("--- {}\n{}", n.name, n.log()));
        }
        s.push_str(&format!("--- haproxy\n{}", self.haproxy_log()));
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut h) = self.haproxy.take() {
            let _ = h.child.kill();
            let _ = h.child.wait();
        }
        for n in &mut self.nodes {
            n.kill();
        }
    }
}
