//! Shared bench helpers: a seeded generator, synthetic mbox spools and uniform result lines.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

/// A seeded generator (proptest's ChaCha): the same seed gives the same
/// spools on every run and machine.
pub struct Rng(proptest::test_runner::TestRng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Rng(proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &bytes,
        ))
    }

    pub fn next(&mut self) -> u64 {
        use proptest::prelude::Rng as _;
        self.0.next_u64()
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next() % (hi - lo)
    }
}

/// Body lines as mail carries them: mostly 60–76 columns of text, some
/// quoted, some blank, now and then a line starting with `.` (dot-stuffed
/// by RETR) or `From ` (a mid-message `From ` line, not a separator).
fn body_line(rng: &mut Rng, out: &mut Vec<u8>) {
    const WORDS: &[&[u8]] = &[
        b"the",
        b"mailbox",
        b"server",
        b"message",
        b"delivery",
        b"spool",
        b"of",
        b"and",
        b"retrieve",
        b"quarterly",
        b"report",
        b"attached",
        b"please",
        b"find",
        b"regards",
        b"meeting",
        b"tomorrow",
        b"0x4f3a",
        b"kernel",
        b"latency",
    ];
    match rng.next() % 100 {
        0..=5 => {
            out.push(b'\n');
            return;
        }
        6 => out.extend_from_slice(b"."),
        // After a blank line an MDA quotes it, or it would start a message.
        7 if out.ends_with(b"\n\n") => out.extend_from_slice(b">From the desk of "),
        7 => out.extend_from_slice(b"From the desk of "),
        8..=15 => out.extend_from_slice(b"> "),
        _ => {}
    }
    let target = rng.range(40, 77) as usize;
    let start = out.len();
    while out.len() - start < target {
        let w = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        out.extend_from_slice(w);
        out.push(b' ');
    }
    out.push(b'\n');
}

/// One mbox message (From_ line, headers, blank line, body, separator) of
/// about `size` bytes, appended to `out`.
pub fn mbox_message(rng: &mut Rng, n: u64, size: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"From sender@example.org Mon Jan  1 00:00:00 2024\n");
    out.extend_from_slice(
        format!(
            "Received: from mx{a}.example.org (mx{a}.example.org [192.0.2.{a}])\n\
             \tby mail.example.org with ESMTPS id {n:x}; Mon, 1 Jan 2024 00:00:00 +0000\n\
             Received: from client.example.net by mx{a}.example.org; Mon, 1 Jan 2024\n\
             Date: Mon, 1 Jan 2024 00:{m:02}:00 +0000\n\
             From: Sender <sender@example.org>\n\
             To: user@example.org\n\
             Message-ID: <{n}.{r:x}@example.org>\n\
             Subject: synthetic message {n}\n\
             MIME-Version: 1.0\n\
             Content-Type: text/plain; charset=us-ascii\n\n",
            a = n % 200,
            m = n % 60,
            r = rng.next(),
        )
        .as_bytes(),
    );
    while out.len() - start < size {
        body_line(rng, out);
    }
    // The body's last line must not be blank, or the separator doubles.
    if out.ends_with(b"\n\n") {
        out.pop();
    }
    out.push(b'\n');
}

/// Writes a spool of at least `bytes` bytes of messages sized 1–64 KiB
/// (with a few of 1 MiB), returning the number of messages.
pub fn write_spool(path: &Path, bytes: u64, seed: u64) -> io::Result<u64> {
    let mut rng = Rng::new(seed);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut buf = Vec::with_capacity(2 << 20);
    let (mut written, mut n) = (0u64, 0u64);
    while written < bytes {
        buf.clear();
        let size = if rng.next() % 500 == 0 {
            1 << 20
        } else {
            rng.range(1024, 64 * 1024) as usize
        };
        mbox_message(&mut rng, n, size, &mut buf);
        w.write_all(&buf)?;
        written += buf.len() as u64;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

/// A spool holding one message of about `bytes` bytes.
pub fn write_big_message(path: &Path, bytes: usize, seed: u64) -> io::Result<()> {
    let mut rng = Rng::new(seed);
    let mut buf = Vec::with_capacity(bytes + 4096);
    mbox_message(&mut rng, 0, bytes, &mut buf);
    std::fs::write(path, buf)
}

/// Decimal gigabytes (10^9) per second: how DESIGN.md states its budgets.
pub fn gb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e9
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// Which way a budget points.
#[derive(Clone, Copy)]
pub enum Budget {
    /// The figure must be at least this (throughput).
    AtLeast(f64),
    /// The figure must be at most this (cost, latency).
    AtMost(f64),
    None,
}

/// One result line: `name  value unit  [budget, ratio, ok/MISSED]`.
pub fn report(name: &str, value: f64, unit: &str, budget: Budget) {
    let verdict = match budget {
        Budget::AtLeast(b) => format!(
            "budget >= {b} {unit}: {:.2}x of budget, {}",
            value / b,
            if value >= b { "ok" } else { "MISSED" }
        ),
        Budget::AtMost(b) => format!(
            "budget <= {b} {unit}: {:.2}x of budget, {}",
            value / b,
            if value <= b { "ok" } else { "MISSED" }
        ),
        Budget::None => String::new(),
    };
    println!("{name:<44} {value:>12.3} {unit:<10} {verdict}");
}

/// Environment override for a size or count, e.g. `IRONPOP_BENCH_SCAN_MIB`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
