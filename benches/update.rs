//! Cost of a crash-safe UPDATE on a 1 GiB spool: delete-first, delete-last, delete-all (prints timings and ratios).
//!
//! `cargo bench --bench update [-- DIR [MiB]]`: the spool and the state
//! directory go to DIR (default /var/tmp, a disk, so fsync costs what it
//! costs in production). Each case starts from a freshly written spool;
//! the page cache is warm, as it is right after a session read the spool.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironpop::mailbox::state::StateDir;
use ironpop::mailbox::update::{apply, Span};

const MESSAGE: usize = 64 * 1024;

/// A spool of equal messages, and where each one lies.
fn write_spool(path: &Path, total: u64) -> Vec<Span> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut spans = Vec::new();
    let mut at = 0u64;
    let mut n = 0u64;
    let body_line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n";
    while at < total {
        let from =
            format!("From bench@example.org Mon Jan  1 00:00:00 2024\nMessage-ID: <{n}@bench>\n\n");
        let mut msg = from.clone().into_bytes();
        while msg.len() + body_line.len() + 1 < MESSAGE {
            msg.extend_from_slice(body_line);
        }
        msg.push(b'\n');
        f.write_all(&msg).unwrap();
        let first_line = from.find('\n').unwrap() as u64 + 1;
        spans.push(Span {
            from_offset: at,
            content_offset: at + first_line,
            content_len: msg.len() as u64 - first_line - 1,
            end: at + msg.len() as u64,
            raw_hash: xxhash_rust::xxh3::xxh3_128(&msg), // `apply` does not check it
        });
        at += msg.len() as u64;
        n += 1;
    }
    f.into_inner().unwrap().sync_all().unwrap();
    spans
}

fn run(dir: &Path, total: u64, name: &str, pick: impl Fn(usize, usize) -> bool) -> Duration {
    let path = dir.join("bench-spool");
    let state = StateDir::new(dir.join("bench-state"));
    let spans = write_spool(&path, total);
    let deleted: Vec<bool> = (0..spans.len()).map(|i| pick(i, spans.len())).collect();
    let file = File::options().read(true).write(true).open(&path).unwrap();
    let start = Instant::now();
    let new_len = apply(&state, &file, &path, None, &spans, &deleted).unwrap();
    let took = start.elapsed();
    println!(
        "{name:>13}: {:>8.3} s  (new length {} MiB)",
        took.as_secs_f64(),
        new_len >> 20
    );
    std::fs::remove_file(&path).unwrap();
    took
}

fn main() {
    // `cargo bench` passes --bench; anything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let dir = PathBuf::from(args.first().map_or("/var/tmp", String::as_str));
    let mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let total = mib << 20;
    println!(
        "UPDATE on a {mib} MiB spool of 64 KiB messages in {}",
        dir.display()
    );

    // Reference: what rewriting the whole file once costs here.
    let path = dir.join("bench-spool");
    write_spool(&path, total);
    let start = Instant::now();
    let copy = dir.join("bench-copy");
    std::fs::copy(&path, &copy).unwrap();
    File::open(&copy).unwrap().sync_all().unwrap();
    let copy_time = start.elapsed();
    std::fs::remove_file(&copy).unwrap();
    std::fs::remove_file(&path).unwrap();
    println!("{:>13}: {:>8.3} s", "cp + fsync", copy_time.as_secs_f64());

    let first = run(&dir, total, "delete-first", |i, _| i == 0);
    let last = run(&dir, total, "delete-last", |i, n| i + 1 == n);
    let all = run(&dir, total, "delete-all", |_, _| true);
    let ratio = |d: Duration| d.as_secs_f64() / copy_time.as_secs_f64();
    println!(
        "ratios to cp + fsync: delete-first {:.2}, delete-last {:.4}, delete-all {:.4}",
        ratio(first),
        ratio(last),
        ratio(all)
    );
    println!(
        "delete-first / delete-last: {:.0}x",
        first.as_secs_f64() / last.as_secs_f64().max(1e-9)
    );
    let _ = std::fs::remove_dir(dir.join("bench-state"));
}
