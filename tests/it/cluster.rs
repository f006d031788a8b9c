//! Three nodes behind HAProxy sharing one spool and state dir (ironpop(8) SCALING): one session per mailbox cluster-wide, health checks, TLS passed through, the shipped HAProxy configuration.
//!
//! The fixture (tests/support/cluster.rs) starts each node in its own UTS,
//! PID and mount namespaces with its own hostname, so no pid or hostname
//! check can pass by accident. Node deaths are in cluster_kill.rs.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use crate::harness::*;

// Shared with benches/cluster.rs, which uses the parts the tests do not.
#[allow(dead_code)]
#[path = "../support/cluster.rs"]
pub(crate) mod fixture;
use fixture::{Cluster, Spec};

pub(crate) const USER: &str = "zoe";
pub(crate) const PASSWORD: &str = "zoe-Cluster-9";
const START: Duration = fixture::START_TIMEOUT;

/// `true` when this test can run: root, `unshare` and `haproxy`. Otherwise
/// it says so loudly, and fails under CI.
pub(crate) fn cluster_can_run() -> bool {
    // The cluster tests need root (unshare, privilege drop).
    if !crate::system::root_or_not_run() {
        return false;
    }
    require_tool("unshare", &["--version"]) && require_tool("haproxy", &["-v"])
}

/// The test user's passwd-file line (yescrypt, like a real install).
pub(crate) fn passwd() -> String {
    use std::sync::OnceLock;
    static LINE: OnceLock<String> = OnceLock::new();
    LINE.get_or_init(|| format!("{USER}:{}\n", hash_password(PASSWORD)))
        .clone()
}

/// Three nodes with `node_conf` added to their configuration; `tls`: they
/// listen for POP3S too (`node_conf` names the certificate).
pub(crate) fn start(node_conf: &str, tls: bool) -> Cluster {
    let passwd = passwd();
    Cluster::start(&Spec {
        nodes: 3,
        passwd: &passwd,
        node_conf,
        check_inter_ms: 100,
        tls,
    })
}

/// A connection to `addr` from the loopback address `src`: each of 127/8
/// is another client to HAProxy's per-address table and the nodes' limits.
pub(crate) fn connect_from(addr: SocketAddr, src: Ipv4Addr) -> TcpStream {
    crate::loopback::connect_from(addr, src)
        .unwrap_or_else(|e| panic!("connect to {addr} from {src}: {e}"))
}

/// A connection to `addr` from `src` whose greeting has been read.
pub(crate) fn greeted(addr: SocketAddr, src: Ipv4Addr) -> Client {
    let mut c = Client::from_stream(connect_from(addr, src));
    c.greeting();
    c
}

/// [`greeted`], then `USER` accepted; the PASS reply is the caller's.
pub(crate) fn user_sent(addr: SocketAddr, src: Ipv4Addr) -> Client {
    let mut c = greeted(addr, src);
    c.ok(&format!("USER {USER}"));
    c
}

/// A session of the test user, logged in.
pub(crate) fn login(addr: SocketAddr, src: Ipv4Addr) -> Client {
    let mut c = user_sent(addr, src);
    c.ok(&format!("PASS {PASSWORD}"));
    c
}

/// The test user's file `<spool path, %-encoded>.<kind>` in the shared
/// state_dir (tempdir paths need only `/` encoded).
pub(crate) fn state_file(cluster: &Cluster, kind: &str) -> std::path::PathBuf {
    let key = cluster
        .spool_path(USER)
        .display()
        .to_string()
        .replace('/', "%2F");
    cluster.state_dir().join(format!("{key}.{kind}"))
}

/// Which nodes logged a login of the test user after `marks`.
pub(crate) fn serving(cluster: &Cluster, marks: &[usize]) -> Vec<usize> {
    cluster.nodes_logging(marks, &format!("login: user={USER} method="))
}

#[test]
fn shipped_haproxy_config_is_valid() {
    if !require_tool("haproxy", &["-v"]) {
        return;
    }
    let out = run(
        Command::new("haproxy").args(["-c", "-f"]).arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/haproxy/ironpop.cfg"
        )),
        b"",
        IO_TIMEOUT,
    );
    assert!(
        out.status.success() && out.all_text().contains("Configuration file is valid"),
        "haproxy -c: {}",
        out.all_text()
    );
    for must in [
        "mode tcp",
        "balance leastconn",
        "send-proxy-v2",
        "tcp-check expect string +OK",
        "bind :110",
        "bind :995",
        "stick-table",
    ] {
        assert!(fixture::SHIPPED_HAPROXY_CFG.contains(must), "{must}");
    }
}

/// The nodes really are separate hosts to each other: pid 1 of their own
/// pid namespace, their own hostname.
fn assert_isolated(cluster: &Cluster) {
    let ours = nix::unistd::gethostname().unwrap();
    for node in &cluster.nodes {
        let pid = node.init_pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        assert!(nspid.ends_with("\t1"), "{}: {nspid}", node.name);
        let out = run(
            Command::new("nsenter").args(["--uts", "--target", &pid.to_string(), "hostname"]),
            b"",
            IO_TIMEOUT,
        );
        assert_eq!(out.stdout_text().trim(), node.name, "{}", out.all_text());
        assert_ne!(ours.to_string_lossy(), node.name);
    }
}

#[test]
fn twenty_simultaneous_logins_through_haproxy_one_holds_the_mailbox() {
    if !cluster_can_run() {
        return;
    }
    let cluster = start("", false);
    assert_isolated(&cluster);
    cluster.write_spool(USER, &mbox(&messages(3)));
    let marks = cluster.marks();
    const N: usize = 20;
    let greeted = Arc::new(Barrier::new(N + 1));
    let answered = Arc::new(Barrier::new(N + 1));
    let done = Arc::new(Barrier::new(N + 1));
    let front = cluster.front;
    let clients: Vec<_> = (0..N)
        .map(|i| {
            let (greeted, answered, done) = (greeted.clone(), answered.clone(), done.clone());
            thread::spawn(move || {
                let src = Ipv4Addr::new(127, 0, 1, 1 + i as u8);
                let mut c = user_sent(front, src);
                greeted.wait();
                let reply = c.cmd(&format!("PASS {PASSWORD}"));
                answered.wait();
                // The holder keeps the mailbox until every other login
                // has been answered and the lock file checked.
                done.wait();
                if reply.starts_with("+OK") {
                    c.ok("STAT");
                }
                c.quit();
                reply
            })
        })
        .collect();
    greeted.wait();
    answered.wait();
    let lock = state_file(&cluster, "session");
    let ofd_locked = held_by_ofd_lock(&lock);
    done.wait();
    let replies: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = replies.iter().filter(|r| r.starts_with("+OK")).count();
    let in_use = replies
        .iter()
        .filter(|r| r.starts_with("-ERR [IN-USE]"))
        .count();
    assert_eq!(
        (ok, in_use),
        (1, N - 1),
        "{replies:#?}\n{}",
        cluster.all_logs()
    );
    assert!(
        ofd_locked,
        "the session lock is an OFD lock on {} in the shared state_dir:\n{}",
        lock.display(),
        std::fs::read_to_string("/proc/locks").unwrap_or_default()
    );
    let answering = cluster.nodes_logging(&marks, &format!("login: user={USER}"));
    assert!(
        answering.len() > 1,
        "logins went to more than one node: {answering:?}\n{}",
        cluster.all_logs()
    );
    // Released: the next login, on whichever node, holds the mailbox.
    login(front, Ipv4Addr::new(127, 0, 1, 100)).quit();
    // One lock file and no journal, named after the spool path alone
    // (beside the spool index, which holds no state an update needs).
    let names: Vec<String> = std::fs::read_dir(cluster.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".index"))
        .collect();
    assert_eq!(
        names,
        [lock.file_name().unwrap().to_string_lossy().into_owned()]
    );
}

/// Whether /proc/locks lists an OFD write lock on `path`'s inode.
fn held_by_ofd_lock(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1: OFDLCK ADVISORY WRITE -1 fd:00:1234 0 EOF"
        f.get(1) == Some(&"OFDLCK")
            && f.get(3) == Some(&"WRITE")
            && f.get(5)
                .and_then(|id| id.rsplit(':').next())
                .and_then(|ino| ino.parse::<u64>().ok())
                == Some(meta.ino())
    })
}

#[test]
fn a_stopped_node_is_marked_down_and_logins_go_on() {
    if !cluster_can_run() {
        return;
    }
    let mut cluster = start("", false);
    cluster.write_spool(USER, &mbox(&messages(1)));
    cluster.nodes[1].stop();
    for backend in ["ironpop_pop3", "ironpop_pop3s"] {
        assert!(
            cluster.wait_haproxy_log(&format!("{backend}/node2 is DOWN"), 1, START),
            "{}",
            cluster.all_logs()
        );
    }
    let marks = cluster.marks();
    for i in 0..6 {
        login(cluster.front, Ipv4Addr::new(127, 0, 3, i)).quit();
    }
    let served = serving(&cluster, &marks);
    assert_eq!(served, [0, 2], "{}", cluster.all_logs());
    cluster.restart(1);
    assert!(
        cluster.wait_haproxy_log("ironpop_pop3/node2 is UP", 1, START),
        "{}",
        cluster.all_logs()
    );
}

#[test]
fn cluster_wide_limit_per_client_address() {
    if !cluster_can_run() {
        return;
    }
    let cluster = start("", false);
    let src = Ipv4Addr::new(127, 0, 4, 1);
    // The shipped table allows 16 connections per address across the
    // cluster; leastconn spreads them over three nodes, each of which
    // would allow 16 (max_sessions_per_ip). A node refusing would say
    // `-ERR`; HAProxy closes without a word.
    let mut held: Vec<Client> = (0..16).map(|_| greeted(cluster.front, src)).collect();
    let mut extra = Client::from_stream(connect_from(cluster.front, src));
    assert!(
        extra.expect_closed(IO_TIMEOUT).is_empty(),
        "the 17th connection from one address is refused by HAProxy"
    );
    let other = greeted(cluster.front, Ipv4Addr::new(127, 0, 4, 2));
    held.pop().unwrap().quit();
    other.quit();
}

#[test]
fn tls_is_passed_through_to_the_nodes() {
    if !cluster_can_run() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let pki = crate::tls::Pki::new(certs.path(), "cluster");
    let (crt, key) = pki.leaf("server", "localhost", false, false);
    let cluster = start(
        &format!("tls_cert = {}\ntls_key = {}", crt.display(), key.display()),
        true,
    );
    cluster.write_spool(USER, &mbox(&messages(2)));
    let config = pki.rustls_client(None);
    // Port 995: the TLS session is between the client and the node.
    let marks = cluster.marks();
    let sock = connect_from(cluster.front_tls, Ipv4Addr::new(127, 0, 7, 1));
    let mut c = crate::tls::TlsClient::over(config.clone(), sock);
    assert_eq!(c.line(), "+OK ironpop ready");
    assert!(c.cmd(&format!("USER {USER}")).starts_with("+OK"));
    assert!(c.cmd(&format!("PASS {PASSWORD}")).starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let line = format!("login: user={USER} method=USER rip=127.0.7.1 ");
    assert!(
        cluster
            .wait_nodes_logging(&marks, &line, Duration::from_secs(10))
            .len()
            == 1
            && cluster
                .wait_nodes_logging(&marks, "tls=TLSv1.3", Duration::from_secs(10))
                .len()
                == 1,
        "{}",
        cluster.all_logs()
    );
    // Port 110 with STLS: the node does the handshake.
    let mut plain = greeted(cluster.front, Ipv4Addr::new(127, 0, 7, 2));
    plain.ok("STLS");
    let mut c = crate::tls::TlsClient::over(config, plain.into_stream());
    assert!(c.cmd(&format!("USER {USER}")).starts_with("+OK"));
    assert!(c.cmd(&format!("PASS {PASSWORD}")).starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
}
