//! Crashes and other programs against the real binary (issue 9): SIGKILL during QUIT then a restart, inspected before any login; a local reader and an MDA during a session; a small state_dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::Rng;
use crate::harness::{self, Client, ServerBuilder, BOB};
use crate::safety::{config_in, Process};

/// One raw mbox message (From_ line to the blank line after it).
fn chunk(n: usize, body_lines: usize) -> Vec<u8> {
    let mut m =
        format!("Message-ID: <{n}.crash@example.org>\nSubject: message {n}\n\n").into_bytes();
    for l in 0..body_lines {
        m.extend_from_slice(
            format!("message {n:05} line {l:03} ..............................\n").as_bytes(),
        );
    }
    harness::mbox_chunk(&m)
}

/// Delivers `message` with procmail into `spool` and returns how long it
/// took (`LOCKSLEEP`: seconds between dotlock attempts).
fn procmail(spool: &Path, rc: &Path, message: &[u8], locksleep: u32) -> std::process::Child {
    let mut child = Command::new("procmail")
        .arg("-m")
        .arg(format!("LOCKSLEEP={locksleep}"))
        .arg(format!("DEFAULT={}", spool.display()))
        .arg(rc)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run procmail");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(message).unwrap();
    child
}

fn has_journal(state: &Path) -> bool {
    std::fs::read_dir(state).is_ok_and(|d| {
        d.map_while(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".journal"))
    })
}

/// Outcome counts of a SIGKILL loop.
#[derive(Debug, Default)]
struct Outcomes {
    complete: usize,
    untouched: usize,
}

/// The loop of issue 9: a spool of `messages` messages under `dir`,
/// `iterations` times: a login deletes message 1 (and sometimes one more),
/// QUIT, SIGKILL at a random moment of the update, a restart; then, before
/// any login, the spool is complete or untouched byte for byte, the
/// journal and the dotlock are gone, and procmail delivers at once. Every
/// fifth kill, procmail delivers between the kill and the restart (as soon
/// as it can); that message must be there afterwards.
fn sigkill_loop(dir: &Path, conf: &Path, messages: usize, iterations: usize) -> Outcomes {
    let spool = dir.join("mail/bob");
    let state = dir.join("state");
    let rc = dir.join("procmailrc");
    std::fs::write(&rc, "").unwrap();
    let mut model: Vec<Vec<u8>> = (0..messages).map(|n| chunk(n, 40)).collect();
    std::fs::write(&spool, model.concat()).unwrap();
    harness::give_to_nobody(dir);
    let mut rng = Rng::seeded();
    // How long an uninterrupted QUIT takes, to aim the kills inside it.
    let mut p = Process::start(conf);
    let mut c = p.login();
    c.ok("DELE 1");
    let t = Instant::now();
    c.ok("QUIT");
    let quit_time = t.elapsed();
    model.remove(0);
    p.kill();
    let mut outcomes = Outcomes::default();
    let mut pending: Option<Vec<Vec<u8>>> = None;
    let mut between: Option<(std::process::Child, String)> = None;
    let mut delivered = 0;
    for iteration in 0..=iterations {
        let p = Process::start(conf);
        let what = format!("iteration {iteration} ({outcomes:?})");
        if let Some((mut mda, id)) = between.take() {
            assert!(mda.wait().unwrap().success(), "{what}: procmail failed");
            let now = std::fs::read(&spool).unwrap();
            let at = now.windows(id.len()).position(|w| w == id.as_bytes());
            let at = at.unwrap_or_else(|| panic!("{what}: the delivered message is lost"));
            let start = now[..at]
                .windows(6)
                .rposition(|w| w == b"\n\nFrom")
                .map_or(0, |i| i + 2);
            let (head, tail) = now.split_at(start);
            assert!(tail.starts_with(b"From "), "{what}");
            check(head, &mut model, &mut pending, &mut outcomes, &what);
            model.push(tail.to_vec());
        } else {
            let now = std::fs::read(&spool).unwrap();
            check(&now, &mut model, &mut pending, &mut outcomes, &what);
        }
        assert!(
            !has_journal(&state),
            "{what}: a journal is left after the restart"
        );
        assert!(
            !dir.join("mail/bob.lock").exists(),
            "{what}: the dotlock is left"
        );
        // The MDA delivers at once: with procmail's default 8 s between
        // dotlock attempts, a leftover lock would show.
        let t = Instant::now();
        let id = format!("<now{iteration}.mda@example.org>");
        let msg =
            format!("From mda@example.org Mon Jan  5 09:00:00 2026\nMessage-ID: {id}\n\nnow\n");
        assert!(procmail(&spool, &rc, msg.as_bytes(), 8)
            .wait()
            .unwrap()
            .success());
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "{what}: procmail waited {:?}",
            t.elapsed()
        );
        let now = std::fs::read(&spool).unwrap();
        let old: usize = model.iter().map(Vec::len).sum();
        assert_eq!(&now[..old], model.concat().as_slice(), "{what}");
        model.push(now[old..].to_vec());
        delivered += 1;
        if iteration == iterations {
            break;
        }
        let mut p = p;
        let mut c = p.login();
        let mut after = model.clone();
        let mut dele = vec![1];
        if iteration % 10 == 0 {
            dele.push(2 + rng.below(model.len() as u64 - 2) as usize);
        }
        for &n in dele.iter().rev() {
            c.ok(&format!("DELE {n}"));
            after.remove(n - 1);
        }
        c.send("QUIT");
        let wait = rng.below(quit_time.as_micros() as u64 * 12 / 10 + 1);
        std::thread::sleep(Duration::from_micros(wait));
        p.kill();
        pending = Some(after);
        if iteration % 5 == 0 {
            let id = format!("<between{iteration}.mda@example.org>");
            let msg = format!(
                "From mda@example.org Mon Jan  5 09:00:00 2026\nMessage-ID: {id}\n\nbetween\n"
            );
            between = Some((procmail(&spool, &rc, msg.as_bytes(), 1), id));
        }
    }
    assert_eq!(delivered, iterations + 1);
    outcomes
}

/// The spool `now` must be the update's result (`pending`) or the spool
/// before it (`model`), byte for byte.
fn check(
    now: &[u8],
    model: &mut Vec<Vec<u8>>,
    pending: &mut Option<Vec<Vec<u8>>>,
    outcomes: &mut Outcomes,
    what: &str,
) {
    match pending.take() {
        Some(after) if now == after.concat().as_slice() => {
            outcomes.complete += 1;
            *model = after;
        }
        Some(_) if now == model.concat().as_slice() => outcomes.untouched += 1,
        Some(after) => panic!(
            "{what}: the spool ({} bytes) is neither complete ({}) nor untouched ({})",
            now.len(),
            after.concat().len(),
            model.concat().len()
        ),
        None => assert_eq!(now, model.concat().as_slice(), "{what}"),
    }
}

fn loop_setup(dir: &Path) -> (crate::harness::TestServer, PathBuf) {
    // The harness's server only provides a config; each iteration runs
    // its own process on the same files.
    let server = ServerBuilder::new().start();
    let conf = config_in(server.config_path(), dir);
    (server, conf)
}

#[test]
fn sigkill_during_quit_then_restart_leaves_the_spool_complete_or_untouched() {
    if !harness::require_tool("procmail", &["-v"]) {
        return;
    }
    // tmpfs: a SIGKILL loses nothing from the page cache; a disk would only
    // add fsync time.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let (_server, conf) = loop_setup(dir.path());
    let start = Instant::now();
    let o = sigkill_loop(dir.path(), &conf, 2000, 100);
    eprintln!(
        "SIGKILL loop, 2000 messages, 100 kills: {} complete, {} untouched, 0 other, in {:?}",
        o.complete,
        o.untouched,
        start.elapsed()
    );
    assert_eq!(o.complete + o.untouched, 100);
    assert!(o.complete > 0, "no kill landed inside an update");
}

/// Mounts a tmpfs of `mib` MiB at `at` (as root); unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -t tmpfs at {} failed", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_small_state_dir_is_enough_for_a_spool_many_times_larger() {
    require_root!();
    if !harness::require_tool("procmail", &["-v"]) {
        return;
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let (_server, conf) = loop_setup(dir.path());
    let _state = Tmpfs::mount(&dir.path().join("state"), 3);
    // A 40 MB spool, DELE 1: every byte after the first message moves.
    let msgs: Vec<Vec<u8>> = (0..400).map(|n| chunk(n, 1600)).collect();
    let spool = dir.path().join("mail/bob");
    std::fs::write(&spool, msgs.concat()).unwrap();
    harness::give_to_nobody(dir.path());
    let p = Process::start(&conf);
    let mut c = p.login();
    c.ok("DELE 1");
    c.ok("QUIT");
    assert!(std::fs::read(&spool).unwrap() == msgs[1..].concat());
    drop(p);
    // And the kill loop passes with it too.
    let o = sigkill_loop(dir.path(), &conf, 2000, 30);
    eprintln!(
        "SIGKILL loop with a 3 MiB state_dir, 30 kills: {} complete, {} untouched",
        o.complete, o.untouched
    );
    assert_eq!(o.complete + o.untouched, 30);
}

/// Finding 5: a local reader expunges the message the session deleted and
/// the MDA delivers one into its place (same length, and longer); QUIT
/// must change nothing, and the next session sees the new message.
#[test]
fn quit_never_removes_a_message_the_session_did_not_see() {
    if !harness::require_tool("procmail", &["-v"]) {
        return;
    }
    let old = b"Message-ID: <old@x>\nSubject: old\n\nold body\n".to_vec();
    for (what, new) in [
        (
            "same length",
            b"Message-ID: <new@x>\nSubject: new\n\nnew body\n".to_vec(),
        ),
        (
            "longer",
            b"Message-ID: <new@x>\nSubject: new\n\nnew, longer body\n".to_vec(),
        ),
    ] {
        let keep = b"Message-ID: <keep@x>\nSubject: keep\n\nkept\n".to_vec();
        let server = ServerBuilder::new()
            .spool("bob", harness::mbox(&[keep.clone(), old.clone()]))
            .start();
        let spool = server.spool_path("bob");
        let rc = server.dir().join("procmailrc");
        std::fs::write(&rc, "").unwrap();
        let mut c = server.login(BOB);
        c.ok("DELE 2");
        // The local reader's expunge of message 2, then the delivery.
        let kept = harness::mbox(std::slice::from_ref(&keep));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&spool)
            .unwrap()
            .set_len(kept.len() as u64)
            .unwrap();
        let mut msg = harness::FROM_LINE.to_vec();
        msg.extend_from_slice(&new);
        assert!(procmail(&spool, &rc, &msg, 1).wait().unwrap().success());
        let before = std::fs::read(&spool).unwrap();
        c.send("QUIT");
        let reply = c.line();
        assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{what}: {reply}");
        assert_eq!(
            std::fs::read(&spool).unwrap(),
            before,
            "{what}: QUIT changed the spool"
        );
        let mut c = server.login(BOB);
        let body = c.ok_body("RETR 2");
        assert!(String::from_utf8_lossy(&body).contains("<new@x>"), "{what}");
        c.quit();
    }
}

/// A journal that does not fit its spool (here: garbage) never locks the
/// user out: the daemon sets it aside at startup, says so, and serves.
#[test]
fn an_unusable_journal_is_set_aside_at_startup() {
    let server = ServerBuilder::new()
        .spool("bob", harness::mbox(&[b"Subject: a\n\nx\n".to_vec()]))
        .start();
    let dir = tempfile::tempdir().unwrap();
    let conf = config_in(server.config_path(), dir.path());
    let spool = dir.path().join("mail/bob");
    std::fs::write(&spool, server.read_spool("bob")).unwrap();
    let journal = dir.path().join("state").join(format!(
        "{}.journal",
        ironpop::mailbox::state::SpoolKey::of(&spool).name()
    ));
    std::fs::write(&journal, b"not a journal").unwrap();
    harness::give_to_nobody(dir.path());
    if nix::unistd::getuid().is_root() {
        // The daemon's own file, as a journal is (one it cannot read stays).
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        nix::unistd::chown(&journal, nobody, None).unwrap();
    }
    let check = Command::new(harness::BIN)
        .arg("-t")
        .arg("-f")
        .arg(&conf)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("wait for recovery"), "{stderr}");
    let p = Process::start(&conf);
    assert!(!journal.exists());
    let mut c: Client = p.login();
    assert!(c.ok("STAT").starts_with("+OK 1 "));
    c.quit();
}
