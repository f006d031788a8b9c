//! `ironpop --demo DIR`: a fresh user's first contact, read with curl and poplib.

use crate::harness::*;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running demo, killed when dropped; its output is collected in a file.
struct Demo {
    child: Child,
    log: PathBuf,
    /// The plain POP3 address it printed (a free port of 127.0.0.1).
    addr: SocketAddr,
}

impl Demo {
    /// Starts the demo on a free loopback port (`--listen 127.0.0.1:0`), so
    /// neither a concurrent test run nor a real demo on 1110 is in the way.
    fn start(dir: &Path, log: PathBuf) -> Demo {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(BIN)
            .arg("--demo")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .current_dir(dir.parent().expect("parent"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start ironpop --demo");
        let mut demo = Demo {
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        demo.addr = demo.wait_instructions();
        demo
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address in the printed `curl pop3://demo:demo@ADDR/1` line,
    /// once something answers there; panics if the demo exits or prints
    /// nothing within 20 s.
    fn wait_instructions(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ironpop --demo exited ({status}):\n{}", self.output());
            }
            let printed = self.output().lines().find_map(|l| {
                let rest = l.trim().strip_prefix("curl pop3://demo:demo@")?;
                rest.strip_suffix("/1")?.parse::<SocketAddr>().ok()
            });
            if let Some(addr) = printed {
                assert_ne!(addr.port(), 0, "the demo printed port 0");
                TcpStream::connect(addr).expect("the demo listens where it says");
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "ironpop --demo printed no curl line after 20 s:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo's spool: the one file under `dir` that holds mbox data.
fn find_spool(dir: &Path) -> PathBuf {
    fn walk(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 4 {
                walk(&p, depth + 1, found);
            } else if p.is_file()
                && std::fs::read(&p)
                    .map(|d| d.starts_with(b"From "))
                    .unwrap_or(false)
            {
                found.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, 0, &mut found);
    assert_eq!(
        found.len(),
        1,
        "expected one mbox spool in the demo dir, found {found:?}"
    );
    found.remove(0)
}

#[test]
fn demo_serves_sample_mail_to_curl_and_poplib_and_reuses_its_dir() {
    let have_curl = require_tool("curl", &["--version"]);
    let have_python = require_tool("python3", &["-c", "import poplib"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let demo = Demo::start(&dir, tmp.path().join("demo-1.log"));
    let port = demo.addr.port();
    assert!(
        demo.output().contains(&format!(
            "python3 -c 'import poplib; p = poplib.POP3(\"127.0.0.1\", {port});"
        )),
        "the demo does not print how to connect with poplib:\n{}",
        demo.output()
    );
    assert!(
        !demo.output().contains(":0/"),
        "the demo printed port 0 rather than the bound port:\n{}",
        demo.output()
    );
    let conf = std::fs::read_to_string(dir.join("ironpop.conf")).expect("demo config");
    assert!(
        conf.contains("listen = 127.0.0.1:1110\n"),
        "--listen is for this run only; the config keeps the documented default:\n{conf}"
    );
    let spool_path = find_spool(&dir);
    let spool = std::fs::read(&spool_path).expect("read demo spool");
    let msgs = split_mbox(&spool);
    assert!(
        msgs.len() >= 2,
        "the demo spool has {} messages",
        msgs.len()
    );

    // Our own client first: sizes match the sample mail.
    let mut c = Client::connect(demo.addr);
    c.greeting();
    c.ok("USER demo");
    c.ok("PASS demo");
    let total: usize = msgs.iter().map(|m| crlf(m).len()).sum();
    assert_eq!(c.ok("STAT"), format!("+OK {} {total}", msgs.len()));
    c.quit();

    if have_curl {
        let out = run(
            Command::new("curl").args([
                "-sS",
                "--max-time",
                "30",
                &format!("pop3://demo:demo@{}/1", demo.addr),
            ]),
            b"",
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "curl: {}", out.all_text());
        assert_bytes_eq(&out.stdout, &crlf(&msgs[0]), "curl RETR 1 from the demo");
    }
    if have_python {
        let script = format!(
            "import poplib\n\
             p = poplib.POP3('127.0.0.1', {port}, timeout=20)\n\
             p.user('demo'); p.pass_('demo')\n\
             resp, lines, octets = p.retr(1)\n\
             print(b''.join(l + b'\\r\\n' for l in lines).hex())\n\
             p.quit()\n"
        );
        let out = run(
            Command::new("python3").args(["-c", &script]),
            b"",
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "poplib: {}", out.all_text());
        let hex = out.stdout_text();
        let hex = hex.trim();
        let body: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        assert_bytes_eq(&body, &crlf(&msgs[0]), "poplib RETR 1 from the demo");
    }
    // Reading mail changes nothing.
    assert_eq!(std::fs::read(&spool_path).expect("spool"), spool);

    // A second run reuses the directory: same files, same mail.
    let files_before = snapshot(&dir);
    drop(demo);
    let demo = Demo::start(&dir, tmp.path().join("demo-2.log"));
    let mut c = Client::connect(demo.addr);
    c.greeting();
    c.ok("USER demo");
    c.ok("PASS demo");
    assert_eq!(c.ok("STAT"), format!("+OK {} {total}", msgs.len()));
    c.quit();
    assert_eq!(
        snapshot(&dir),
        files_before,
        "the second demo run rewrote its files"
    );
    drop(demo);
}

/// Every regular file under `dir` (outside the state directory's lock and
/// journal files, which sessions may create) with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("state") {
                    stack.push(p);
                }
            } else if p.is_file()
                && p.extension()
                    .map(|x| x != "pid" && x != "log")
                    .unwrap_or(true)
            {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}
