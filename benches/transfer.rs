//! Bench: the RETR transfer encoder (LF→CRLF, dot-stuffing) on large messages, in MB/s.
//!
//! Encodes in `limits::WRITE_BUFFER` chunks into one reused buffer, as
//! `MboxMaildrop::write_message` does, for three kinds of content, and then
//! runs `write_message` itself on a 100 MiB message from the page cache
//! into a sink (pread + encode, no socket). DESIGN.md's RETR budget is
//! 1 GB/s over loopback, so the encoder must be well above it.

#[allow(dead_code)]
mod common;

use std::io;
use std::time::Instant;

use common::{gb_per_s, report, Budget, Rng};
use ironpop::limits::WRITE_BUFFER;
use ironpop::mailbox::transfer::Encoder;
use ironpop::mailbox::{Maildrop, MboxMaildrop};

const RETR_BUDGET_GB_S: f64 = 1.0;
const ROUNDS: usize = 5;
const MESSAGE: usize = 100 << 20;

/// Best input rate over `ROUNDS` encodings of `input`, and the output size.
fn encode_rate(input: &[u8]) -> (f64, u64) {
    let mut out = Vec::with_capacity(Encoder::max_output(WRITE_BUFFER) + 2);
    let mut best = 0.0f64;
    let mut produced = 0u64;
    for _ in 0..ROUNDS {
        let mut enc = Encoder::retr();
        produced = 0;
        let t = Instant::now();
        for chunk in input.chunks(WRITE_BUFFER) {
            enc.encode(chunk, &mut out);
            produced += std::hint::black_box(&out).len() as u64;
            out.clear();
        }
        enc.finish(&mut out);
        produced += out.len() as u64;
        out.clear();
        best = best.max(gb_per_s(input.len() as u64, t.elapsed()));
    }
    (best, produced)
}

fn main() {
    let mut rng = Rng::new(11);
    let mut text = Vec::with_capacity(MESSAGE + 4096);
    common::mbox_message(&mut rng, 1, MESSAGE, &mut text);
    let crlf: Vec<u8> = text
        .split(|&b| b == b'\n')
        .flat_map(|l| l.iter().copied().chain(*b"\r\n"))
        .collect();
    // Worst case for a line-at-a-time encoder: every line is ".".
    let dots = b".\n".repeat(MESSAGE / 2);

    for (name, input) in [
        ("encode text, LF line ends", &text),
        ("encode text, stored CRLF", &crlf),
        ("encode worst case (every line \".\")", &dots),
    ] {
        let (rate, out) = encode_rate(input);
        report(
            name,
            rate * 1000.0,
            "MB/s",
            Budget::AtLeast(RETR_BUDGET_GB_S * 1000.0),
        );
        println!(
            "{:<44} {:>12.3} (output/input octets)",
            "  expansion",
            out as f64 / input.len() as f64
        );
    }

    let dir = tempfile::Builder::new()
        .prefix("ironpop-bench-transfer-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("spool");
    std::fs::write(&path, &text).expect("write spool");
    let mut md = MboxMaildrop::open(&path).expect("open maildrop");
    let size = md.messages()[0].size;
    let mut best = 0.0f64;
    for _ in 0..ROUNDS {
        let mut sink = Counter(0);
        let t = Instant::now();
        md.write_message(0, None, &mut sink).expect("write_message");
        best = best.max(gb_per_s(size, t.elapsed()));
        assert!(sink.0 >= size, "RETR sent at least the listed size");
    }
    report(
        "write_message 100 MiB (pread+encode) to sink",
        best * 1000.0,
        "MB/s",
        Budget::AtLeast(RETR_BUDGET_GB_S * 1000.0),
    );
}

/// A sink that counts what it is given.
struct Counter(u64);

impl io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
