//! Delivery locks as Debian MDAs take them (Policy §11.6): fcntl, then dotlock (flock optional), in `lock_methods` order.
//!
//! Every attempt is non-blocking and all-or-nothing: if any method is
//! busy, the ones already taken are released before sleeping and trying
//! again, until `lock_timeout`. Holding the fcntl lock while waiting for
//! the dotlock would deadlock (until the timeout) against an MDA such as
//! procmail that takes the dotlock first and then waits for fcntl.
//!
//! The fcntl lock is taken as an OFD lock on the session's own descriptor
//! of the spool (see `ofd.rs`), so it costs no descriptor of its own. The
//! locks are held only while scanning and while updating, never while the
//! client thinks.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::dotlock::{self, Dotlock};
use super::ofd;
use super::MailboxError;
use crate::config::LockMethod;
use crate::limits;

/// The configured methods and how long to wait for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockPolicy {
    pub methods: Vec<LockMethod>,
    pub timeout: Duration,
}

/// Delivery locks held on one spool, borrowing its descriptor; dropping
/// releases them in reverse order.
#[derive(Debug)]
pub struct DeliveryLocks<'spool> {
    path: PathBuf,
    /// The spool descriptor whose open file description carries the OFD lock.
    fcntl: Option<&'spool File>,
    flock: Option<Flock<File>>,
    dotlock: Option<Dotlock>,
}

enum LockAttempt<'spool> {
    Held(DeliveryLocks<'spool>),
    Busy(String),
}

impl<'spool> DeliveryLocks<'spool> {
    /// Takes every configured lock on `spool` (open as `file`), retrying
    /// until `policy.timeout`; then [`MailboxError::Locked`] naming the
    /// lock that was busy.
    pub fn acquire(
        file: &'spool File,
        spool: &Path,
        policy: &LockPolicy,
    ) -> Result<DeliveryLocks<'spool>, MailboxError> {
        let start = Instant::now();
        let mut delay = limits::DELIVERY_LOCK_FIRST_RETRY;
        loop {
            let why = match attempt(file, spool, &policy.methods) {
                Ok(LockAttempt::Held(locks)) => return Ok(locks),
                Ok(LockAttempt::Busy(why)) => why,
                Err(source) => {
                    return Err(MailboxError::Io {
                        path: spool.to_path_buf(),
                        action: "locking",
                        source,
                    })
                }
            };
            let waited = start.elapsed();
            if waited >= policy.timeout {
                return Err(MailboxError::Locked {
                    path: spool.to_path_buf(),
                    detail: format!("{why}; gave up after {} s", policy.timeout.as_secs()),
                });
            }
            std::thread::sleep(delay.min(policy.timeout - waited));
            delay = (delay * 2).min(limits::DELIVERY_LOCK_MAX_RETRY);
        }
    }
}

fn attempt<'spool>(
    file: &'spool File,
    spool: &Path,
    methods: &[LockMethod],
) -> io::Result<LockAttempt<'spool>> {
    let mut held = DeliveryLocks {
        path: spool.to_path_buf(),
        fcntl: None,
        flock: None,
        dotlock: None,
    };
    // On every early return `held` is dropped, releasing what was taken.
    for method in methods {
        match method {
            LockMethod::Fcntl if held.fcntl.is_none() => {
                if !ofd::try_lock(file)? {
                    return Ok(LockAttempt::Busy(format!(
                        "another program holds an fcntl lock on {}",
                        spool.display()
                    )));
                }
                held.fcntl = Some(file);
            }
            LockMethod::Flock if held.flock.is_none() => {
                // nix's guard owns its descriptor: a duplicate, which
                // shares the open file description and so the lock.
                match Flock::lock(file.try_clone()?, FlockArg::LockExclusiveNonblock) {
                    Ok(l) => held.flock = Some(l),
                    Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                        return Ok(LockAttempt::Busy(format!(
                            "another program holds a flock lock on {}",
                            spool.display()
                        )))
                    }
                    Err((_, e)) => return Err(e.into()),
                }
            }
            LockMethod::Dotlock if held.dotlock.is_none() => match dotlock::try_lock(spool) {
                Ok(dotlock::Attempt::Held(d)) => held.dotlock = Some(d),
                Ok(dotlock::Attempt::Busy(why)) => return Ok(LockAttempt::Busy(why)),
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "cannot create dotlock {}: {e}",
                            dotlock::lock_path(spool).display()
                        ),
                    ))
                }
            },
            _ => {} // a method listed twice
        }
    }
    Ok(LockAttempt::Held(held))
}

impl Drop for DeliveryLocks<'_> {
    fn drop(&mut self) {
        drop(self.dotlock.take());
        drop(self.flock.take());
        if let Some(f) = self.fcntl.take() {
            // The session keeps its descriptor open, and with it the lock,
            // until it is released explicitly.
            if let Err(e) = ofd::unlock(f) {
                log::error!("cannot release fcntl lock on {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(methods: &[LockMethod], ms: u64) -> LockPolicy {
        LockPolicy {
            methods: methods.to_vec(),
            timeout: Duration::from_millis(ms),
        }
    }

    fn spool() -> (tempfile::TempDir, PathBuf, File) {
        let (dir, path) = crate::test_support::scratch_file("bob", b"From a\n\nx\n");
        let f = File::options().read(true).write(true).open(&path).unwrap();
        (dir, path, f)
    }

    #[test]
    fn takes_all_methods_and_releases_them() {
        let (_dir, path, f) = spool();
        let all = [LockMethod::Fcntl, LockMethod::Dotlock, LockMethod::Flock];
        let locks = DeliveryLocks::acquire(&f, &path, &policy(&all, 100)).unwrap();
        assert!(dotlock::lock_path(&path).exists());
        let other = File::options().read(true).write(true).open(&path).unwrap();
        assert!(!ofd::try_lock(&other).unwrap());
        drop(locks);
        assert!(!dotlock::lock_path(&path).exists());
        assert!(ofd::try_lock(&other).unwrap());
        ofd::unlock(&other).unwrap();
        // Release did not close or unlock the session's descriptor for good.
        let again = DeliveryLocks::acquire(&f, &path, &policy(&all, 100)).unwrap();
        drop(again);
    }

    #[test]
    fn busy_fcntl_times_out_with_a_reason_and_holds_nothing() {
        let (_dir, path, f) = spool();
        let mda = File::options().read(true).write(true).open(&path).unwrap();
        assert!(ofd::try_lock(&mda).unwrap());
        let start = Instant::now();
        let e = DeliveryLocks::acquire(
            &f,
            &path,
            &policy(&[LockMethod::Dotlock, LockMethod::Fcntl], 150),
        )
        .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(matches!(e, MailboxError::Locked { .. }), "{e}");
        assert!(e.to_string().contains("fcntl lock"), "{e}");
        assert!(!e.is_permanent() && !e.is_in_use());
        assert!(
            !dotlock::lock_path(&path).exists(),
            "the dotlock taken first must be released while waiting"
        );
    }

    #[test]
    fn waits_for_a_dotlock_that_goes_away() {
        let (_dir, path, f) = spool();
        let lock = dotlock::lock_path(&path);
        std::fs::write(&lock, b"1\n").unwrap();
        let remover = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                std::fs::remove_file(lock).unwrap();
            })
        };
        let p = policy(&[LockMethod::Fcntl, LockMethod::Dotlock], 5000);
        let locks = DeliveryLocks::acquire(&f, &path, &p).unwrap();
        remover.join().unwrap();
        let content = std::fs::read_to_string(&lock).unwrap();
        assert!(
            content.starts_with(&format!("{}\n", std::process::id())),
            "{content}"
        );
        drop(locks);
    }

    #[test]
    fn busy_flock_is_detected() {
        let (_dir, path, f) = spool();
        let mda = Flock::lock(File::open(&path).unwrap(), FlockArg::LockExclusive).unwrap();
        let e = DeliveryLocks::acquire(&f, &path, &policy(&[LockMethod::Flock], 50)).unwrap_err();
        assert!(e.to_string().contains("flock"), "{e}");
        drop(mda);
        drop(DeliveryLocks::acquire(&f, &path, &policy(&[LockMethod::Flock], 50)).unwrap());
    }
}
