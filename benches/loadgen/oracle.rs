//! The timing oracle, measured: a known user's wrong password against an unknown user, medians within 10 % (reply time and server CPU), for `{PLAIN}`, `$6$` and `$y$` passwd files and for system accounts.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::popa3d::deb_fetch::run;
use super::{
    child_pids, cpu_seconds, on_cpu_ns, plain_secret, status_value, Client, Server, Setup,
    PASSWORD, SHA512_HASH,
};
use crate::common::{median, report, Budget};

/// Accounts per passwd file: all of one kind, so that kind is typical.
const ACCOUNTS: usize = 8;

/// Medians of one sort of failed login: PASS → -ERR as the client sees
/// it, and the server's CPU for it (helpers included), in ms.
#[derive(Clone, Copy)]
pub struct Cost {
    pub reply_ms: f64,
    pub cpu_ms: f64,
}

/// The costs of `user` with a wrong password and of an unknown user,
/// `pairs` of each, alternating, each attempt from its own loopback
/// address (127.`net`.x.y) so the failed-login throttle never blocks one.
/// The server CPU is read exactly (schedstat), so the load of the machine
/// does not decide it the way it can a reply time.
pub fn measure(server: &Server, user: &str, pairs: usize, net: u8) -> (Cost, Cost) {
    let pid = server.pid();
    let mut pids = child_pids(pid);
    pids.push(pid);
    let (mut known, mut unknown) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for k in 0..pairs {
        // Alternate which goes first, so neither always follows the other.
        let order = if k % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for (j, is_known) in order.into_iter().enumerate() {
            let i = 2 * k + j;
            let src = Ipv4Addr::new(127, net, (i / 250) as u8, (i % 250) as u8 + 1);
            let mut c = Client::connect_from(server.addr, src).expect("connect");
            let who = if is_known { user } else { "nobody-such-user" };
            c.cmd(&format!("USER {who}")).expect("USER");
            let cpu0 = on_cpu_ns(&pids);
            let t0 = Instant::now();
            c.send(b"PASS wrong-password\r\n").expect("PASS");
            let reply = c.line().expect("PASS reply");
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let cpu_ms = on_cpu_ns(&pids).saturating_sub(cpu0) as f64 / 1e6;
            assert!(reply.starts_with("-ERR"), "{reply}");
            let into = if is_known { &mut known } else { &mut unknown };
            into.0.push(ms);
            into.1.push(cpu_ms);
        }
    }
    let cost = |(mut reply, mut cpu): (Vec<f64>, Vec<f64>)| Cost {
        reply_ms: median(&mut reply),
        cpu_ms: median(&mut cpu),
    };
    (cost(known), cost(unknown))
}

/// Server CPU per failed USER/PASS of an unknown user (`n` of them), and
/// the peak RSS growth while 64 clients guess at once (each attempt from
/// its own address, 127.`net`.x.y, or the throttle would block them and
/// nothing would be checked).
pub fn guessers(pid: u32, addr: SocketAddr, n: usize, net: u8, passdb: &str) {
    let attempt = move |addr, k: usize| {
        let src = Ipv4Addr::new(127, net, (k / 250) as u8, (k % 250) as u8 + 1);
        let mut c = Client::connect_from(addr, src).expect("connect");
        c.cmd("USER nobody-here").expect("USER");
        c.send(b"PASS guess\r\n").expect("PASS");
        let reply = c.line().expect("PASS reply");
        assert!(reply.starts_with("-ERR"), "{reply}");
    };
    let cpu0 = cpu_seconds(pid);
    for k in 0..n {
        attempt(addr, k);
    }
    std::thread::sleep(Duration::from_millis(50));
    let cpu_ms = (cpu_seconds(pid) - cpu0) * 1e3 / n as f64;
    report(
        &format!("  failed login, unknown user, CPU ({passdb})"),
        cpu_ms,
        "ms",
        Budget::None,
    );
    let rss0 = status_value(pid, "VmRSS");
    let threads: Vec<_> = (0..64)
        .map(|t| std::thread::spawn(move || (0..3).for_each(|i| attempt(addr, n + t * 3 + i))))
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let hwm = status_value(pid, "VmHWM");
    report(
        "  peak RSS growth, 64 concurrent guessers",
        hwm.saturating_sub(rss0) as f64 / 1024.0,
        "MiB",
        Budget::None,
    );
}

fn print(kind: &str, (known, unknown): (Cost, Cost)) {
    let verdict = |known: f64, unknown: f64| {
        let diff = unknown / known - 1.0;
        let ok = if diff.abs() <= 0.10 {
            "ok"
        } else {
            "MISSED (> 10 %)"
        };
        format!("{:+.1} % {ok}", diff * 100.0)
    };
    println!(
        "{:<44} {:>9.3} ms wrong password, {:.3} ms unknown user (p50): {}; server CPU {:.3} / {:.3} ms: {}",
        format!("timing oracle, {kind}"),
        known.reply_ms,
        unknown.reply_ms,
        verdict(known.reply_ms, unknown.reply_ms),
        known.cpu_ms,
        unknown.cpu_ms,
        verdict(known.cpu_ms, unknown.cpu_ms),
    );
}

/// A server whose passwd file holds only entries of `secret`.
fn passwd_server(secret: &str) -> (Setup, Server) {
    let accounts: Vec<(String, String)> = (0..ACCOUNTS)
        .map(|i| (format!("o{i}"), secret.to_string()))
        .collect();
    let setup = Setup::new(&accounts, &[], 64, "");
    let server = Server::start(&setup.conf);
    setup.settle();
    (setup, server)
}

/// Every passdb kind; `pairs` attempts of each sort per kind.
pub fn run_all(pairs: usize) {
    let yescrypt = ironpop::privsep::crypt::hash_password(PASSWORD.as_bytes()).expect("yescrypt");
    let kinds = [
        ("{PLAIN} passwd-file", plain_secret()),
        ("$6$ passwd-file", SHA512_HASH.to_string()),
        ("$y$ passwd-file", yescrypt),
    ];
    for (n, (kind, secret)) in kinds.iter().enumerate() {
        let (_setup, server) = passwd_server(secret);
        // Warm up: the first logins read the file and fault pages in.
        measure(&server, "o0", 3, 200 + n as u8);
        print(kind, measure(&server, "o0", pairs, 20 + n as u8));
        if kind.starts_with("$y$") {
            guessers(server.pid(), server.addr, 20, 40, kind);
        }
    }
    match system_accounts(pairs) {
        Ok(()) => {}
        Err(why) => println!("timing oracle, system accounts: skipped: {why}"),
    }
}

/// A system account with a hash of the method login.defs configures, a
/// server with `passdb = system`, and the same comparison.
fn system_accounts(pairs: usize) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (shadow, useradd)".into());
    }
    let defs = std::fs::read_to_string("/etc/login.defs").unwrap_or_default();
    let method = defs
        .lines()
        .find_map(|l| l.strip_prefix("ENCRYPT_METHOD"))
        .map(|m| m.trim().to_ascii_uppercase());
    let prefix = match method.as_deref() {
        Some("SHA512") => "$6$",
        Some("SHA256") => "$5$",
        Some("MD5") => "$1$",
        _ => "$y$",
    };
    let hash = ironpop::privsep::crypt::hash_with_prefix(PASSWORD.as_bytes(), prefix)
        .map_err(|e| e.to_string())?;
    let account = SystemAccount::create(&format!("ipor{}", std::process::id() % 100_000), &hash)?;
    // A shadow file changed within 2 s is re-read at every unknown login
    // (Stamp::settled): let useradd's edit settle, as a real one has.
    std::thread::sleep(Duration::from_millis(2100));
    let setup = Setup::new(&[], &[], 64, "");
    let conf = std::fs::read_to_string(&setup.conf).map_err(|e| e.to_string())?;
    let conf: String = conf
        .lines()
        .map(|l| {
            if l.starts_with("passdb") {
                "passdb = system\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&setup.conf, conf).map_err(|e| e.to_string())?;
    let server = Server::start(&setup.conf);
    measure(&server, &account.0, 3, 210);
    print(
        &format!("system accounts ({prefix} by login.defs)"),
        measure(&server, &account.0, pairs, 30),
    );
    Ok(())
}

/// A temporary system account, removed on drop.
struct SystemAccount(String);

impl SystemAccount {
    fn create(name: &str, hash: &str) -> Result<SystemAccount, String> {
        let _ = run("userdel", &[name]);
        // Several worktrees may edit /etc/passwd at once: retry a lock failure.
        let mut last = String::new();
        for _ in 0..10 {
            match run(
                "useradd",
                &["-M", "-s", "/usr/sbin/nologin", "-p", hash, name],
            ) {
                Ok(()) => return Ok(SystemAccount(name.to_string())),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Err(last)
    }
}

impl Drop for SystemAccount {
    fn drop(&mut self) {
        let _ = run("userdel", &[&self.0]);
    }
}
