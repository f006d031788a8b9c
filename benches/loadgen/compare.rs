//! ironpop, Dovecot and popa3d side by side in one run: logins/s with `{PLAIN}` and `$6$`, over implicit TLS and STLS, connect-only, a fresh login while sessions are held; each figure with its ratios and goal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use super::popa3d::{self, Popa3d};
use super::tls::{Conn, Transport};
use super::{CHEAP_HASH, PASSWORD, SHA512_HASH};
use crate::common::{median, percentile};

/// Concurrent clients of the throughput figures.
pub const CLIENTS: usize = 4;

/// Where a server's CPU time is read.
pub enum Cpu<'a> {
    /// A daemon and the processes under it (ironpop's helpers, Dovecot's
    /// login, auth and pop3 processes).
    Tree(Box<dyn Fn() -> f64 + 'a>),
    /// popa3d: one process per session, reaped by the bench's harness.
    Reaped(&'a Popa3d),
}

/// One server under comparison.
pub struct Target<'a> {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Implicit TLS; `None` when the server has none (popa3d).
    pub tls_addr: Option<SocketAddr>,
    pub cpu: Cpu<'a>,
    /// Accounts with a `{PLAIN}` password (one per client), and with a
    /// `$6$` one; popa3d has one system account whose hash is switched.
    pub plain_users: Vec<String>,
    pub sha_users: Vec<String>,
    /// Held sessions' accounts.
    pub held_users: Vec<String>,
}

/// What one scenario measured on one server.
#[derive(Clone, Copy, Default)]
pub struct Run {
    pub per_s: f64,
    pub cpu_ms: f64,
    pub p50_ms: f64,
}

impl Target<'_> {
    fn cpu_now(&self) -> f64 {
        match &self.cpu {
            Cpu::Tree(f) => f(),
            Cpu::Reaped(_) => popa3d::children_cpu_seconds(),
        }
    }

    /// Waits until the sessions so far are over on the server's side
    /// (popa3d: reaped, so that their CPU time is counted).
    fn settle(&self) {
        match &self.cpu {
            Cpu::Tree(_) => thread::sleep(Duration::from_millis(100)),
            Cpu::Reaped(p) => p.wait_idle(),
        }
    }

    /// popa3d reads the system account: its hash decides the scenario.
    fn use_hash(&self, hash: &str) {
        if let Cpu::Reaped(p) = &self.cpu {
            p.set_hash(hash).expect("usermod -p");
        }
    }
}

/// One session: connect (with TLS as asked), USER/PASS/STAT/QUIT, or
/// only the greeting and QUIT when `user` is `None`.
fn session(
    addr: SocketAddr,
    transport: Transport,
    tls: &Arc<ClientConfig>,
    user: Option<&str>,
) -> std::io::Result<()> {
    let mut c = Conn::open(addr, transport, Some(tls))?;
    if let Some(user) = user {
        c.login(user, PASSWORD)?;
        c.cmd("STAT")?;
    }
    c.quit()
}

/// [`CLIENTS`] clients looping sessions for `secs`.
pub fn throughput(
    t: &Target,
    users: &[String],
    transport: Transport,
    tls: &Arc<ClientConfig>,
    login: bool,
    secs: f64,
) -> Option<Run> {
    let addr = match transport {
        Transport::Implicit => t.tls_addr?,
        _ => t.addr,
    };
    t.settle();
    let cpu0 = t.cpu_now();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let results: Vec<Vec<f64>> = thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let user = users.get(i % users.len().max(1)).cloned();
                s.spawn(move || {
                    let mut ms = Vec::new();
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        let who = if login { user.as_deref() } else { None };
                        if let Err(e) = session(addr, transport, tls, who) {
                            eprintln!("session failed: {e}");
                            thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                        ms.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                    ms
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = results.into_iter().flatten().collect();
    let n = all.len();
    if n == 0 {
        return None;
    }
    t.settle();
    let cpu = t.cpu_now() - cpu0;
    Some(Run {
        per_s: n as f64 / wall,
        cpu_ms: cpu * 1e3 / n.max(1) as f64,
        p50_ms: median(&mut all),
    })
}

/// PASS → +OK, one client, sequential: median ms.
pub fn pass_latency(t: &Target, user: &str, tls: &Arc<ClientConfig>, n: usize) -> Run {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = Conn::open(t.addr, Transport::Plain, Some(tls)).expect("connect");
        c.cmd(&format!("USER {user}")).expect("USER");
        let t0 = Instant::now();
        c.cmd(&format!("PASS {PASSWORD}")).expect("PASS");
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        c.quit().expect("QUIT");
    }
    Run {
        p50_ms: median(&mut ms),
        ..Run::default()
    }
}

/// Connect → PASS +OK of `n` fresh logins while `held` logged-in
/// sessions stay open: median and p90 ms.
pub fn fresh_login_while_held(
    t: &Target,
    tls: &Arc<ClientConfig>,
    n: usize,
) -> Result<(f64, f64), String> {
    let mut held = Vec::with_capacity(t.held_users.len());
    for user in &t.held_users {
        let mut c = Conn::open(t.addr, Transport::Plain, Some(tls))
            .map_err(|e| format!("held session {}: {e}", held.len()))?;
        c.login(user, PASSWORD)
            .map_err(|e| format!("held login {}: {e}", held.len()))?;
        held.push(c);
    }
    thread::sleep(Duration::from_millis(300));
    let user = &t.plain_users[0];
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let mut c = Conn::open(t.addr, Transport::Plain, Some(tls)).map_err(|e| e.to_string())?;
        c.login(user, PASSWORD).map_err(|e| e.to_string())?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        c.quit().map_err(|e| e.to_string())?;
    }
    drop(held);
    Ok((median(&mut ms), percentile(&mut ms, 0.9)))
}

/// Figures of one row, per server, over the rounds.
struct Row {
    name: String,
    unit: &'static str,
    /// Per target: the values of each round.
    values: Vec<Vec<f64>>,
    /// Higher is better (throughput) or lower (cost, latency).
    higher_better: bool,
    goal: Option<Goal>,
}

#[derive(Clone, Copy)]
enum Goal {
    /// ironpop ≥ factor × Dovecot.
    TimesDovecot(f64),
    /// ironpop ≤ the value.
    AtMost(f64),
}

fn range(v: &[f64]) -> String {
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        return "—".into();
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let fmt = |x: f64| {
        if x >= 100.0 {
            format!("{x:.0}")
        } else if x >= 1.0 {
            format!("{x:.2}")
        } else {
            format!("{x:.3}")
        }
    };
    if finite.len() == 1 || (hi - lo).abs() < 1e-9 {
        fmt(lo)
    } else {
        format!("{}–{}", fmt(lo), fmt(hi))
    }
}

fn med(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    median(&mut v)
}

impl Row {
    fn print(&self, names: &[&str]) {
        let mut line = format!("{:<40}", format!("{} ({})", self.name, self.unit));
        for v in &self.values {
            line.push_str(&format!(" {:>15}", range(v)));
        }
        let ours = med(&self.values[0]);
        // ironpop's advantage, ">1 is better" whichever way the unit points.
        for (i, v) in self.values.iter().enumerate().skip(1) {
            let theirs = med(v);
            let ratio = if self.higher_better {
                ours / theirs
            } else {
                theirs / ours
            };
            if ratio.is_finite() {
                line.push_str(&format!("  {:>6.1}x {}", ratio, names[i]));
            }
        }
        match self.goal {
            Some(Goal::TimesDovecot(k)) => {
                let dovecot = names.iter().position(|n| *n == "Dovecot");
                let r = dovecot.map_or(f64::NAN, |i| ours / med(&self.values[i]));
                let verdict = if !r.is_finite() {
                    "no Dovecot figure"
                } else if r >= k {
                    "ok"
                } else {
                    "MISSED"
                };
                line.push_str(&format!("  [goal >= {k}x Dovecot: {verdict}]"));
            }
            Some(Goal::AtMost(b)) => {
                let verdict = if ours <= b { "ok" } else { "MISSED" };
                line.push_str(&format!("  [goal <= {b} {}: {verdict}]", self.unit));
            }
            None => {}
        }
        println!("{line}");
    }
}

/// Runs every scenario `rounds` times on every target and prints one
/// table. Target 0 is ironpop, target 1 Dovecot (when available).
pub fn table(targets: &[Target], tls: &Arc<ClientConfig>, rounds: usize, secs: f64) {
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let n = targets.len();
    let row = |name: &str, unit, higher_better, goal| Row {
        name: name.into(),
        unit,
        values: vec![Vec::new(); n],
        higher_better,
        goal,
    };
    let mut rows = vec![
        row(
            "{PLAIN} logins/s, 4 clients",
            "/s",
            true,
            Some(Goal::TimesDovecot(10.0)),
        ),
        row(
            "  server CPU per login, helpers incl.",
            "ms",
            false,
            Some(Goal::AtMost(0.5)),
        ),
        row("  session p50, 4 clients", "ms", false, None),
        row(
            "$6$ logins/s, 4 clients",
            "/s",
            true,
            Some(Goal::TimesDovecot(1.5)),
        ),
        row("  server CPU per login", "ms", false, None),
        row(
            "implicit TLS {PLAIN} logins/s, 4 cl.",
            "/s",
            true,
            Some(Goal::TimesDovecot(3.0)),
        ),
        row("  server CPU per login", "ms", false, None),
        row(
            "STLS {PLAIN} logins/s, 4 clients",
            "/s",
            true,
            Some(Goal::TimesDovecot(3.0)),
        ),
        row("  server CPU per login", "ms", false, None),
        row("connect+greeting+QUIT/s, 4 clients", "/s", true, None),
        row("PASS -> +OK {PLAIN}, 1 client, p50", "ms", false, None),
    ];
    for round in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            let mut put = |r: usize, v: Option<f64>| rows[r].values[i].push(v.unwrap_or(f64::NAN));
            t.use_hash(CHEAP_HASH);
            let plain = throughput(t, &t.plain_users, Transport::Plain, tls, true, secs);
            put(0, plain.map(|r| r.per_s));
            put(1, plain.map(|r| r.cpu_ms));
            put(2, plain.map(|r| r.p50_ms));
            t.use_hash(SHA512_HASH);
            let sha = throughput(t, &t.sha_users, Transport::Plain, tls, true, secs);
            put(3, sha.map(|r| r.per_s));
            put(4, sha.map(|r| r.cpu_ms));
            t.use_hash(CHEAP_HASH);
            let implicit = throughput(t, &t.plain_users, Transport::Implicit, tls, true, secs);
            put(5, implicit.map(|r| r.per_s));
            put(6, implicit.map(|r| r.cpu_ms));
            let stls = t
                .tls_addr
                .and_then(|_| throughput(t, &t.plain_users, Transport::Stls, tls, true, secs));
            put(7, stls.map(|r| r.per_s));
            put(8, stls.map(|r| r.cpu_ms));
            let connect = throughput(t, &[], Transport::Plain, tls, false, secs);
            put(9, connect.map(|r| r.per_s));
            put(
                10,
                Some(pass_latency(t, &t.plain_users[0], tls, 100).p50_ms),
            );
        }
        println!("compare: round {} of {rounds} done", round + 1);
    }
    println!();
    println!(
        "{:<40}{}",
        "figure (unit)",
        names
            .iter()
            .map(|n| format!(" {n:>15}"))
            .collect::<String>()
    );
    for r in &rows {
        r.print(&names);
    }
    println!("(popa3d has no {{PLAIN}} passdb: its system account has the cheapest crypt hash, $5$ rounds=1000, in the {{PLAIN}} rows; it has no TLS)");
}

/// The fresh-login figure while sessions are held, for every target.
pub fn held_table(targets: &[Target], tls: &Arc<ClientConfig>, rounds: usize, n: usize) {
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let held = targets[0].held_users.len();
    let mut p50 = Row {
        name: format!("fresh {{PLAIN}} login, {held} sessions held, p50"),
        unit: "ms",
        values: vec![Vec::new(); targets.len()],
        higher_better: false,
        goal: Some(Goal::AtMost(2.0)),
    };
    let mut p90 = Row {
        name: "  p90".into(),
        unit: "ms",
        values: vec![Vec::new(); targets.len()],
        higher_better: false,
        goal: None,
    };
    for _ in 0..rounds {
        for (i, t) in targets.iter().enumerate() {
            t.use_hash(CHEAP_HASH);
            match fresh_login_while_held(t, tls, n) {
                Ok((a, b)) => {
                    p50.values[i].push(a);
                    p90.values[i].push(b);
                }
                Err(e) => {
                    println!("{}: held sessions failed: {e}", t.name);
                    p50.values[i].push(f64::NAN);
                    p90.values[i].push(f64::NAN);
                }
            }
            t.settle();
        }
    }
    p50.print(&names);
    p90.print(&names);
}
