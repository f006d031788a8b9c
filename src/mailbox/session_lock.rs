//! One POP3 session per mailbox: an in-process registry plus an OFD lock on `state_dir/<spool>.session`.
//!
//! The registry answers for sessions of this process (threads) without
//! touching the file system; the OFD lock answers across processes (inetd
//! mode, a second daemon). Both vanish with the process, so a crash never
//! leaves a mailbox locked, and neither is a lock any MDA looks at, so
//! delivery is never blocked by a session. Lock files are never removed:
//! unlinking a lock file while another process has it open is what makes
//! lock files racy.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::fcntl::OFlag;

use super::ofd;
use super::state::{SpoolKey, StateDir};
use super::MailboxError;

fn registry() -> MutexGuard<'static, HashSet<PathBuf>> {
    static REGISTRY: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    // A panic elsewhere while holding the mutex leaves a consistent set.
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held for the whole session; dropping it releases the mailbox.
#[derive(Debug)]
pub struct SessionLock {
    spool: PathBuf,
    file: File,
}

impl SessionLock {
    /// Takes the session lock of `spool` (resolved as `key`) or fails at
    /// once with [`MailboxError::InUse`].
    pub fn acquire(
        state: &StateDir,
        spool: &Path,
        key: &SpoolKey,
    ) -> Result<SessionLock, MailboxError> {
        let in_use = || MailboxError::InUse {
            path: spool.to_path_buf(),
        };
        // Every spelling of the spool's path is one entry, as in the lock
        // file's name.
        let canonical = key.canonical().to_path_buf();
        if !registry().insert(canonical.clone()) {
            return Err(in_use());
        }
        // From here on, every early return must leave the registry clean.
        let unregister = || {
            registry().remove(&canonical);
        };
        let lock_path = state.session_lock(key);
        let io_err = |action, source: io::Error| MailboxError::Io {
            path: spool.to_path_buf(),
            action,
            source: io::Error::new(
                source.kind(),
                format!("session lock {}: {source}", lock_path.display()),
            ),
        };
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                .open(&lock_path)
        };
        // The state directory is made when it is missing, not checked at
        // every login.
        let opened = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => state.ensure().and_then(|()| open()),
            opened => opened,
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                unregister();
                return Err(io_err("locking", e));
            }
        };
        match ofd::try_lock(&file) {
            Ok(true) => {
                record_holder(&file, &canonical);
                Ok(SessionLock {
                    spool: canonical.clone(),
                    file,
                })
            }
            Ok(false) => {
                unregister();
                Err(in_use())
            }
            Err(e) => {
                unregister();
                Err(io_err("locking", e))
            }
        }
    }
}

/// What a lock file holds while locked, for `ironpop --who` in inetd mode:
/// `SECONDS PID SPOOL`, the time of the lock and who took it. Not needed
/// for locking; a failure to write it is only logged.
fn record_holder(file: &File, spool: &Path) {
    use std::os::unix::fs::FileExt;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let line = format!("{since} {} {}\n", std::process::id(), spool.display());
    // Written over the last holder's record, then cut to its length: a
    // file truncated to 0 and written again is flushed to disk at its
    // close by ext4 (auto_da_alloc), one disk write per login.
    if let Err(e) = file
        .write_all_at(line.as_bytes(), 0)
        .and_then(|()| file.set_len(line.len() as u64))
    {
        log::debug!("cannot note the session in its lock file: {e}");
    }
}

/// The holder a lock file names: seconds since the epoch, and the spool.
pub fn read_holder(text: &str) -> Option<(u64, &str)> {
    // The first line: while a new holder writes, a longer old record's
    // tail may still follow it.
    let mut words = text.lines().next()?.splitn(3, ' ');
    let since = words.next()?.parse().ok()?;
    let _pid = words.next()?;
    Some((since, words.next()?))
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        // Unlock explicitly rather than rely on the close: a child being
        // spawned at this instant (between its fork and exec) still shares
        // the open file description, and closing our descriptor alone would
        // leave the mailbox locked until that child has exec'd.
        let _ = ofd::unlock(&self.file);
        registry().remove(&self.spool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session lock as a session takes it: resolved, then locked.
    fn acquire(state: &StateDir, spool: &Path) -> Result<SessionLock, MailboxError> {
        SessionLock::acquire(state, spool, &SpoolKey::of(spool))
    }

    #[test]
    fn another_spelling_of_the_same_spool_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).unwrap();
        std::os::unix::fs::symlink(&mail, dir.path().join("spool")).unwrap();
        let _first = acquire(&state, &mail.join("bob")).unwrap();
        let e = acquire(&state, &dir.path().join("spool/bob")).unwrap_err();
        assert!(e.is_in_use(), "{e}");
    }

    #[test]
    fn second_session_is_in_use_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let spool = dir.path().join("bob");
        let first = acquire(&state, &spool).unwrap();
        let e = acquire(&state, &spool).unwrap_err();
        assert!(e.is_in_use(), "{e}");
        assert!(e.to_string().contains("another POP3 session"), "{e}");
        // Another mailbox is independent.
        let other = acquire(&state, &dir.path().join("alice")).unwrap();
        drop(first);
        let again = acquire(&state, &spool).unwrap();
        drop((again, other));
        assert!(
            state.session_lock(&SpoolKey::of(&spool)).exists(),
            "lock files stay"
        );
    }

    #[test]
    fn another_process_holding_the_lock_file_means_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let spool = dir.path().join("carol");
        // An OFD lock on another description stands in for another process:
        // OFD locks conflict between descriptions, not between processes.
        std::fs::write(state.session_lock(&SpoolKey::of(&spool)), b"").unwrap();
        let foreign = File::options()
            .write(true)
            .open(state.session_lock(&SpoolKey::of(&spool)))
            .unwrap();
        assert!(ofd::try_lock(&foreign).unwrap());
        let e = acquire(&state, &spool).unwrap_err();
        assert!(e.is_in_use(), "{e}");
        // The failed attempt did not leave the spool registered.
        drop(foreign);
        acquire(&state, &spool).unwrap();
    }

    #[test]
    fn unusable_state_dir_is_an_io_error_not_in_use() {
        let (dir, blocker) = crate::test_support::scratch_file("file", b"");
        let state = StateDir::new(blocker.join("sub"));
        let spool = dir.path().join("dave");
        let e = acquire(&state, &spool).unwrap_err();
        assert!(matches!(e, MailboxError::Io { .. }), "{e}");
        assert!(e.to_string().contains("session lock"), "{e}");
        let e = acquire(&state, &spool).unwrap_err();
        assert!(!e.is_in_use(), "registry must be clean after a failure");
    }

    #[test]
    fn the_lock_file_names_its_last_holder_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let spool = dir.path().join("erin");
        let lock_file = state.session_lock(&SpoolKey::of(&spool));
        // A longer record left by an earlier holder is overwritten and cut.
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(&lock_file, format!("1 2 {}\n", "/x".repeat(200))).unwrap();
        let held = acquire(&state, &spool).unwrap();
        let text = std::fs::read_to_string(&lock_file).unwrap();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let (since, named) = read_holder(&text).expect("a holder record");
        assert!(since > 1, "{text:?}");
        assert!(named.ends_with("/erin"), "{text:?}");
        drop(held);
    }

    #[test]
    fn a_holder_record_is_its_first_line() {
        assert_eq!(
            read_holder("17 42 /var/mail/bob\n/a/longer/old/tail\n"),
            Some((17, "/var/mail/bob"))
        );
        assert_eq!(read_holder(""), None);
        assert_eq!(read_holder("17 42\n"), None);
    }
}
