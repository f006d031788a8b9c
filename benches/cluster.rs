//! Bench: HAProxy (shipped packaging/haproxy/ironpop.cfg) in front of 1 and 3 release `ironpop` nodes, and one node directly: login latency, logins/s, RETR MB/s.
//!
//! On this 2-core machine three nodes share the same two cores with
//! HAProxy and the clients, so the figures measure what HAProxy adds, not
//! how a cluster scales. Logins use a cheap sha256-crypt hash (1000
//! rounds), so the figures are about the servers, not crypt. Every
//! workload runs `ROUNDS` times, interleaved across the three targets;
//! ranges are min–max over rounds. Needs root and haproxy (as the cluster
//! tests); otherwise it says it did not run.

#[allow(dead_code)]
#[path = "../tests/support/cluster.rs"]
mod cluster;
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod loadgen;
#[path = "../tests/support/ports.rs"]
mod ports;

use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use cluster::{Cluster, Spec};
use common::median;
use loadgen::{Client, CHEAP_HASH, PASSWORD};

const ROUNDS: usize = 3;
/// Sequential logins per latency sample.
const LATENCY_LOGINS: usize = 200;
/// Concurrent clients (each its own mailbox) and how long they log in.
const LOGIN_CLIENTS: usize = 4;
const LOGIN_FOR: Duration = Duration::from_secs(3);
/// One message of this size per RETR mailbox; RETR'd this many times.
const RETR_BYTES: usize = 32 << 20;
const RETRS: usize = 3;
const RETR_CLIENTS: usize = 3;

fn login_user(i: usize) -> String {
    format!("login{i}")
}

fn retr_user(i: usize) -> String {
    format!("retr{i}")
}

/// From 127.0.0.2 and up: never 127.0.0.1, the nodes' trusted proxy
/// address, so direct connections need no PROXY header.
fn source(client: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 8, 2 + client as u8)
}

fn session(addr: SocketAddr, src: Ipv4Addr, user: &str) {
    let mut c = Client::connect_from(addr, src).expect("connect");
    c.login(user, PASSWORD).expect("login");
    c.cmd("QUIT").expect("QUIT");
    c.drain();
}

/// Median milliseconds of one whole login session (connect to close).
fn login_latency_ms(addr: SocketAddr) -> f64 {
    let mut ms: Vec<f64> = (0..LATENCY_LOGINS)
        .map(|_| {
            let t = Instant::now();
            session(addr, source(0), &login_user(0));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&mut ms)
}

/// Whole login sessions per second, `LOGIN_CLIENTS` at a time.
fn logins_per_s(addr: SocketAddr) -> f64 {
    let start = Instant::now();
    let counts: Vec<usize> = (0..LOGIN_CLIENTS)
        .map(|i| {
            thread::spawn(move || {
                let mut n = 0;
                while start.elapsed() < LOGIN_FOR {
                    session(addr, source(i), &login_user(i));
                    n += 1;
                }
                n
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("login client"))
        .collect();
    counts.iter().sum::<usize>() as f64 / start.elapsed().as_secs_f64()
}

/// MB/s of RETR, `clients` at once, each from its own mailbox.
fn retr_mb_s(addr: SocketAddr, clients: usize) -> f64 {
    let start = Instant::now();
    let bytes: u64 = (0..clients)
        .map(|i| {
            thread::spawn(move || {
                let mut c = Client::connect_from(addr, source(i)).expect("connect");
                c.login(&retr_user(i), PASSWORD).expect("login");
                let n: u64 = (0..RETRS).map(|_| c.retr_raw(1).expect("RETR")).sum();
                c.cmd("QUIT").expect("QUIT");
                c.drain();
                n
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("RETR client"))
        .sum();
    bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
}

fn start(nodes: usize, passwd: &str) -> Cluster {
    let c = Cluster::start(&Spec {
        nodes,
        passwd,
        node_conf: "",
        check_inter_ms: 2000,
        tls: false,
    });
    for i in 0..RETR_CLIENTS {
        let path = c.spool_path(&retr_user(i));
        common::write_big_message(&path, RETR_BYTES, i as u64 + 1).expect("write spool");
        c.write_spool(&retr_user(i), &std::fs::read(&path).expect("read spool"));
    }
    for i in 0..LOGIN_CLIENTS {
        c.write_spool(&login_user(i), b"");
    }
    c
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(0.0, f64::max);
    format!("{lo:.2}–{hi:.2}")
}

fn main() {
    if !nix::unistd::geteuid().is_root()
        || std::process::Command::new("haproxy")
            .arg("-v")
            .output()
            .is_err()
    {
        println!("cluster bench: NOT RUN (needs root and haproxy, as the cluster tests)");
        return;
    }
    loadgen::raise_nofile();
    let passwd: String = (0..LOGIN_CLIENTS)
        .map(login_user)
        .chain((0..RETR_CLIENTS).map(retr_user))
        .map(|u| format!("{u}:{CHEAP_HASH}\n"))
        .collect();
    let three = start(3, &passwd);
    let one = start(1, &passwd);
    let targets: [(&str, SocketAddr); 3] = [
        ("direct to one node", three.nodes[0].addr),
        ("HAProxy, 1 node", one.front),
        ("HAProxy, 3 nodes", three.front),
    ];
    let mut latency = [[0.0; ROUNDS]; 3];
    let mut logins = [[0.0; ROUNDS]; 3];
    let mut retr1 = [[0.0; ROUNDS]; 3];
    let mut retr3 = [[0.0; ROUNDS]; 3];
    for round in 0..ROUNDS {
        for (t, (_, addr)) in targets.iter().enumerate() {
            latency[t][round] = login_latency_ms(*addr);
            logins[t][round] = logins_per_s(*addr);
            retr1[t][round] = retr_mb_s(*addr, 1);
            retr3[t][round] = retr_mb_s(*addr, RETR_CLIENTS);
        }
    }
    println!("cluster bench ({ROUNDS} rounds, min–max; 2 cores: HAProxy's overhead, not scaling)");
    for (t, (name, _)) in targets.iter().enumerate() {
        println!(
            "  {name:<20} login {} ms (median of {LATENCY_LOGINS}), {} logins/s ({LOGIN_CLIENTS} clients), \
             RETR {} MB/s (1 client), {} MB/s ({RETR_CLIENTS} clients)",
            range(&latency[t]),
            range(&logins[t]),
            range(&retr1[t]),
            range(&retr3[t]),
        );
    }
    let added: Vec<f64> = (0..ROUNDS).map(|r| latency[1][r] - latency[0][r]).collect();
    println!(
        "  HAProxy adds {} ms per login session (1 node, same round); ratio HAProxy/direct logins/s: {}",
        range(&added),
        range(&(0..ROUNDS).map(|r| logins[1][r] / logins[0][r]).collect::<Vec<_>>()),
    );
}
