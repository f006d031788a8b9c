//! Bench: what a flood and a full house cost the release `ironpop` on loopback.
//!
//! 1. Flood: `IRONPOP_BENCH_FLOOD` (2000) idle unauthenticated connections,
//!    each from its own loopback address, held open against the default
//!    `max_sessions`; meanwhile fresh clients log in one after another
//!    (USER/PASS/STAT/QUIT): their latency (p50, p99, max; budget p99 ≤ 1 s)
//!    and the server's memory before and during the flood.
//! 2. Held sessions under a 20 000-descriptor limit: `max_sessions` set to
//!    the most that limit carries (daemon/fd_budget.rs), logged-in idle
//!    sessions opened until one is refused or all are held; the maximum,
//!    the descriptors they use, and a fresh login's latency at that load
//!    (with one worker left for it).
//!
//! The bench process needs a descriptor per client: it raises its own
//! limit to the hard one (20 000 on the reference machine).

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod loadgen;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{env_u64, median, percentile, report, Budget};
use loadgen::loopback::{client_address, connect_from};
use loadgen::{Client, Server, Setup, CHEAP_HASH, PASSWORD};

const FRESH_P99_BUDGET_MS: f64 = 1000.0;
const SPOOL: &[u8] = b"From a@b Mon Jan  1 00:00:00 2024\n\nhi\n";
const DESCRIPTOR_LIMIT: u64 = 20_000;

/// One fresh USER/PASS/STAT/QUIT from `src`; wall time in ms.
fn fresh_login(addr: SocketAddr, src: std::net::Ipv4Addr, user: &str) -> f64 {
    let t = Instant::now();
    let mut c = Client::connect_from(addr, src).expect("fresh connect");
    c.login(user, PASSWORD).expect("fresh login");
    c.cmd("STAT").expect("STAT");
    c.cmd("QUIT").expect("QUIT");
    c.drain();
    t.elapsed().as_secs_f64() * 1e3
}

fn latencies(name: &str, mut ms: Vec<f64>) {
    let max = ms.iter().copied().fold(0.0, f64::max);
    report(
        &format!("{name}: fresh login p99"),
        percentile(&mut ms, 0.99),
        "ms",
        Budget::AtMost(FRESH_P99_BUDGET_MS),
    );
    println!(
        "{:<44} p50 {:.1} ms, max {max:.1} ms, {} logins",
        "",
        median(&mut ms),
        ms.len()
    );
}

fn flood(flood: usize, fresh: usize) {
    let accounts = vec![("bench".to_string(), CHEAP_HASH.to_string())];
    let spools = vec![("bench".to_string(), SPOOL.to_vec())];
    let setup = Setup::new(
        &accounts,
        &spools,
        ironpop::limits::DEFAULT_MAX_SESSIONS,
        "",
    );
    setup.settle();
    let server = Server::start(&setup.conf);
    let pid = server.pid();
    let rss0 = loadgen::status_value(pid, "VmRSS");
    let t = Instant::now();
    let held: Vec<TcpStream> = (0..flood as u32)
        .filter_map(|i| connect_from(server.addr, client_address(i)).ok())
        .collect();
    println!(
        "flood: {} of {flood} idle connections open in {:.1} s",
        held.len(),
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss1 = loadgen::status_value(pid, "VmRSS");
    let threads = loadgen::status_value(pid, "Threads");
    let ms: Vec<f64> = (0..fresh as u32)
        .map(|i| fresh_login(server.addr, client_address(100_000 + i), "bench"))
        .collect();
    latencies(&format!("flood of {} idle connections", held.len()), ms);
    let rss2 = loadgen::status_value(pid, "VmRSS");
    report(
        "flood: server RSS during the flood",
        rss2.max(rss1) as f64 / 1024.0,
        "MiB",
        Budget::None,
    );
    println!(
        "{:<44} {rss0} KiB before, {rss1} KiB with the flood held, {rss2} KiB after the logins; {threads} threads",
        ""
    );
    drop(held);
}

fn held_sessions() {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let limit = DESCRIPTOR_LIMIT.min(hard);
    // The server inherits this limit; the bench's clients share it.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, limit)
        .expect("setrlimit");
    let max_sessions = ironpop::daemon::fd_budget::most_sessions(limit);
    let users: Vec<String> = (0..=max_sessions).map(|i| format!("h{i}")).collect();
    let accounts: Vec<(String, String)> = users
        .iter()
        .map(|u| (u.clone(), CHEAP_HASH.to_string()))
        .collect();
    let spools: Vec<(String, Vec<u8>)> =
        users.iter().map(|u| (u.clone(), SPOOL.to_vec())).collect();
    let setup = Setup::new(&accounts, &spools, max_sessions, "");
    setup.settle();
    let server = Server::start(&setup.conf);
    let pid = server.pid();
    let fds0 = open_fds(pid);
    let t = Instant::now();
    let mut held = Vec::new();
    // One worker stays free for the fresh login measured at this load.
    for (i, user) in users.iter().take(max_sessions - 1).enumerate() {
        let c = Client::connect_from(server.addr, client_address(i as u32))
            .and_then(|mut c| c.login(user, PASSWORD).map(|()| c));
        match c {
            Ok(c) => held.push(c),
            Err(e) => {
                println!("held sessions: login {} refused: {e}", i + 1);
                break;
            }
        }
    }
    let fds1 = open_fds(pid);
    report(
        &format!("held sessions under a {limit}-descriptor limit"),
        held.len() as f64 + 1.0,
        "sessions",
        Budget::None,
    );
    println!(
        "{:<44} max_sessions = {max_sessions} (the most the limit carries); opened in {:.1} s; \
         {:.2} descriptors per idle logged-in session ({fds0} -> {fds1}); RSS {} KiB",
        "",
        t.elapsed().as_secs_f64(),
        (fds1 - fds0) as f64 / held.len().max(1) as f64,
        loadgen::status_value(pid, "VmRSS")
    );
    let last = users.last().expect("users");
    let ms: Vec<f64> = (0..20u32)
        .map(|i| fresh_login(server.addr, client_address(200_000 + i), last))
        .collect();
    latencies(&format!("{} held sessions", held.len()), ms);
    drop(held);
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn main() {
    loadgen::raise_nofile();
    flood(
        env_u64("IRONPOP_BENCH_FLOOD", 2000) as usize,
        env_u64("IRONPOP_BENCH_FRESH", 200) as usize,
    );
    held_sessions();
}
