//! Bench: logins to a 1 GB / 100 000-message spool with the spool index — first, later, and after 100 new messages.
//!
//! Each figure is PASS → `+OK` plus STAT, on loopback against the release
//! `ironpop`, the spool in the page cache (issue 15's budget: later
//! logins ≤ 30 ms, with or without 100 messages appended; the first login,
//! which builds the index, ≤ 0.3 s). Also the index size per message.
//! As root, Dovecot (benches/loadgen/dovecot.rs) then serves its own copy
//! of the same spool and is measured the same way, with the ratios.
//! Environment: `IRONPOP_BENCH_REOPEN_MESSAGES` (100000),
//! `IRONPOP_BENCH_REOPEN_ROUNDS` (10), `IRONPOP_BENCH_DOVECOT=0` skips
//! Dovecot.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod loadgen;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::Arc;
use std::time::Duration;

use common::{env_u64, median, report, Budget, Rng};
use ironpop::config::LockMethod;
use ironpop::mailbox::delivery_lock::LockPolicy;
use ironpop::mailbox::indexed_scan::ScanKind;
use ironpop::mailbox::mbox::MboxSettings;
use ironpop::mailbox::state::StateDir;
use ironpop::mailbox::{MailPolicy, MboxMaildrop};
use loadgen::dovecot::Dovecot;
use loadgen::tls::Pki;
use loadgen::{Client, Server, Setup, CHEAP_HASH, PASSWORD};

const USER: &str = "reopen";
const LATER_BUDGET_MS: f64 = 30.0;
const FIRST_BUDGET_MS: f64 = 300.0;

/// Messages of 1–20 KiB (10.7 KB on average: 100 000 make 1.07 GB).
fn write_messages(path: &Path, first: u64, count: u64, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open spool");
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut bytes = 0;
    for n in first..first + count {
        buf.clear();
        let size = rng.range(1024, 20 * 1024) as usize;
        common::mbox_message(&mut rng, n, size, &mut buf);
        w.write_all(&buf).expect("write spool");
        bytes += buf.len() as u64;
    }
    w.flush().expect("flush spool");
    bytes
}

/// Milliseconds from sending PASS to STAT's reply.
fn login_ms(addr: SocketAddr) -> f64 {
    let mut c = Client::connect(addr).expect("connect");
    c.cmd(&format!("USER {USER}")).expect("USER");
    let t = Instant::now();
    let ok = c.cmd(&format!("PASS {PASSWORD}")).expect("PASS");
    assert!(ok.starts_with("+OK"), "{ok}");
    let stat = c.cmd("STAT").expect("STAT");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(stat.starts_with("+OK"), "{stat}");
    c.cmd("QUIT").expect("QUIT");
    c.drain();
    ms
}

fn summary(name: &str, mut v: Vec<f64>, budget: f64) {
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    let med = median(&mut v);
    println!("{name}: min {min:.1} ms, median {med:.1} ms, max {max:.1} ms");
    report(name, med, "ms", Budget::AtMost(budget));
}

fn index_file(state: &Path) -> Option<PathBuf> {
    std::fs::read_dir(state)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "index"))
}

/// Later logins to the spool at `spool` served at `addr`: `rounds` with
/// nothing new, then `rounds` each after appending 100 messages (numbered
/// from `next`).
fn later_logins(addr: SocketAddr, spool: &Path, rounds: usize, next: u64) -> (Vec<f64>, Vec<f64>) {
    let later: Vec<f64> = (0..rounds).map(|_| login_ms(addr)).collect();
    let appended = (0..rounds)
        .map(|round| {
            let first = next + 100 * round as u64;
            write_messages(spool, first, 100, 1000 + round as u64);
            login_ms(addr)
        })
        .collect();
    (later, appended)
}

/// Dovecot on its own copy of the same spool (it rewrites an mbox on first
/// access), measured the same way right after ironpop; `ironpop` holds
/// ironpop's (nothing new, 100 appended) figures for the ratios.
fn dovecot_same_run(setup: &Setup, rounds: usize, ironpop: (Vec<f64>, Vec<f64>)) {
    let _pki = Pki::new(setup.root());
    let dovecot = match Dovecot::start(setup.root(), 4) {
        Ok(d) => d,
        Err(e) => {
            println!("Dovecot not measured: {e}");
            return;
        }
    };
    let spool = setup.root().join("dovecot/mail").join(USER);
    let messages = split_count(&spool);
    let first = login_ms(dovecot.addr);
    println!("Dovecot first login (builds its index, rewrites the mbox): {first:.0} ms");
    let (later, appended) = later_logins(dovecot.addr, &spool, rounds, 10_000_000);
    for (name, mut ours, mut theirs) in [
        ("nothing new", ironpop.0, later),
        ("100 appended", ironpop.1, appended),
    ] {
        let (a, b) = (median(&mut ours), median(&mut theirs));
        let min = theirs.iter().copied().fold(f64::MAX, f64::min);
        println!(
            "Dovecot later login, {name}: min {min:.1} ms, median {b:.1} ms; \
             ironpop/Dovecot median ratio {:.2}",
            a / b
        );
    }
    println!("(Dovecot's copy held {messages} messages)");
}

/// Messages in an mbox file (lines starting `From ` after a blank line).
fn split_count(path: &Path) -> usize {
    let data = std::fs::read(path).unwrap_or_default();
    memchr::memmem::find_iter(&data, b"\n\nFrom ").count() + usize::from(data.starts_with(b"From "))
}

fn main() {
    let messages = env_u64("IRONPOP_BENCH_REOPEN_MESSAGES", 100_000);
    let rounds = env_u64("IRONPOP_BENCH_REOPEN_ROUNDS", 10) as usize;
    let accounts = [(USER.to_string(), CHEAP_HASH.to_string())];
    let setup = Setup::new(&accounts, &[(USER.to_string(), Vec::new())], 4, "");
    let root = setup.conf.parent().expect("setup dir").to_path_buf();
    let spool = root.join("mail").join(USER);
    let state = root.join("state");
    let bytes = write_messages(&spool, 0, messages, 15);
    if nix::unistd::geteuid().is_root() {
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(&spool, nobody, None).expect("chown spool");
    }
    // Into the page cache, as a spool that is polled every few minutes is.
    std::io::copy(
        &mut File::open(&spool).expect("spool"),
        &mut std::io::sink(),
    )
    .unwrap();
    println!("spool: {messages} messages, {:.2} GB", bytes as f64 / 1e9);
    setup.settle();
    let server = Server::start(&setup.conf);
    let mut first = Vec::new();
    for _ in 0..3 {
        if let Some(index) = index_file(&state) {
            std::fs::remove_file(index).expect("remove index");
        }
        first.push(login_ms(server.addr));
    }
    summary(
        "first login (full scan, builds the index)",
        first,
        FIRST_BUDGET_MS,
    );
    let index = index_file(&state).expect("the first login wrote an index");
    let size = std::fs::metadata(&index).expect("index").len();
    println!(
        "index: {size} bytes, {:.1} bytes per message",
        size as f64 / messages as f64
    );
    let (later, appended) = later_logins(server.addr, &spool, rounds, messages);
    summary("later login, nothing new", later.clone(), LATER_BUDGET_MS);
    summary(
        "later login, 100 messages appended",
        appended.clone(),
        LATER_BUDGET_MS,
    );
    if env_u64("IRONPOP_BENCH_DOVECOT", 1) != 0 {
        dovecot_same_run(&setup, rounds, (later, appended));
    }
    drop(server);
    // The same open in-process, without the network, the session and the
    // password check: what the index itself costs.
    let settings = Arc::new(MboxSettings {
        state: StateDir::new(&state),
        locks: LockPolicy {
            methods: vec![LockMethod::Fcntl],
            timeout: Duration::from_secs(10),
        },
        policy: MailPolicy::default(),
    });
    let opens: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let md = MboxMaildrop::open_locked(&spool, settings.clone()).expect("open");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(md.scan_kind(), Some(ScanKind::Unchanged));
            ms
        })
        .collect();
    summary("in-process open with the index", opens, LATER_BUDGET_MS);
}
