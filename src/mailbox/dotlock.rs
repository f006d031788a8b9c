//! `<spool>.lock` dotlocks, created NFS-safely the way liblockfile does.
//!
//! Creation: write a uniquely named temporary file in the spool's
//! directory, link(2) it to `<spool>.lock`, and decide by the temporary
//! file's link count, not by link()'s return value (over NFS the reply to
//! a link that succeeded can be lost and the retransmission fail with
//! EEXIST). A lock unchanged for [`limits::DOTLOCK_STALE_AFTER`] is stale
//! and removed; "now" is the temporary file's mtime, i.e. the file
//! server's clock, so client clock skew does not matter. A held lock is
//! touched (server time again) so that long scans and updates never look
//! stale; on release it is removed only if it is still ours.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::OFlag;
use nix::sys::stat::futimens;
use nix::sys::time::TimeSpec;

use crate::limits;

/// How often a held lock is touched: well inside the staleness window.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// `<spool>.lock`.
pub fn lock_path(spool: &Path) -> PathBuf {
    let mut name = spool.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// A dotlock we created; dropping it removes the lock file if it is still ours.
#[derive(Debug)]
pub struct Dotlock {
    path: PathBuf,
    /// Our inode of the lock file (the temporary file's, linked in).
    file: File,
    dev: u64,
    ino: u64,
    touched: Instant,
}

/// Result of one attempt.
#[derive(Debug)]
pub enum Attempt {
    Held(Dotlock),
    /// Someone else holds it; the text says who and since when (for the
    /// lock-timeout message).
    Busy(String),
}

/// Makes one attempt to create `<spool>.lock`, removing a stale lock.
pub fn try_lock(spool: &Path) -> io::Result<Attempt> {
    let path = lock_path(spool);
    let dir = match spool.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(unique_name());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(&tmp)?;
    let result = link_and_check(&mut file, &tmp, &path);
    // The temporary name is never needed again, whatever happened.
    let _ = fs::remove_file(&tmp);
    let (dev, ino) = match result? {
        Some(id) => id,
        None => {
            let server_now = file.metadata()?.modified()?;
            return busy_or_stale(&path, server_now);
        }
    };
    Ok(Attempt::Held(Dotlock {
        path,
        file,
        dev,
        ino,
        touched: Instant::now(),
    }))
}

/// This host's name, asked once per process: every login's dotlock names
/// it twice, and a `uname` each time was a syscall per use (issue 11's
/// login profile). A rename of the host takes effect at the next start.
fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let host = hostname().replace(['/', '.'], "_");
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        ".lk.ironpop.{}.{}.{}.{host}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// Links `tmp` to `path`; `Some((dev, ino))` when the lock is now ours.
fn link_and_check(file: &mut File, tmp: &Path, path: &Path) -> io::Result<Option<(u64, u64)>> {
    // liblockfile writes the pid (tools that show lock holders read it);
    // the second line lets another ironpop on this host recognise a lock
    // left by a killed ironpop (see `left_by_dead_ironpop`).
    file.write_all(format!("{}\n{}\n", std::process::id(), owner_tag()).as_bytes())?;
    let linked = fs::hard_link(tmp, path);
    let meta = file.metadata()?;
    if meta.nlink() == 2 {
        return Ok(Some((meta.dev(), meta.ino())));
    }
    match linked {
        Ok(()) => Ok(None), // linked yet not ours: someone raced us; treat as busy
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

fn owner_tag() -> String {
    format!("ironpop@{}", hostname())
}

/// `true` when the lock says it was made by an ironpop on this host whose
/// process no longer exists: a SIGKILLed session, not a live MDA. Any
/// other content (MDAs write only a pid, or nothing) waits for the
/// 5-minute rule, since a pid from another host or pid namespace proves
/// nothing.
fn left_by_dead_ironpop(path: &Path) -> bool {
    let Ok(text) = fs::read(path) else {
        return false;
    };
    let text = String::from_utf8_lossy(&text[..text.len().min(256)]).into_owned();
    let mut lines = text.lines();
    let (Some(pid), Some(tag)) = (lines.next(), lines.next()) else {
        return false;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return false;
    };
    pid > 0
        && tag == owner_tag()
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
}

fn busy_or_stale(path: &Path, server_now: SystemTime) -> io::Result<Attempt> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        // Released between our link and now: the caller simply retries.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Attempt::Busy(format!(
                "{} was just released",
                path.display()
            )))
        }
        Err(e) => return Err(e),
    };
    let age = server_now
        .duration_since(meta.modified()?)
        .unwrap_or_default();
    let dead_owner = left_by_dead_ironpop(path);
    if age >= limits::DOTLOCK_STALE_AFTER || dead_owner {
        log::warn!(
            "removing stale dotlock {} ({})",
            path.display(),
            if dead_owner {
                "left by an ironpop process that no longer exists".to_string()
            } else {
                format!("unchanged for {} s", age.as_secs())
            }
        );
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        return Ok(Attempt::Busy(format!(
            "{} was stale and has been removed",
            path.display()
        )));
    }
    Ok(Attempt::Busy(format!(
        "dotlock {} is held (last changed {} s ago)",
        path.display(),
        age.as_secs()
    )))
}

impl Dotlock {
    /// Refreshes the lock's mtime if [`TOUCH_EVERY`] has passed; cheap to
    /// call once per block of a long scan or update.
    pub fn touch_if_due(&mut self) {
        if self.touched.elapsed() < TOUCH_EVERY {
            return;
        }
        self.touched = Instant::now();
        if let Err(e) = futimens(&self.file, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW) {
            log::warn!("cannot touch dotlock {}: {e}", self.path.display());
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Dotlock {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    log::error!("cannot remove dotlock {}: {e}", self.path.display());
                }
            }
            Ok(_) | Err(_) => log::warn!(
                "dotlock {} was removed or replaced by another program while held",
                self.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(a: Attempt) -> Dotlock {
        match a {
            Attempt::Held(l) => l,
            Attempt::Busy(why) => panic!("busy: {why}"),
        }
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".lk"))
            .collect()
    }

    #[test]
    fn exclusive_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("bob");
        let lock = held(try_lock(&spool).unwrap());
        assert_eq!(lock.path(), dir.path().join("bob.lock"));
        let pid = fs::read_to_string(dir.path().join("bob.lock")).unwrap();
        assert_eq!(pid, format!("{}\n{}\n", std::process::id(), owner_tag()));
        match try_lock(&spool).unwrap() {
            Attempt::Busy(why) => assert!(why.contains("is held"), "{why}"),
            Attempt::Held(_) => panic!("two holders"),
        }
        drop(lock);
        assert!(!dir.path().join("bob.lock").exists());
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
        drop(held(try_lock(&spool).unwrap()));
    }

    #[test]
    fn stale_lock_is_removed_fresh_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("bob");
        let path = lock_path(&spool);
        fs::write(&path, b"12345\n").unwrap();
        let f = File::options().write(true).open(&path).unwrap();
        let old = SystemTime::now() - limits::DOTLOCK_STALE_AFTER - Duration::from_secs(5);
        f.set_modified(old).unwrap();
        match try_lock(&spool).unwrap() {
            Attempt::Busy(why) => assert!(why.contains("stale"), "{why}"),
            Attempt::Held(_) => panic!("took a lock without removing it first"),
        }
        assert!(!path.exists());
        let lock = held(try_lock(&spool).unwrap());
        // Ours, even if old-looking, is refreshed by touching.
        lock.file.set_modified(old).unwrap();
        let mut lock = lock;
        lock.touched = Instant::now() - TOUCH_EVERY;
        lock.touch_if_due();
        let age = SystemTime::now()
            .duration_since(fs::metadata(&path).unwrap().modified().unwrap())
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "{age:?}");
        assert!(matches!(try_lock(&spool).unwrap(), Attempt::Busy(_)));
    }

    #[test]
    fn a_lock_of_a_dead_ironpop_on_this_host_is_stale_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("bob");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        for (content, stale) in [
            (format!("{dead}\n{}\n", owner_tag()), true),
            (format!("{}\n{}\n", std::process::id(), owner_tag()), false),
            (format!("{dead}\n"), false), // an MDA's lock: only the 5-minute rule
            (format!("{dead}\nironpop@some-other-host\n"), false),
        ] {
            fs::write(lock_path(&spool), &content).unwrap();
            match try_lock(&spool).unwrap() {
                Attempt::Busy(why) => {
                    assert_eq!(why.contains("stale"), stale, "{content:?}: {why}")
                }
                Attempt::Held(_) => panic!("taken without removal"),
            }
            assert_eq!(!lock_path(&spool).exists(), stale, "{content:?}");
        }
    }

    #[test]
    fn release_leaves_a_lock_that_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("bob");
        let lock = held(try_lock(&spool).unwrap());
        // Someone declared ours stale and took over.
        fs::remove_file(lock_path(&spool)).unwrap();
        fs::write(lock_path(&spool), b"999\n").unwrap();
        drop(lock);
        assert_eq!(fs::read(lock_path(&spool)).unwrap(), b"999\n");
    }

    #[test]
    fn unwritable_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("missing-dir").join("bob");
        assert!(try_lock(&spool).is_err());
    }
}
