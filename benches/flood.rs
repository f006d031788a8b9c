//! Bench: what a flood and a full house cost the release `ironpop` on loopback, with Dovecot and popa3d flooded in the same run.
//!
//! 1. Flood: `IRONPOP_BENCH_FLOOD` (2000) idle unauthenticated connections,
//!    each from its own loopback address, held open against the default
//!    `max_sessions`; meanwhile `IRONPOP_BENCH_FRESH` (200) fresh clients
//!    log in one after another (USER/PASS/STAT/QUIT): how many get in,
//!    their latency (p50, p99 counting a failed login as infinitely slow;
//!    budget p99 ≤ 1 s) and ironpop's memory during the flood. As root the
//!    same flood hits Dovecot (as installed, sized for as many sessions as
//!    ironpop's default) and popa3d (one process per connection, as inetd
//!    runs it), `IRONPOP_BENCH_ROUNDS` (3) rounds each, interleaved;
//!    `IRONPOP_BENCH_DOVECOT=0` and `IRONPOP_BENCH_POPA3D=0` skip them.
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

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{env_u64, median, percentile, report, Budget};
use loadgen::dovecot::Dovecot;
use loadgen::loopback::client_address;
use loadgen::popa3d::Popa3d;
use loadgen::tls::Pki;
use loadgen::{Client, Server, Setup, CHEAP_HASH, PASSWORD};

const FRESH_P99_BUDGET_MS: f64 = 1000.0;
const SPOOL: &[u8] = b"From a@b Mon Jan  1 00:00:00 2024\n\nhi\n";
const DESCRIPTOR_LIMIT: u64 = 20_000;

/// How long a fresh client of the comparison waits for the connect and
/// for each reply before it counts as failed: far above the budget, so a
/// failure is a refusal or a stall, not a slow answer.
const GIVE_UP: Duration = Duration::from_secs(5);
const GIVE_UP_AFTER: usize = 20;

/// One fresh USER/PASS/STAT/QUIT of `user` from `src`; wall time in ms,
/// or why it failed.
fn fresh_login(addr: SocketAddr, src: Ipv4Addr, user: &str) -> Result<f64, String> {
    let t = Instant::now();
    let mut c = Client::connect_from_within(addr, src, GIVE_UP).map_err(|e| e.to_string())?;
    c.login(user, PASSWORD).map_err(|e| e.to_string())?;
    c.cmd("STAT").map_err(|e| e.to_string())?;
    c.cmd("QUIT").map_err(|e| e.to_string())?;
    c.drain();
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// What a flood did to one server's fresh logins.
struct FloodRun {
    /// Idle connections the server let us open.
    opened: usize,
    /// Fresh logins tried, and the wall times of those that succeeded.
    tried: usize,
    ms: Vec<f64>,
    /// The first failure's reason.
    failure: Option<String>,
}

/// Opens `flood` idle unauthenticated connections to `addr`, each from
/// its own loopback address (they send nothing), then logs `user` in
/// `fresh` times one after another from other addresses; `during` runs
/// while the flood is held (ironpop's memory readings).
fn flood_against(
    addr: SocketAddr,
    user: &str,
    flood: usize,
    fresh: usize,
    during: impl FnOnce(usize),
) -> FloodRun {
    let t = Instant::now();
    let held: Vec<TcpStream> = (0..flood as u32)
        .filter_map(|i| loadgen::connect_within(addr, client_address(i), GIVE_UP).ok())
        .collect();
    println!(
        "  {} of {flood} idle connections open in {:.1} s",
        held.len(),
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(500));
    // A server that stalls would cost GIVE_UP per login: after
    // GIVE_UP_AFTER failures in a row the rest are not tried.
    let mut logins = Vec::with_capacity(fresh);
    let mut in_a_row = 0;
    for i in 0..fresh as u32 {
        let login = fresh_login(addr, client_address(100_000 + i), user);
        in_a_row = if login.is_ok() { 0 } else { in_a_row + 1 };
        logins.push(login);
        if in_a_row == GIVE_UP_AFTER {
            println!("  {GIVE_UP_AFTER} fresh logins failed in a row: the rest are not tried");
            break;
        }
    }
    let run = FloodRun::of(held.len(), logins);
    during(held.len());
    drop(held);
    run
}

/// The flood against ironpop with the default `max_sessions`, and against
/// Dovecot and popa3d as installed (as root), `rounds` times each.
fn flood(flood: usize, fresh: usize, rounds: usize) {
    let accounts = vec![("bench".to_string(), CHEAP_HASH.to_string())];
    let spools = vec![("bench".to_string(), SPOOL.to_vec())];
    let setup = Setup::new(
        &accounts,
        &spools,
        ironpop::limits::DEFAULT_MAX_SESSIONS,
        "",
    );
    let _pki = Pki::new(setup.root());
    setup.settle();
    let server = Server::start(&setup.conf);
    let pid = server.pid();
    let dovecot = if env_u64("IRONPOP_BENCH_DOVECOT", 1) != 0 {
        // Room for as many sessions as ironpop's default allows.
        Dovecot::start(setup.root(), ironpop::limits::DEFAULT_MAX_SESSIONS)
            .inspect_err(|why| println!("Dovecot comparison skipped: {why}"))
            .ok()
    } else {
        None
    };
    let popa3d = if env_u64("IRONPOP_BENCH_POPA3D", 1) != 0 {
        Popa3d::start(SPOOL, CHEAP_HASH)
            .inspect_err(|why| println!("popa3d comparison skipped: {why}"))
            .ok()
    } else {
        None
    };
    let mut targets: Vec<(&str, SocketAddr, String)> =
        vec![("ironpop", server.addr, "bench".to_string())];
    targets.extend(
        dovecot
            .as_ref()
            .map(|d| ("Dovecot", d.addr, "bench".to_string())),
    );
    targets.extend(
        popa3d
            .as_ref()
            .map(|p| ("popa3d (inetd)", p.addr, p.user.clone())),
    );
    let mut runs: Vec<Vec<FloodRun>> = targets.iter().map(|_| Vec::new()).collect();
    let rss0 = loadgen::status_value(pid, "VmRSS");
    for round in 0..rounds {
        for (i, (name, addr, user)) in targets.iter().enumerate() {
            println!("flood round {}: {name}", round + 1);
            let ours = i == 0;
            let run = flood_against(*addr, user, flood, fresh, |held| {
                if ours {
                    ironpop_memory(pid, rss0, held);
                }
            });
            if let Some(p) = popa3d.as_ref().filter(|_| name.starts_with("popa3d")) {
                p.wait_idle();
            }
            // Let the flood's connections close on the server's side.
            std::thread::sleep(Duration::from_secs(1));
            runs[i].push(run);
        }
    }
    for ((name, _, _), runs) in targets.iter().zip(&runs) {
        flood_summary(name, runs);
    }
    let ours: Vec<f64> = runs[0].iter().map(FloodRun::p99).collect();
    report(
        &format!("flood of {flood} idle connections: fresh login p99, worst round"),
        ours.iter().copied().fold(0.0, f64::max),
        "ms",
        Budget::AtMost(FRESH_P99_BUDGET_MS),
    );
    for ((name, _, _), theirs) in targets.iter().zip(&runs).skip(1) {
        let mut theirs: Vec<f64> = theirs.iter().map(FloodRun::p99).collect();
        let ratio = median(&mut theirs) / median(&mut ours.clone());
        println!(
            "{:<44} {name} p99 / ironpop p99, medians over rounds: {ratio:.1}x",
            ""
        );
    }
    if let Some(d) = &dovecot {
        for line in d.log_lines("Error").iter().take(3) {
            println!("dovecot log: {line}");
        }
    }
}

impl FloodRun {
    fn of(opened: usize, logins: Vec<Result<f64, String>>) -> FloodRun {
        let tried = logins.len();
        let mut failure = None;
        let mut ms = Vec::with_capacity(tried);
        for login in logins {
            match login {
                Ok(t) => ms.push(t),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        FloodRun {
            opened,
            tried,
            ms,
            failure,
        }
    }

    /// The 99th percentile over every login tried, a failed one counting
    /// as infinitely slow (to its user it never happened).
    fn p99(&self) -> f64 {
        let mut all = self.ms.clone();
        all.resize(self.tried.max(self.ms.len()), f64::INFINITY);
        percentile(&mut all, 0.99)
    }
}

/// One line per server: ranges over the rounds.
fn flood_summary(name: &str, runs: &[FloodRun]) {
    let range = |f: &dyn Fn(&FloodRun) -> f64| {
        let v: Vec<f64> = runs.iter().map(f).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if (hi - lo).abs() < 1e-9 {
            format!("{lo:.1}")
        } else {
            format!("{lo:.1}–{hi:.1}")
        }
    };
    println!(
        "{name:<16} idle connections open {}; fresh logins ok {} of {}; p50 {} ms; p99 {} ms",
        range(&|r| r.opened as f64),
        range(&|r| r.ms.len() as f64),
        range(&|r| r.tried as f64),
        range(&|r| median(&mut r.ms.clone())),
        range(&FloodRun::p99),
    );
    if let Some(why) = runs.iter().find_map(|r| r.failure.as_ref()) {
        println!("{:<16} first failed login: {why}", "");
    }
}

/// ironpop's memory and threads with `held` idle connections open.
fn ironpop_memory(pid: u32, rss_before: u64, held: usize) {
    let rss = loadgen::status_value(pid, "VmRSS");
    let threads = loadgen::status_value(pid, "Threads");
    report(
        &format!("server RSS with {held} idle connections held"),
        rss as f64 / 1024.0,
        "MiB",
        Budget::None,
    );
    println!(
        "{:<44} {rss_before} KiB before the first flood; {threads} threads",
        ""
    );
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
    let logins = (0..20u32)
        .map(|i| fresh_login(server.addr, client_address(200_000 + i), last))
        .collect();
    let run = FloodRun::of(held.len(), logins);
    flood_summary(&format!("{} held", held.len()), std::slice::from_ref(&run));
    report(
        &format!("{} held sessions: fresh login p99", held.len()),
        run.p99(),
        "ms",
        Budget::AtMost(FRESH_P99_BUDGET_MS),
    );
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
        env_u64("IRONPOP_BENCH_ROUNDS", 3) as usize,
    );
    held_sessions();
}
