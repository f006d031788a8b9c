//! Real POP3 clients against the server: Python's poplib and curl, bytes compared exactly.

use crate::harness::*;
use std::process::Command;
use std::time::Duration;

/// A poplib session printing one record per line; message bodies in hex.
/// poplib strips each line's CRLF and the dot-stuffing, so the script joins
/// the lines with CRLF again: the octets the server meant to send.
const POPLIB_SCRIPT: &str = r#"
import poplib, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
p = poplib.POP3(host, port, timeout=20)
print("welcome", p.getwelcome().decode())
print("user", p.user(user).decode())
print("pass", p.pass_(password).decode())
count, size = p.stat()
print("stat", count, size)
for line in p.list()[1]:
    print("list", line.decode())
for line in p.uidl()[1]:
    print("uidl", line.decode())
for i in range(1, count + 1):
    resp, lines, octets = p.retr(i)
    print("retr", i, octets, b"".join(l + b"\r\n" for l in lines).hex())
    resp, lines, octets = p.top(i, 1)
    print("top", i, b"".join(l + b"\r\n" for l in lines).hex())
print("dele", p.dele(2).decode())
print("quit", p.quit().decode())
"#;

fn hex_decode(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Messages with the features real clients trip over: dot lines, 8-bit
/// bytes, `>From `, a long line.
fn client_messages() -> Vec<Vec<u8>> {
    vec![
        message(1),
        b"Subject: dots\nMessage-ID: <d@example.org>\n\n.\n..two\n.one\nlast\n".to_vec(),
        [
            &b"Subject: bytes\nMessage-ID: <b@example.org>\n\n>From here\n"[..],
            &[0xc3, 0xa4, 0xff, 0x01, b'\t', b'\n'],
            // 990 octets: RFC 5322 allows 998, poplib refuses lines over 2048.
            "x".repeat(990).as_bytes(),
            b"\n",
        ]
        .concat(),
    ]
}

#[test]
fn python_poplib_reads_lists_and_deletes() {
    if !require_tool("python3", &["-c", "import poplib"]) {
        return;
    }
    let msgs = client_messages();
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let out = run(
        Command::new("python3").args([
            "-c",
            POPLIB_SCRIPT,
            "127.0.0.1",
            &s.port().to_string(),
            ALICE.user,
            ALICE.password,
        ]),
        b"",
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "poplib script failed:\n{}\nserver log:\n{}",
        out.all_text(),
        s.log()
    );
    let text = out.stdout_text();
    let sizes: Vec<usize> = msgs.iter().map(|m| crlf(m).len()).collect();
    let mut retrs = 0;
    let mut tops = 0;
    let mut lists = Vec::new();
    let mut uids = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(2, ' ');
        let (key, rest) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        match key {
            "welcome" | "user" | "pass" | "dele" | "quit" => {
                assert!(rest.starts_with("+OK"), "{line}")
            }
            "stat" => assert_eq!(
                rest,
                format!("{} {}", msgs.len(), sizes.iter().sum::<usize>())
            ),
            "list" => lists.push(rest.to_string()),
            "uidl" => uids.push(rest.to_string()),
            "retr" => {
                let v: Vec<&str> = rest.split(' ').collect();
                let n: usize = v[0].parse().expect("n");
                let body = hex_decode(v.get(2).copied().unwrap_or(""));
                assert_bytes_eq(&body, &crlf(&msgs[n - 1]), &format!("poplib RETR {n}"));
                assert_eq!(v[1], sizes[n - 1].to_string(), "poplib octets of {n}");
                retrs += 1;
            }
            "top" => {
                let v: Vec<&str> = rest.split(' ').collect();
                let n: usize = v[0].parse().expect("n");
                let body = hex_decode(v.get(1).copied().unwrap_or(""));
                assert_bytes_eq(&body, &top(&msgs[n - 1], 1), &format!("poplib TOP {n} 1"));
                tops += 1;
            }
            other => panic!("unexpected output {other:?}: {line}"),
        }
    }
    assert_eq!((retrs, tops), (msgs.len(), msgs.len()), "output:\n{text}");
    let want: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} {n}", i + 1))
        .collect();
    assert_eq!(lists, want);
    assert_eq!(uids.len(), msgs.len());
    assert!(text.contains("\nquit +OK"), "{text}");
    assert_bytes_eq(
        &s.read_spool("alice"),
        &mbox_without(&msgs, &[2]),
        "spool after poplib DELE 2",
    );
}

fn curl(args: &[&str]) -> Output {
    let out = run(
        Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .args(args),
        b"",
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        out.all_text()
    );
    out
}

#[test]
fn curl_lists_retrieves_and_deletes() {
    if !require_tool("curl", &["--version"]) {
        return;
    }
    let msgs = client_messages();
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let base = format!(
        "pop3://{}:{}@127.0.0.1:{}",
        ALICE.user,
        ALICE.password,
        s.port()
    );
    // curl prints the LIST body as received (CRLF lines, no final dot line).
    let listing: String = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, crlf(m).len()))
        .collect();
    assert_eq!(curl(&[&format!("{base}/")]).stdout_text(), listing);
    // curl removes the dot-stuffing and the terminating dot line.
    for (i, m) in msgs.iter().enumerate() {
        let out = curl(&[&format!("{base}/{}", i + 1)]);
        assert_bytes_eq(&out.stdout, &crlf(m), &format!("curl RETR {}", i + 1));
    }
    // DELE is a single-line reply: -I keeps curl from waiting for a body.
    curl(&["-X", "DELE 1", "-I", &format!("{base}/")]);
    assert_bytes_eq(
        &s.read_spool("alice"),
        &mbox_without(&msgs, &[1]),
        "spool after curl DELE 1",
    );
    // And the remaining messages are renumbered for the next session.
    let out = curl(&[&format!("{base}/1")]);
    assert_bytes_eq(&out.stdout, &crlf(&msgs[1]), "curl RETR 1 after DELE");
}

/// The messages a maildir delivery wrote, sorted, with CRLF turned into LF
/// (mpop stores local line ends).
fn maildir_messages(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
        .flat_map(|rd| rd.flatten())
        .map(|e| std::fs::read(e.path()).expect("read delivered mail"))
        .map(|m| {
            let mut lf = Vec::with_capacity(m.len());
            for (i, &b) in m.iter().enumerate() {
                if !(b == b'\r' && m.get(i + 1) == Some(&b'\n')) {
                    lf.push(b);
                }
            }
            lf
        })
        .collect();
    out.sort();
    out
}

fn mpop(s: &TestServer, work: &std::path::Path, extra: &[&str]) -> Output {
    let maildir = work.join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    let out = run(
        Command::new("mpop")
            .arg("--host=127.0.0.1")
            .arg(format!("--port={}", s.port()))
            .args([
                "--tls=off",
                "--auth=user",
                "--user=alice",
                "--received-header=off",
            ])
            .arg(format!("--passwordeval=echo {}", ALICE.password))
            .arg(format!("--delivery=maildir,{}", maildir.display()))
            .arg(format!("--uidls-file={}", work.join("uidls").display()))
            .args(extra)
            .env("HOME", work),
        b"",
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "mpop {extra:?} failed:\n{}\nserver log:\n{}",
        out.all_text(),
        s.log()
    );
    out
}

#[test]
fn mpop_fetches_only_new_mail_by_uidl() {
    if !require_tool("mpop", &["--version"]) {
        return;
    }
    let msgs = client_messages();
    let s = ServerBuilder::new().spool("alice", mbox(&msgs)).start();
    let work = tempfile::tempdir().expect("tempdir");
    let mut want: Vec<Vec<u8>> = msgs.clone();
    want.sort();
    mpop(&s, work.path(), &["--keep=on", "--only-new=on"]);
    assert_eq!(
        maildir_messages(&work.path().join("Maildir")),
        want,
        "first fetch"
    );
    // Nothing is new for the second run: the UIDs were stable.
    mpop(&s, work.path(), &["--keep=on", "--only-new=on"]);
    assert_eq!(
        maildir_messages(&work.path().join("Maildir")),
        want,
        "second fetch fetched again"
    );
    // New mail arrives; the third run fetches only it and deletes everything.
    let new = message(42);
    s.append_spool("alice", &mbox_chunk(&new));
    want.push(new);
    want.sort();
    mpop(&s, work.path(), &["--keep=off", "--only-new=on"]);
    assert_eq!(
        maildir_messages(&work.path().join("Maildir")),
        want,
        "third fetch"
    );
    assert_eq!(
        s.read_spool("alice"),
        b"",
        "mpop --keep=off left mail in the spool"
    );
}
