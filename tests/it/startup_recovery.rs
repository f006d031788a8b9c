//! Startup recovery of spools only their owner can open (issue 9): the daemon has the privileged helper open them before its first accept, runs the recovery itself, and never lets a journal name any other file.
//!
//! As root: the spools live in home-like directories (0700, owned by the
//! account's uid) that the daemon's user (nobody) cannot enter, so only
//! the helper's startup channel can reach them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Uid;

use crate::harness::{self, Client, BOB};
use crate::system::Server;

/// The uid owning the test spools: no system account is needed, the
/// passwd file's uid field names it.
const OWNER: u32 = 4242;

/// A daemon's files under `root`: spools at `home/%u/mbox`, a passwd file
/// with bob (uid [`OWNER`]) and carol (uid OWNER + 1).
struct Homes {
    root: PathBuf,
    conf: PathBuf,
}

impl Homes {
    fn new(root: &Path) -> Homes {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let state = root.join("state");
        std::fs::create_dir(&state).unwrap();
        nix::unistd::chown(&state, Some(Uid::from_raw(65534)), None).unwrap();
        let users = root.join("users");
        std::fs::write(
            &users,
            format!(
                "bob:{{PLAIN}}{}:{OWNER}:{OWNER}\ncarol:{{PLAIN}}pw:{c}:{c}\n",
                BOB.password,
                c = OWNER + 1
            ),
        )
        .unwrap();
        let conf = root.join("ironpop.conf");
        std::fs::write(
            &conf,
            format!(
                "listen = 127.0.0.1:0\nlisten_tls = none\nuser = nobody\ngroup = nogroup\n\
                 passdb = passwd-file:{users}\nmailbox = {root}/home/%u/mbox\n\
                 state_dir = {state}\npid_file = {root}/pid\ncontrol_socket = {root}/control\n\
                 plaintext_auth = always\nauth_fail_delay = 0\nlock_methods = fcntl\n",
                users = users.display(),
                root = root.display(),
                state = state.display(),
            ),
        )
        .unwrap();
        Homes {
            root: root.to_path_buf(),
            conf,
        }
    }

    fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    /// `home/USER/mbox` holding `bytes`: 0600 in a 0700 directory, both
    /// owned by `uid`.
    fn spool(&self, user: &str, uid: u32, bytes: &[u8]) -> PathBuf {
        let home = self.root.join("home").join(user);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&home, Some(Uid::from_raw(uid)), None).unwrap();
        let spool = home.join("mbox");
        std::fs::write(&spool, bytes).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o600)).unwrap();
        nix::unistd::chown(&spool, Some(Uid::from_raw(uid)), None).unwrap();
        spool
    }

    fn start(&self) -> Server {
        let server = Server::start(&self.conf);
        server.wait_log(" ready: ");
        server
    }
}

fn journals(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .map(|d| {
            d.map_while(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".journal"))
                .collect()
        })
        .unwrap_or_default()
}

/// Logs bob in, deletes message 1, sends QUIT and SIGKILLs the daemon as
/// soon as the update's journal appears. `true` when the journal is still
/// there after the kill (the update was interrupted), `false` when the
/// update finished first.
fn kill_mid_update(homes: &Homes) -> bool {
    let server = homes.start();
    let mut c = Client::connect(server.addr().parse().unwrap());
    c.greeting();
    c.login(BOB);
    c.ok("DELE 1");
    c.send("QUIT");
    let deadline = Instant::now() + Duration::from_secs(5);
    while journals(&homes.state()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(100));
    }
    server.signal(nix::sys::signal::Signal::SIGKILL);
    drop(server);
    !journals(&homes.state()).is_empty()
}

/// 2000 messages, about 4 MB: an update of several journaled rounds.
fn messages() -> Vec<Vec<u8>> {
    (0..2000)
        .map(|n| {
            let body = format!(
                "Message-ID: <{n}.home@example.org>\n\n{}",
                "line .......\n".repeat(150)
            );
            harness::mbox_chunk(body.as_bytes())
        })
        .collect()
}

/// A daemon's files in a new directory, bob's spool holding
/// [`messages`], and an update of it (DELE 1) interrupted by SIGKILL while
/// its journal existed. The kill may come after the update finished: a
/// few tries at most.
fn crashed() -> (tempfile::TempDir, Homes, Vec<Vec<u8>>, PathBuf) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let homes = Homes::new(dir.path());
    let messages = messages();
    for _ in 0..5 {
        let spool = homes.spool("bob", OWNER, &messages.concat());
        if kill_mid_update(&homes) {
            return (dir, homes, messages, spool);
        }
    }
    panic!("no kill landed while the journal existed");
}

#[test]
fn a_spool_only_its_owner_can_open_is_recovered_before_any_login() {
    require_root!();
    let (_dir, homes, messages, spool) = crashed();
    let (before, after) = (messages.concat(), messages[1..].concat());
    let waiting = std::process::Command::new(harness::BIN)
        .args(["-t", "-f"])
        .arg(&homes.conf)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&waiting.stderr);
    assert!(listed.contains(&spool.display().to_string()), "{listed}");

    let server = homes.start();
    // Before any login: the spool on disk is the completed update, its
    // journal is gone, and the log says so.
    let now = std::fs::read(&spool).unwrap();
    assert!(
        now == after,
        "the spool ({} bytes) is not the completed update ({} bytes; before: {})",
        now.len(),
        after.len(),
        before.len()
    );
    assert!(journals(&homes.state()).is_empty(), "a journal is left");
    server.wait_log(&format!(
        "startup recovery: mailbox {}: an interrupted update was completed from its journal (found at ",
        spool.display()
    ));
    let meta = std::fs::metadata(&spool).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (OWNER, 0o600));
    // The startup channel is closed: logins are served as always, and
    // QUIT updates a spool whose path the daemon cannot look at.
    let mut c = Client::connect(server.addr().parse().unwrap());
    c.greeting();
    c.login(BOB);
    assert!(c.ok("STAT").starts_with("+OK 1999 "));
    c.ok("DELE 1");
    c.ok("QUIT");
    assert!(std::fs::read(&spool).unwrap() == messages[2..].concat());
}

/// Writes, in the daemon's `state`, a journal for `spool` naming
/// `account` whose plan would truncate the file to nothing, with a
/// guessed tail check: what a compromised daemon could leave behind.
fn forge_journal(state: &Path, spool: &Path, account: Option<&str>) -> PathBuf {
    use ironpop::mailbox::journal::{Header, Journal, TailCheck};
    use ironpop::mailbox::plan::Plan;
    let meta = std::fs::metadata(spool).unwrap();
    let header = Header {
        ino: meta.ino(),
        plan: Plan::new(meta.len(), vec![(0, meta.len())], 1 << 20).unwrap(),
        marker: b"forged".to_vec(),
        spool: spool.to_path_buf(),
        account: account.map(str::to_owned),
        // As long as a real journal's, with a guessed hash.
        tail: Some(TailCheck {
            len: (meta.len() - 6).min(ironpop::limits::JOURNAL_TAIL_CHECK),
            hash: 0,
        }),
        round_hashes: Vec::new(),
        deleted_hashes: None,
    };
    let state_dir = ironpop::mailbox::state::StateDir::new(state);
    let journal = Journal::create(&state_dir, header, false).unwrap();
    let path = journal.path().to_path_buf();
    nix::unistd::chown(&path, Some(Uid::from_raw(65534)), None).unwrap();
    path
}

#[test]
fn a_forged_journal_never_has_another_file_opened_or_written() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let homes = Homes::new(dir.path());
    let message = harness::mbox(&[format!("Subject: a\n\n{}", "x".repeat(200)).into_bytes()]);
    homes.spool("bob", OWNER, &message);
    let carol = homes.spool("carol", OWNER + 1, &message);
    // A root-only file like /etc/shadow, and another account's spool.
    let secret = dir.path().join("shadow");
    let shadow = "root:$y$j9T$secret:19000:0:99999:7:::\n".repeat(4);
    std::fs::write(&secret, &shadow).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let left = |target: &Path| {
        format!(
            "startup recovery: spool={} outcome=left-for-next-login",
            target.display()
        )
    };
    for (target, account, outcome, why) in [
        // Not the account's spool: the helper refuses to open it.
        (&secret, Some("bob"), left(&secret), "would not open it"),
        (&carol, Some("bob"), left(&carol), "would not open it"),
        // No account: the daemon's own open, which fails.
        (&secret, None, left(&secret), "Permission denied"),
        // Carol's own spool: opened, but the proof fails before a write.
        (
            &carol,
            Some("carol"),
            format!(
                "startup recovery: mailbox {}: an interrupted update was NOT completed",
                carol.display()
            ),
            "bytes before offset",
        ),
    ] {
        let jpath = forge_journal(&homes.state(), target, account);
        let server = homes.start();
        let line = server.wait_log(&outcome);
        assert!(line.contains(why), "{line}");
        if why == "would not open it" {
            server.wait_log(&format!(
                "startup recovery: refused to open {} for {:?}",
                target.display(),
                account.unwrap()
            ));
        }
        drop(server);
        if outcome.contains("left-for-next-login") {
            // Left for the owner's next login: the journal must still be there.
            assert!(jpath.exists(), "{} was dropped", jpath.display());
            std::fs::remove_file(&jpath).unwrap();
        } else {
            let _ = std::fs::remove_file(&jpath);
        }
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), shadow);
        assert_eq!(std::fs::read(&carol).unwrap(), message);
    }
}

#[test]
fn an_inetd_process_recovers_before_it_greets() {
    require_root!();
    let (_dir, homes, messages, spool) = crashed();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = std::process::Command::new(harness::BIN)
        .arg("-i")
        .arg("-f")
        .arg(&homes.conf)
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs.try_clone().unwrap(),
        )))
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Reads and checks the greeting.
    let mut c = crate::system::Client::new(ours);
    // Greeted, nobody logged in: the update is complete on disk.
    assert!(std::fs::read(&spool).unwrap() == messages[1..].concat());
    assert!(journals(&homes.state()).is_empty(), "a journal is left");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(child.wait().unwrap().success());
}
