//! UIDL compatibility: Debian's real popa3d and ironpop list the same UIDs for the same spool.
//!
//! popa3d is fetched with `apt-get download` and unpacked with `dpkg -x`
//! into a cache directory (it conflicts with other POP3 servers, so it is
//! never installed). It runs inetd-style on stdin/stdout, authenticates
//! system accounts through PAM and reads `/var/mail/USER`, so the test
//! needs root: it creates a temporary account (and popa3d's `popa3d` user
//! and `/var/lib/popa3d` chroot if missing) and removes all of it again.
//! Without what it needs it fails when `CI` is set and is skipped, loudly,
//! otherwise.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use ironpop::mailbox::{Maildrop, MboxMaildrop};
use nix::fcntl::{Flock, FlockArg};

#[path = "../support/deb_fetch.rs"]
mod deb_fetch;
use deb_fetch::{popa3d_binary, run};

const PASSWORD: &str = "Ir0npop-compat-test";

/// Skips (or, under CI, fails) the test for a missing prerequisite.
fn unavailable(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("popa3d compatibility test cannot run: {why}");
    }
    crate::system::not_run(&format!("popa3d: {why} (CI=1 makes this a failure)"));
}

/// Everything the test adds to the system, removed again on drop.
#[derive(Default)]
struct SystemChanges {
    user: Option<String>,
    spool: Option<PathBuf>,
    popa3d_user: bool,
    chroot: Option<PathBuf>,
}

impl Drop for SystemChanges {
    fn drop(&mut self) {
        if let Some(spool) = &self.spool {
            let _ = fs::remove_file(spool);
        }
        if let Some(user) = &self.user {
            let _ = run("userdel", &[user]);
        }
        if self.popa3d_user {
            let _ = run("userdel", &["popa3d"]);
        }
        if let Some(dir) = &self.chroot {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn user_exists(name: &str) -> bool {
    matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
}

/// A message in mbox form with a From_ line and separator.
fn mbox_message(from: &str, message: &[u8]) -> Vec<u8> {
    let mut m = format!("From {from} Mon Jan  1 00:00:00 2024\n").into_bytes();
    m.extend_from_slice(message);
    m.push(b'\n');
    m
}

/// A spool that exercises popa3d's header rules, duplicates, `>From`,
/// odd bytes, long lines across its buffers, and no final newline.
fn test_spool() -> Vec<u8> {
    let mut spool = Vec::new();
    let plain = b"Received: from mx.example.org by mail.example.org; Mon, 1 Jan 2024\n\
Received: from outside by mx.example.org\n\
Delivered-To: bob@example.org\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\n\
Message-ID: <plain@example.org>\n\
Subject: plain\n\nbody\n>From quoted\nFrom not a separator\n";
    spool.extend(mbox_message("a@example.org", plain));
    spool.extend(mbox_message(
        "b@example.org",
        b"date: Tue, 2 Jan 2024\nmessage-id: <lower@x>\n\tfolded\nRECEIVED: from y\n\
  continued\nreceived: second\nSubject: s\n  folded subject\n\nbody\n",
    ));
    spool.extend(mbox_message(
        "c@example.org",
        b"X-Delivery-ID: abc123\nx-delivery-id: not-hashed\nDelivered-To: c@x\n\n\n\nbody after blank lines\n",
    ));
    // Exact duplicates of the first message, and header-less-ish ones that
    // all hash to MD5 of nothing.
    spool.extend(mbox_message("a@example.org", plain));
    spool.extend(mbox_message(
        "d@example.org",
        b"Subject: no fixed headers\n\none\n",
    ));
    spool.extend(mbox_message("a@example.org", plain));
    spool.extend(mbox_message(
        "e@example.org",
        b"Subject: also none\n\ntwo\n",
    ));
    // CRLF: "\r\n" does not end popa3d's header, so body lines count.
    spool.extend(mbox_message(
        "f@example.org",
        b"Message-ID: <crlf@x>\r\nSubject: crlf\r\n\r\nDate: in the body\r\nbody\r\n",
    ));
    // 8-bit and NUL bytes, and a header line far longer than popa3d's
    // line buffer, pushed across its file buffer boundaries.
    let mut odd = b"Message-ID: <\xe4\xf6\x00@x>\nReceived: from ".to_vec();
    odd.extend_from_slice(&[b'x'; 70_000]);
    odd.extend_from_slice(b"\nSubject: \xff\n\n\x00\x80 body\n");
    spool.extend(mbox_message("g@example.org", &odd));
    let mut big = b"Message-ID: <big@x>\n\n".to_vec();
    for i in 0..5000 {
        big.extend_from_slice(
            format!("line {i} of a long body, some filler text here\n").as_bytes(),
        );
    }
    spool.extend(mbox_message("h@example.org", &big));
    spool.extend(mbox_message(
        "i@example.org",
        b"Date: after big\nMessage-ID: <i@x>\n\nbody\n",
    ));
    // Last message without a final newline (and so without separator).
    spool.extend_from_slice(
        b"From j@example.org Mon Jan  1 00:00:00 2024\nMessage-ID: <last@x>\n\nno final newline",
    );
    spool
}

/// Runs popa3d as `user` and returns its UIDL listing, in order.
fn popa3d_uidl(bin: &Path, user: &str) -> Result<Vec<String>, String> {
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run popa3d: {e}"))?;
    let script = format!("USER {user}\r\nPASS {PASSWORD}\r\nUIDL\r\nQUIT\r\n");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to popa3d: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for popa3d: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    // Replies: greeting, USER, PASS, then UIDL's "+OK", listing, ".".
    if lines.len() < 4 || !lines[..4].iter().all(|l| l.starts_with("+OK")) {
        return Err(format!("popa3d did not log in or list: {text:?}"));
    }
    let mut uids = Vec::new();
    for (n, line) in lines[4..].iter().take_while(|l| **l != ".").enumerate() {
        let (num, uid) = line
            .split_once(' ')
            .ok_or_else(|| format!("bad UIDL line from popa3d: {line:?}"))?;
        assert_eq!(num, (n + 1).to_string(), "popa3d numbering");
        uids.push(uid.to_string());
    }
    Ok(uids)
}

#[test]
fn popa3d_and_ironpop_list_the_same_uids() {
    // popa3d authenticates system accounts: root only.
    require_root!();
    // One run at a time per machine: the accounts and the chroot are global.
    let lock_path = std::env::temp_dir().join("ironpop-popa3d-compat.lock");
    let Ok(lock_file) = File::create(&lock_path) else {
        return unavailable("cannot create the lock file in the temp directory");
    };
    let Ok(_lock) = Flock::lock(lock_file, FlockArg::LockExclusive) else {
        return unavailable("cannot lock the lock file");
    };
    let bin = match popa3d_binary() {
        Ok(b) => b,
        Err(e) => return unavailable(&e),
    };
    let mut changes = SystemChanges::default();
    if !user_exists("popa3d") {
        if let Err(e) = run(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "popa3d",
            ],
        ) {
            return unavailable(&e);
        }
        changes.popa3d_user = true;
    }
    let chroot = Path::new("/var/lib/popa3d");
    if !chroot.is_dir() {
        if let Err(e) = fs::create_dir_all(chroot) {
            return unavailable(&format!("cannot create {}: {e}", chroot.display()));
        }
        changes.chroot = Some(chroot.to_path_buf());
    }
    let user = format!("ipcmp{}", std::process::id() % 100_000);
    if user_exists(&user) {
        let _ = run("userdel", &[&user]);
    }
    if let Err(e) = run("useradd", &["-M", "-s", "/usr/sbin/nologin", &user]) {
        return unavailable(&e);
    }
    changes.user = Some(user.clone());
    let chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut i) = c.stdin.take() {
                i.write_all(format!("{user}:{PASSWORD}\n").as_bytes())?;
            }
            c.wait()
        });
    if !chpasswd.is_ok_and(|s| s.success()) {
        return unavailable("chpasswd failed");
    }

    let spool_path = Path::new("/var/mail").join(&user);
    let spool = test_spool();
    fs::create_dir_all("/var/mail").expect("create /var/mail");
    fs::write(&spool_path, &spool).expect("write the spool");
    changes.spool = Some(spool_path.clone());
    let account = nix::unistd::User::from_name(&user)
        .ok()
        .flatten()
        .expect("the new account exists");
    nix::unistd::chown(&spool_path, Some(account.uid), None).expect("chown the spool");
    fs::set_permissions(&spool_path, fs::Permissions::from_mode(0o600)).expect("chmod");
    // popa3d waits a second when the spool's mtime is the current second.
    File::options()
        .write(true)
        .open(&spool_path)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(60)))
        .expect("set the spool's mtime");

    let theirs = popa3d_uidl(&bin, &user).expect("popa3d's UIDL listing");
    let ours: Vec<String> = MboxMaildrop::open(&spool_path)
        .expect("ironpop opens the spool")
        .messages()
        .iter()
        .map(|m| m.uid.clone())
        .collect();

    assert_eq!(theirs.len(), 12, "popa3d found {} messages", theirs.len());
    assert_eq!(ours.len(), theirs.len(), "message counts differ");
    // popa3d repeats a UID for duplicates; ironpop adds -2, -3, ...
    let mut seen = std::collections::HashMap::new();
    let mut duplicates = 0;
    for (n, (o, t)) in ours.iter().zip(&theirs).enumerate() {
        let count = seen.entry(t.clone()).or_insert(0);
        *count += 1;
        let expected = if *count == 1 {
            t.clone()
        } else {
            duplicates += 1;
            format!("{t}-{count}")
        };
        assert_eq!(o, &expected, "message {}", n + 1);
    }
    assert_eq!(duplicates, 3, "the spool exercises duplicates");
    // The spool was only read.
    assert_eq!(fs::read(&spool_path).expect("read the spool"), spool);
    drop(changes);
    assert!(!user_exists(&user), "the test account was removed");
}
