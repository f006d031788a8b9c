//! `<spool>.lock` dotlocks, created NFS-safely the way liblockfile does.
//!
//! Creation: write a uniquely named temporary file in the spool's
//! directory, link(2) it to `<spool>.lock`, and decide by the temporary
//! file's link count, not by link()'s return value (over NFS the reply to
//! a link that succeeded can be lost and the retransmission fail with
//! EEXIST).
//!
//! Another party's lock is broken only when it is provably stale: it names
//! this host and an ironpop process that no longer exists, or it has been
//! unchanged for [`limits::DOTLOCK_STALE_AFTER`] (no shorter than the
//! common MDAs' own rules; "now" is the temporary file's mtime, i.e. the
//! file server's clock, so client clock skew does not matter). A pid
//! without a host proves nothing (it may be another host's or another
//! pid namespace's), so such locks, and every lock of another host, wait
//! for the age rule. Only the lock file that was judged is removed: it is
//! renamed away, compared (inode and mtime), and put back if it was a new
//! one. A held lock is touched every [`limits::DOTLOCK_TOUCH_EVERY`] for as long as it is
//! held, also through a long fsync, by one thread per process that serves
//! every held lock (a thread per lock was a thread start and join, some
//! twenty system calls, at every login); on release it is removed only if
//! it is still ours.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use nix::fcntl::OFlag;
use nix::sys::stat::futimens;
use nix::sys::time::TimeSpec;

use crate::limits;

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
    dev: u64,
    ino: u64,
    /// Its entry in the keeper's list (`None`: no keeper thread could be
    /// started; the lock is still valid, only not refreshed).
    kept: Option<u64>,
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
    let kept = keep_fresh(file, &path);
    Ok(Attempt::Held(Dotlock {
        path,
        dev,
        ino,
        kept,
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

/// The held dotlocks of this process and their keeper thread.
struct Keeper {
    /// The process that started the thread: a forked child has no thread
    /// and starts its own.
    pid: u32,
    /// Open lock files (entry number → file, path for the log); shared
    /// with the thread while it touches them.
    held: HashMap<u64, Arc<(File, PathBuf)>>,
}

fn keeper() -> MutexGuard<'static, Option<Keeper>> {
    static KEEPER: Mutex<Option<Keeper>> = Mutex::new(None);
    // A panic elsewhere while holding the mutex leaves a consistent list.
    KEEPER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Hands the lock `file` to the keeper thread (started on first use),
/// which touches it (server time) every [`limits::DOTLOCK_TOUCH_EVERY`] until [`forget`].
/// `None` when no thread could be started.
fn keep_fresh(file: File, path: &Path) -> Option<u64> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let mut keeper = keeper();
    if keeper.as_ref().map(|k| k.pid) != Some(pid) {
        std::thread::Builder::new()
            .name("dotlock".into())
            .stack_size(64 * 1024)
            .spawn(touch_held_locks)
            .ok()?;
        *keeper = Some(Keeper {
            pid,
            held: HashMap::new(),
        });
    }
    let entry = NEXT.fetch_add(1, Ordering::Relaxed);
    keeper
        .as_mut()?
        .held
        .insert(entry, Arc::new((file, path.to_path_buf())));
    Some(entry)
}

/// Takes a lock off the keeper's list. A touch already under way may
/// still land on the file: harmless, it goes through the descriptor, so
/// it reaches only the inode this process created, never a lock someone
/// else makes under the same name later.
fn forget(entry: u64) {
    if let Some(k) = keeper().as_mut() {
        k.held.remove(&entry);
    }
}

/// The keeper thread: lives as long as the process.
fn touch_held_locks() {
    loop {
        std::thread::sleep(limits::DOTLOCK_TOUCH_EVERY);
        // Touched outside the mutex: a touch that hangs (an NFS server
        // gone) must not stop other sessions taking or releasing locks.
        let held: Vec<_> = keeper()
            .iter()
            .flat_map(|k| k.held.values().cloned())
            .collect();
        for lock in held {
            let (file, path) = &*lock;
            if let Err(e) = futimens(file, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW) {
                log::warn!("cannot touch dotlock {}: {e}", path.display());
            }
        }
    }
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
/// other content (MDAs write only a pid, or nothing) waits for the age
/// rule ([`limits::DOTLOCK_STALE_AFTER`]), since a pid from another host
/// or pid namespace proves nothing.
pub fn left_by_dead_ironpop(path: &Path) -> bool {
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
    if age < limits::DOTLOCK_STALE_AFTER && !dead_owner {
        return Ok(Attempt::Busy(format!(
            "dotlock {} is held (last changed {} s ago)",
            path.display(),
            age.as_secs()
        )));
    }
    let why = if dead_owner {
        "left by an ironpop process of this host that no longer exists".to_string()
    } else {
        format!("unchanged for {} s", age.as_secs())
    };
    if remove_if_same(path, &meta)? {
        log::warn!("removed stale dotlock {} ({why})", path.display());
    }
    Ok(Attempt::Busy(format!(
        "{} was stale and has been removed",
        path.display()
    )))
}

/// Removes the lock file at `path` only if it is still the one described
/// by `judged` (same inode, same mtime): it is renamed to a name of our
/// own first, and linked back if it turns out to be a newer lock.
/// `Ok(true)` when the judged file was removed.
pub fn remove_if_same(path: &Path, judged: &fs::Metadata) -> io::Result<bool> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let taken = dir.join(unique_name());
    match fs::rename(path, &taken) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    let now = fs::symlink_metadata(&taken)?;
    let same = now.ino() == judged.ino()
        && now.dev() == judged.dev()
        && now.modified().ok() == judged.modified().ok();
    if !same {
        // A new lock got in between: give it back, unless yet another one
        // exists by now (link never replaces), in which case that one wins.
        let _ = fs::hard_link(&taken, path);
    }
    fs::remove_file(&taken)?;
    Ok(same)
}

impl Dotlock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Dotlock {
    fn drop(&mut self) {
        if let Some(entry) = self.kept.take() {
            forget(entry);
        }
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
    use std::time::Duration;

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
        // Ours, even if old-looking, is refreshed by its keeper thread,
        // whatever the holder is doing (here: sleeping, as in a long fsync).
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::thread::sleep(limits::DOTLOCK_TOUCH_EVERY * 3);
        let age = SystemTime::now()
            .duration_since(fs::metadata(&path).unwrap().modified().unwrap())
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "{age:?}");
        assert!(matches!(try_lock(&spool).unwrap(), Attempt::Busy(_)));
        drop(lock);
    }

    #[test]
    fn only_the_lock_judged_stale_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir.path().join("bob"));
        fs::write(&path, b"12345\n").unwrap();
        let judged = fs::symlink_metadata(&path).unwrap();
        // Between the judgement and the removal, its owner released it and
        // an MDA took a fresh lock.
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"777\n").unwrap();
        assert!(!remove_if_same(&path, &judged).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"777\n");
        let judged = fs::symlink_metadata(&path).unwrap();
        assert!(remove_if_same(&path, &judged).unwrap());
        assert!(!path.exists());
        assert!(leftovers(dir.path()).is_empty());
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
            (format!("{dead}\n"), false), // an MDA's lock: only the age rule
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
