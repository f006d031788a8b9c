//! `ironpop --demo [DIR]`: a self-contained demo as the current user — config, passwd file, sample mailbox — served in the foreground.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::daemon::error::DaemonError;

/// Where the demo lives when no DIR is given.
pub const DEFAULT_DIR: &str = "ironpop-demo";
pub const USER: &str = "demo";
pub const PASSWORD: &str = "demo";
/// Unprivileged, so no root is needed; 110 + 1000.
pub const ADDRESS: &str = "127.0.0.1:1110";

/// The sample mailbox: friendly, and exercising what POP3 clients trip
/// over — a line starting with `.` (dot-stuffing) and a `>From ` line
/// (served as stored).
const SAMPLE_MBOX: &str = "\
From welcome@ironpop.example Mon Jan  6 09:00:00 2025
From: ironpop <welcome@ironpop.example>
To: demo@localhost
Subject: Welcome to ironpop
Date: Mon, 06 Jan 2025 09:00:00 +0000
Message-ID: <welcome.1@ironpop.example>

Hello!

This is your demo mailbox, an ordinary mbox file. Every POP3 client can
read it: curl, Python's poplib, Thunderbird, fetchmail, mutt.

Nothing is deleted unless you DELE a message and then QUIT; a dropped
connection never changes the mailbox.

From alice@example.org Tue Jan  7 10:15:00 2025
From: Alice <alice@example.org>
To: demo@localhost
Subject: Lunch on Friday?
Date: Tue, 07 Jan 2025 10:15:00 +0000
Message-ID: <lunch.2@example.org>

Hi,

shall we try the new place by the river on Friday? Noon suits me.
Let me know...
.. and bring the umbrella, the forecast says rain.
.
(That lone dot above is part of the message: POP3 sends it as \"..\" and
your client turns it back into \".\".)

Alice

From bob@example.net Wed Jan  8 16:40:00 2025
From: Bob <bob@example.net>
To: demo@localhost
Subject: Notes from the meeting
Date: Wed, 08 Jan 2025 16:40:00 +0000
Message-ID: <notes.3@example.net>

Notes, as promised:

1. Release on the 20th.
2. Write the changelog.
>From now on the weekly call moves to Thursdays.

(In an mbox file a body line starting with \"From \" is stored as \">From \";
ironpop serves it exactly as stored.)

Bob

From newsletter@example.com Thu Jan  9 08:00:00 2025
From: Example Weekly <newsletter@example.com>
To: demo@localhost
Subject: Try TOP
Date: Thu, 09 Jan 2025 08:00:00 +0000
Message-ID: <weekly.4@example.com>

This message is here to try TOP, which sends the header and the first
few lines of the body. In Python, after logging in:

  print(b\"\\n\".join(p.top(4, 2)[1]).decode())

Line three of the body.
Line four of the body.
";

/// Creates (or completes) the demo directory and returns the path of its
/// config file. Existing pieces are kept — in particular a mailbox that
/// still has mail — so running the demo again reuses DIR; an empty or
/// missing mailbox gets the sample messages again.
pub fn prepare(dir: &Path) -> Result<PathBuf, DaemonError> {
    let fail = |source| DaemonError::Demo {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(fail)?;
    let dir = dir.canonicalize().map_err(fail)?;
    let fail = |source| DaemonError::Demo {
        path: dir.clone(),
        source,
    };
    let private_dir = |path: &Path| match DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    };
    private_dir(&dir.join("mail")).map_err(fail)?;
    private_dir(&dir.join("state")).map_err(fail)?;
    // The demo trusts what it finds in DIR (its config names the spools it
    // serves): only if this user owns it and nobody else can write to it.
    for path in [
        dir.clone(),
        dir.join("mail"),
        dir.join("state"),
        dir.join("ironpop.conf"),
        dir.join("passwd"),
    ] {
        ours_alone(&path).map_err(fail)?;
    }

    let config_path = dir.join("ironpop.conf");
    if !config_path.exists() {
        let tls = match super::demo_tls::ensure_certificate(&dir) {
            Ok((cert, key)) => super::demo_tls::config_lines(&cert, &key),
            Err(why) => {
                println!("no TLS in this demo: {why}");
                String::new()
            }
        };
        let text = config_text(&dir) + &tls;
        create(&config_path, text.as_bytes()).map_err(fail)?;
    }
    let passwd = dir.join("passwd");
    if !passwd.exists() {
        let hash = crate::privsep::crypt::hash_password(PASSWORD.as_bytes()).map_err(|e| {
            fail(io::Error::other(format!(
                "cannot hash the demo password: {e}"
            )))
        })?;
        create(&passwd, format!("{USER}:{hash}\n").as_bytes()).map_err(fail)?;
    }
    let mbox = dir.join("mail").join(USER);
    let empty = fs::metadata(&mbox).map(|m| m.len() == 0);
    match empty {
        Ok(false) => {}
        Ok(true) => {
            fs::write(&mbox, SAMPLE_MBOX).map_err(fail)?;
            println!("refilled the empty mailbox {}", mbox.display());
        }
        Err(_) => create(&mbox, SAMPLE_MBOX.as_bytes()).map_err(fail)?,
    }
    Ok(config_path)
}

/// The demo's config, with absolute paths so it works from any directory.
fn config_text(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# ironpop demo configuration, created by `ironpop --demo`.\n\
         # Edit freely; `ironpop --demo` keeps this file when it runs again.\n\
         listen = {ADDRESS}\n\
         # Loopback counts as secure, so USER/PASS work without TLS.\n\
         plaintext_auth = localhost\n\
         passdb = passwd-file:{d}/passwd\n\
         mailbox = {d}/mail/%u\n\
         state_dir = {d}/state\n\
         pid_file = {d}/ironpop.pid\n\
         # `ironpop --who -f {d}/ironpop.conf` asks the demo here.\n\
         control_socket = {d}/control\n\
         log_level = info\n"
    )
}

/// Creates a private file that must not exist yet, and says so.
/// `path`, if it exists, belongs to the effective user, is not a symlink and
/// is not writable by everyone (group-writable is left to the umask).
fn ours_alone(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me || meta.mode() & 0o002 != 0 || meta.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} must belong to uid {me}, not be a symlink, and not be writable by everyone (it is uid {}, mode {:o}); \
                 choose another demo directory",
                path.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

fn create(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    println!("created {}", path.display());
    Ok(())
}

/// `--listen ADDR`: plain POP3 on `addr` instead of the config's
/// addresses, and POP3S (when the demo has a certificate) on a free port
/// of the same address, so that no fixed port is needed.
pub fn listen_on(config: &mut Config, addr: SocketAddr) {
    config.listen = vec![addr];
    if !config.listen_tls.is_empty() {
        config.listen_tls = vec![SocketAddr::new(addr.ip(), 0)];
    }
}

/// How to connect, for the terminal: `plain` and `tls` are the bound
/// addresses (a configured port 0 is only known after binding).
pub fn instructions(config: &Config, plain: SocketAddr, tls: Option<SocketAddr>) -> String {
    let (addr, host, port) = (plain, plain.ip(), plain.port());
    let mailbox = config.mailbox.replace("%u", USER);
    format!(
        "\n\
         ironpop demo: user '{USER}', password '{PASSWORD}', mailbox {mailbox}\n\
         \n\
         List the messages, then read the first one:\n\
         \x20 curl pop3://{USER}:{PASSWORD}@{addr}/\n\
         \x20 curl pop3://{USER}:{PASSWORD}@{addr}/1\n\
         \n\
         Or with Python:\n\
         \x20 python3 -c 'import poplib; p = poplib.POP3(\"{host}\", {port}); p.user(\"{USER}\"); \
         p.pass_(\"{PASSWORD}\"); print(p.list()[1]); print(b\"\\n\".join(p.retr(1)[1]).decode()); p.quit()'\n\
         \n\
         {tls}\
         Ctrl-C stops the server. Running the demo again reuses {dir}.\n\n",
        tls = super::demo_tls::instructions(config, tls, USER, PASSWORD),
        dir = config
            .source
            .parent()
            .map_or_else(|| ".".to_string(), |p| p.display().to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch_path;

    #[test]
    fn a_demo_dir_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, demo) = scratch_path("demo");
        prepare(&demo).unwrap();
        let conf = demo.join("ironpop.conf");
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o666)).unwrap();
        let e = prepare(&demo).unwrap_err().to_string();
        assert!(e.contains("writable by everyone"), "{e}");
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o600)).unwrap();
        prepare(&demo).unwrap();
        fs::set_permissions(&demo, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(prepare(&demo).is_err(), "a world-writable DIR is refused");
    }

    #[test]
    fn sample_mailbox_has_the_tricky_lines() {
        let separators = SAMPLE_MBOX
            .lines()
            .filter(|l| l.starts_with("From "))
            .count();
        assert_eq!(separators, 4);
        assert!(SAMPLE_MBOX.lines().any(|l| l == "."));
        assert!(SAMPLE_MBOX.lines().any(|l| l.starts_with(">From ")));
        assert!(
            SAMPLE_MBOX.lines().all(|l| l.len() < 78),
            "lines fit a terminal"
        );
        // Each message but the first follows a blank line (mbox rule).
        assert_eq!(SAMPLE_MBOX.matches("\n\nFrom ").count(), 3);
    }

    #[test]
    fn prepare_creates_then_reuses() {
        let (_tmp, dir) = scratch_path("demo");
        let conf = prepare(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        assert_eq!(conf, dir.join("ironpop.conf"));
        let text = fs::read_to_string(&conf).unwrap();
        assert!(text.contains("listen = 127.0.0.1:1110\n"));
        assert!(text.contains(&format!("mailbox = {}/mail/%u\n", dir.display())));
        assert!(text.contains(&format!("passdb = passwd-file:{}/passwd\n", dir.display())));
        let passwd = fs::read_to_string(dir.join("passwd")).unwrap();
        assert!(passwd.starts_with("demo:") && !passwd.contains(":demo\n"));
        let mbox = dir.join("mail/demo");
        assert_eq!(fs::read_to_string(&mbox).unwrap(), SAMPLE_MBOX);

        // A mailbox the user changed is kept; a deleted passwd comes back.
        fs::write(&mbox, "From x Mon Jan  6 09:00:00 2025\n\nmine\n").unwrap();
        fs::remove_file(dir.join("passwd")).unwrap();
        prepare(&dir).unwrap();
        assert!(fs::read_to_string(&mbox).unwrap().ends_with("mine\n"));
        assert!(dir.join("passwd").exists());

        // An emptied mailbox gets the samples again.
        fs::write(&mbox, "").unwrap();
        prepare(&dir).unwrap();
        assert_eq!(fs::read_to_string(&mbox).unwrap(), SAMPLE_MBOX);
    }

    #[test]
    fn instructions_name_the_configured_address() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = prepare(tmp.path()).unwrap();
        let config = crate::config::load(&conf).unwrap();
        let text = instructions(&config, "127.0.0.1:2110".parse().unwrap(), None);
        assert!(
            text.contains("curl pop3://demo:demo@127.0.0.1:2110/1\n"),
            "{text}"
        );
        assert!(
            text.contains("curl pop3://demo:demo@127.0.0.1:2110/\n"),
            "{text}"
        );
        assert!(text.contains("poplib.POP3(\"127.0.0.1\", 2110)"), "{text}");
    }
}
