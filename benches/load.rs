//! Bench: load generator against the release `ironpop` on loopback, with Dovecot and popa3d compared in the same run.
//!
//! Figures (DESIGN.md "Performance budget"): server CPU per login session
//! (USER/PASS/STAT/QUIT), RETR throughput of a 100 MiB message in plain
//! text, RSS per idle logged-in session, the per-command round trip of
//! sequential and pipelined commands (no 40 ms delayed-ACK stalls); then
//! ironpop, Dovecot and popa3d side by side (compare.rs: `{PLAIN}` and
//! `$6$` logins/s at 4 clients with server CPU per login, implicit TLS,
//! STLS, connect-only, PASS latency, a fresh login while 1000 sessions are
//! held) with ratios and goals; and the timing oracle (oracle.rs). Dovecot
//! and popa3d need root (they are skipped, saying why, otherwise).
//! Environment: `IRONPOP_BENCH_SESSIONS` (2000), `IRONPOP_BENCH_IDLE`
//! (1000), `IRONPOP_BENCH_ROUNDS` (3) rounds of the comparison,
//! `IRONPOP_BENCH_SECS` (3) seconds per throughput figure,
//! `IRONPOP_BENCH_ORACLE_PAIRS` (200) attempts of each sort per passdb in
//! the timing oracle, `IRONPOP_BENCH_POPA3D=0` and `IRONPOP_BENCH_DOVECOT=0`
//! skip those, `IRONPOP_BENCH_ONLY=oracle` runs the timing oracle alone.

#[allow(dead_code)]
mod common;
// Shared with the flood and cluster benches: not every helper is used here.
#[allow(dead_code)]
mod loadgen;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{env_u64, median, percentile, report, Budget, Rng};
use loadgen::compare::{self, Cpu, Target, CLIENTS};
use loadgen::dovecot::Dovecot;
use loadgen::popa3d::{self, Popa3d};
use loadgen::tls::Pki;
use loadgen::{plain_secret, Client, Server, Setup, CHEAP_HASH, PASSWORD, PLAIN_USER, SHA512_HASH};

const CPU_BUDGET_MS: f64 = 0.5;
const RSS_BUDGET_KIB: f64 = 64.0;
const RETR_BUDGET_MB_S: f64 = 1000.0;
/// A round trip this long is a delayed-ACK (or Nagle) stall, not work.
const STALL: Duration = Duration::from_millis(20);

/// A spool of `n` messages of 1–8 KiB.
fn small_spool(n: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for i in 0..n {
        let size = rng.range(1024, 8192) as usize;
        common::mbox_message(&mut rng, i, size, &mut out);
    }
    out
}

/// One USER/PASS/STAT/QUIT session, as a mail client polls.
fn login_session(addr: SocketAddr, user: &str) {
    let mut c = Client::connect(addr).expect("connect");
    c.login(user, PASSWORD).expect("login");
    c.cmd("STAT").expect("STAT");
    c.cmd("QUIT").expect("QUIT");
    c.drain();
}

/// Median round trip in ms of `rounds` sequential `cmd`s (multi-line when
/// `multi`), and how many took longer than [`STALL`].
fn round_trips(c: &mut Client, cmd: &str, multi: bool, rounds: usize) -> (f64, f64, f64, usize) {
    let mut ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        c.cmd(cmd).expect(cmd);
        if multi {
            c.multi().expect("multi-line body");
        }
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let stalls = ms
        .iter()
        .filter(|&&m| m >= STALL.as_secs_f64() * 1e3)
        .count();
    let max = ms.iter().copied().fold(0.0, f64::max);
    (median(&mut ms), percentile(&mut ms, 0.99), max, stalls)
}

/// Batches of `depth` pipelined STATs in one write; median ms per batch.
fn pipelined(c: &mut Client, depth: usize, batches: usize) -> f64 {
    let batch = "STAT\r\n".repeat(depth);
    let mut ms = Vec::new();
    for _ in 0..batches {
        let t = Instant::now();
        c.send(batch.as_bytes()).expect("send batch");
        for _ in 0..depth {
            let l = c.line().expect("reply");
            assert!(l.starts_with("+OK"), "{l}");
        }
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    median(&mut ms)
}

struct Latency {
    stat: f64,
    list: f64,
}

fn latency(name: &str, addr: SocketAddr, user: &str, rounds: usize) -> Latency {
    let mut c = Client::connect(addr).expect("connect");
    c.login(user, PASSWORD).expect("login");
    let (med, p99, max, stalls) = round_trips(&mut c, "STAT", false, rounds);
    report(
        &format!("{name}: STAT round trip, median"),
        med,
        "ms",
        Budget::None,
    );
    println!(
        "{:<44} {p99:>12.3} ms (p99), max {max:.3} ms, {stalls}/{rounds} stalls >= {} ms",
        "",
        STALL.as_millis()
    );
    let (lmed, p99, max, stalls) = round_trips(&mut c, "LIST", true, rounds / 4);
    report(
        &format!("{name}: LIST (100 lines) round trip"),
        lmed,
        "ms",
        Budget::None,
    );
    println!(
        "{:<44} {p99:>12.3} ms (p99), max {max:.3} ms, {stalls}/{} stalls >= {} ms",
        "",
        rounds / 4,
        STALL.as_millis()
    );
    let _ = c.cmd("QUIT");
    Latency {
        stat: med,
        list: lmed,
    }
}

fn main() {
    let oracle_pairs = env_u64("IRONPOP_BENCH_ORACLE_PAIRS", 200) as usize;
    match std::env::var("IRONPOP_BENCH_ONLY").as_deref() {
        Err(_) => {}
        Ok("oracle") => return loadgen::oracle::run_all(oracle_pairs),
        Ok(other) => {
            panic!("IRONPOP_BENCH_ONLY={other:?}: the only part that runs alone is \"oracle\"")
        }
    }
    let sessions = env_u64("IRONPOP_BENCH_SESSIONS", 2000) as usize;
    let idle = env_u64("IRONPOP_BENCH_IDLE", 1000) as usize;
    let nofile = loadgen::raise_nofile();
    let idle = idle.min((nofile as usize).saturating_sub(64) / 2);
    assert!(
        ironpop::privsep::crypt::verify(CHEAP_HASH, PASSWORD.as_bytes()),
        "the bench's precomputed hash matches its password"
    );

    let lat_spool = small_spool(100, 3);
    let mut big = Vec::new();
    common::mbox_message(&mut Rng::new(5), 0, 100 << 20, &mut big);
    let cheap = CHEAP_HASH.to_string();
    let mut accounts: Vec<(String, String)> = vec![
        ("bench".into(), cheap.clone()),
        ("lat".into(), cheap.clone()),
        ("big".into(), cheap),
        (PLAIN_USER.into(), plain_secret()),
    ];
    let mut spools = vec![
        ("bench".to_string(), small_spool(10, 1)),
        ("lat".to_string(), lat_spool.clone()),
        ("big".to_string(), big),
        (PLAIN_USER.to_string(), small_spool(10, 2)),
    ];
    // One mailbox per concurrent client: a second session of a mailbox
    // is [IN-USE] (and Dovecot locks its mbox too).
    let plain_users: Vec<String> = (0..CLIENTS).map(|i| format!("plain{i}")).collect();
    let sha_users: Vec<String> = (0..CLIENTS).map(|i| format!("sha{i}")).collect();
    for (i, u) in plain_users.iter().enumerate() {
        accounts.push((u.clone(), plain_secret()));
        spools.push((u.clone(), small_spool(10, 10 + i as u64)));
    }
    for (i, u) in sha_users.iter().enumerate() {
        accounts.push((u.clone(), SHA512_HASH.to_string()));
        spools.push((u.clone(), small_spool(10, 20 + i as u64)));
    }
    let held_users: Vec<String> = (0..idle).map(|i| format!("u{i}")).collect();
    for (i, u) in held_users.iter().enumerate() {
        accounts.push((u.clone(), plain_secret()));
        spools.push((u.clone(), small_spool(1, 100 + i as u64)));
    }
    let setup = Setup::new(&accounts, &spools, idle + 64, "");
    drop(spools);
    let pki = Pki::new(setup.root());
    setup.append_conf(&format!(
        "listen_tls = 127.0.0.1:0\ntls_cert = {}\ntls_key = {}\n",
        pki.cert.display(),
        pki.key.display()
    ));
    let server = Server::start(&setup.conf);
    let pid = server.pid();
    let addr = server.addr;
    println!(
        "load: ironpop pid {pid} on {addr} and {:?} (TLS), RLIMIT_NOFILE {nofile}",
        server.tls_addr
    );
    setup.settle();

    // ---- CPU per login session
    for _ in 0..100 {
        login_session(addr, "bench");
        login_session(addr, PLAIN_USER);
    }
    let (cpu_ms, wall) = login_cpu_ms(pid, addr, "bench", sessions);
    report(
        "ironpop: server CPU per login session",
        cpu_ms,
        "ms",
        Budget::AtMost(CPU_BUDGET_MS),
    );
    let hash_ms = hash_cost_ms();
    report(
        "  sha256-crypt rounds=1000 in-process, CPU",
        hash_ms,
        "ms",
        Budget::None,
    );
    report(
        "  server CPU per login less that hash, est.",
        cpu_ms - hash_ms,
        "ms",
        Budget::AtMost(CPU_BUDGET_MS),
    );
    // A {PLAIN} entry costs a compare; unknown users cost the passdb's
    // typical check (here {PLAIN}, the most common): what a guesser costs.
    let n = (sessions / 20).max(10);
    let (plain_ms, _) = login_cpu_ms(pid, addr, PLAIN_USER, n);
    report(
        "  login with a {PLAIN} password, CPU",
        plain_ms,
        "ms",
        Budget::None,
    );
    loadgen::oracle::guessers(pid, addr, n, 1, "{PLAIN}-typical passwd-file");
    report(
        "  wall time per sequential session",
        wall.as_secs_f64() * 1e3 / sessions as f64,
        "ms",
        Budget::None,
    );

    // ---- latency
    let ours = latency("ironpop", addr, "lat", 2000);
    let mut c = Client::connect(addr).expect("connect");
    c.login("lat", PASSWORD).expect("login");
    let per_batch = pipelined(&mut c, 100, 50);
    report(
        "ironpop: 100 pipelined STATs, per batch",
        per_batch,
        "ms",
        Budget::None,
    );
    drop(c);

    // ---- RETR throughput
    let mut rates = Vec::new();
    let mut retr_cpu = Vec::new();
    let (user0, sys0) = loadgen::cpu_split(pid);
    let mut sent = 0u64;
    for _ in 0..3 {
        let mut c = Client::connect(addr).expect("connect");
        c.login("big", PASSWORD).expect("login");
        let cpu0 = loadgen::cpu_seconds(pid);
        let t = Instant::now();
        let n = c.retr_raw(1).expect("RETR");
        sent += n;
        let d = t.elapsed();
        retr_cpu.push((loadgen::cpu_seconds(pid) - cpu0) / (n as f64 / 1e9));
        rates.push(n as f64 / d.as_secs_f64() / 1e6);
        let _ = c.cmd("QUIT");
    }
    let best = rates.iter().copied().fold(0.0, f64::max);
    report(
        "ironpop: RETR 100 MiB over loopback",
        best,
        "MB/s",
        Budget::AtLeast(RETR_BUDGET_MB_S),
    );
    println!("{:<44} {:>12.3} MB/s", "  median", median(&mut rates));
    report(
        "  server CPU per GB sent",
        median(&mut retr_cpu),
        "s",
        Budget::None,
    );
    let (user1, sys1) = loadgen::cpu_split(pid);
    let gb = sent as f64 / 1e9;
    println!(
        "{:<44} {:>12.3} s user, {:.3} s system per GB",
        "",
        (user1 - user0) / gb,
        (sys1 - sys0) / gb
    );

    // ---- RSS per idle logged-in session
    if idle > 0 {
        idle_rss(pid, addr, idle);
    }

    // ---- ironpop, Dovecot and popa3d side by side
    let rounds = env_u64("IRONPOP_BENCH_ROUNDS", 3) as usize;
    let secs = env_u64("IRONPOP_BENCH_SECS", 3) as f64;
    let dovecot = if env_u64("IRONPOP_BENCH_DOVECOT", 1) != 0 {
        Dovecot::start(setup.root(), idle + 2 * CLIENTS)
            .inspect_err(|why| println!("Dovecot comparison skipped: {why}"))
            .ok()
    } else {
        None
    };
    let popa3d = if env_u64("IRONPOP_BENCH_POPA3D", 1) != 0 {
        Popa3d::start(&small_spool(10, 1), CHEAP_HASH)
            .inspect_err(|why| println!("popa3d comparison skipped: {why}"))
            .ok()
    } else {
        None
    };
    let mut targets = vec![Target {
        name: "ironpop",
        addr,
        tls_addr: server.tls_addr,
        cpu: Cpu::Tree(Box::new(move || loadgen::cpu_seconds(pid))),
        plain_users: plain_users.clone(),
        sha_users: sha_users.clone(),
        held_users: held_users.clone(),
    }];
    if let Some(d) = &dovecot {
        targets.push(Target {
            name: "Dovecot",
            addr: d.addr,
            tls_addr: Some(d.tls_addr),
            cpu: Cpu::Tree(Box::new(|| d.cpu_seconds())),
            plain_users: plain_users.clone(),
            sha_users: sha_users.clone(),
            held_users: held_users.clone(),
        });
    }
    if let Some(p) = &popa3d {
        targets.push(Target {
            name: "popa3d",
            addr: p.addr,
            tls_addr: None,
            cpu: Cpu::Reaped(p),
            plain_users: vec![p.user.clone()],
            sha_users: vec![p.user.clone()],
            held_users: vec![p.user.clone(); idle],
        });
    }
    println!(
        "\ncompare: {} in the same run, {rounds} round(s), {secs} s per throughput figure; ranges are min-max over rounds, ratios of medians (>1: ironpop better)",
        targets.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
    );
    compare::table(&targets, &pki.client, rounds, secs);
    if idle > 0 {
        compare::held_table(&targets, &pki.client, rounds.min(2), 50);
    }
    if let Some(d) = &dovecot {
        for line in d.log_lines("Error").iter().take(5) {
            println!("dovecot log: {line}");
        }
    }
    if let Some(p) = &popa3d {
        compare_popa3d(p, cpu_ms, &ours, sessions.min(300));
    }
    drop(targets);
    drop(dovecot);
    drop(popa3d);
    drop(server);

    // ---- timing oracle
    println!();
    loadgen::oracle::run_all(oracle_pairs);
}

/// Server CPU ms per USER/PASS/STAT/QUIT session of `user`, and wall time.
fn login_cpu_ms(pid: u32, addr: SocketAddr, user: &str, sessions: usize) -> (f64, Duration) {
    let cpu0 = loadgen::cpu_seconds(pid);
    let t = Instant::now();
    for _ in 0..sessions {
        login_session(addr, user);
    }
    let wall = t.elapsed();
    // Let the last session's logout finish on the server.
    std::thread::sleep(Duration::from_millis(50));
    let cpu = (loadgen::cpu_seconds(pid) - cpu0) * 1e3 / sessions as f64;
    (cpu, wall)
}

/// In-process cost of one verification of the bench's hash (what the
/// server's login spends in libxcrypt).
fn hash_cost_ms() -> f64 {
    let t = loadgen::thread_cpu_seconds();
    for _ in 0..500 {
        std::hint::black_box(ironpop::privsep::crypt::verify(
            CHEAP_HASH,
            PASSWORD.as_bytes(),
        ));
    }
    (loadgen::thread_cpu_seconds() - t) * 1e3 / 500.0
}

fn idle_rss(pid: u32, addr: SocketAddr, idle: usize) {
    let rss0 = loadgen::status_value(pid, "VmRSS");
    let threads0 = loadgen::status_value(pid, "Threads");
    let mut clients = Vec::with_capacity(idle);
    for i in 0..idle {
        let mut c = Client::connect(addr).expect("connect idle session");
        c.login(&format!("u{i}"), PASSWORD).expect("idle login");
        clients.push(c);
    }
    // Every session answered PASS, so it is logged in and idle now.
    std::thread::sleep(Duration::from_millis(200));
    let rss1 = loadgen::status_value(pid, "VmRSS");
    let threads1 = loadgen::status_value(pid, "Threads");
    let per = (rss1.saturating_sub(rss0)) as f64 / idle as f64;
    report(
        &format!("ironpop: RSS per idle session ({idle} open)"),
        per,
        "KiB",
        Budget::AtMost(RSS_BUDGET_KIB),
    );
    println!(
        "{:<44} {rss0} -> {rss1} KiB VmRSS, threads {threads0} -> {threads1}",
        ""
    );
    // A fresh login while the pool is busy with idle clients stays fast.
    let t = Instant::now();
    login_session(addr, "bench");
    report(
        "  fresh login while they idle, wall",
        t.elapsed().as_secs_f64() * 1e3,
        "ms",
        Budget::None,
    );
    drop(clients);
}

fn compare_popa3d(p: &Popa3d, our_cpu_ms: f64, ours: &Latency, sessions: usize) {
    p.set_hash(CHEAP_HASH).expect("usermod -p");
    let addr = p.addr;
    let user = p.user.clone();
    let one = |addr| {
        let mut c = Client::connect(addr).expect("connect popa3d");
        c.login(&user, PASSWORD).expect("popa3d login");
        c.cmd("STAT").expect("STAT");
        c.cmd("QUIT").expect("QUIT");
        c.drain();
    };
    for _ in 0..10 {
        one(addr);
    }
    p.wait_idle();
    let cpu0 = popa3d::children_cpu_seconds();
    for _ in 0..sessions {
        one(addr);
    }
    p.wait_idle();
    let cpu_ms = (popa3d::children_cpu_seconds() - cpu0) * 1e3 / sessions as f64;
    report(
        "popa3d: CPU per login session (process)",
        cpu_ms,
        "ms",
        Budget::None,
    );
    println!(
        "{:<44} {:>12.3} (ironpop / popa3d, same run, {} spool msgs)",
        "  ratio ironpop/popa3d CPU per login",
        our_cpu_ms / cpu_ms,
        100
    );
    let theirs = latency_popa3d(addr, &user);
    println!(
        "{:<44} {:>12.3} (STAT), {:.3} (LIST)",
        "  ratio ironpop/popa3d round trip",
        ours.stat / theirs.stat,
        ours.list / theirs.list
    );
    println!("popa3d sessions run: {}", p.reaped());
}

fn latency_popa3d(addr: SocketAddr, user: &str) -> Latency {
    let mut c = Client::connect(addr).expect("connect popa3d");
    c.login(user, PASSWORD).expect("popa3d login");
    let (med, p99, max, stalls) = round_trips(&mut c, "STAT", false, 200);
    report("popa3d: STAT round trip, median", med, "ms", Budget::None);
    println!(
        "{:<44} {p99:>12.3} ms (p99), max {max:.3} ms, {stalls}/200 stalls",
        ""
    );
    let (lmed, p99, max, stalls) = round_trips(&mut c, "LIST", true, 50);
    report(
        "popa3d: LIST (100 lines) round trip",
        lmed,
        "ms",
        Budget::None,
    );
    println!(
        "{:<44} {p99:>12.3} ms (p99), max {max:.3} ms, {stalls}/50 stalls",
        ""
    );
    let _ = c.cmd("QUIT");
    Latency {
        stat: med,
        list: lmed,
    }
}
