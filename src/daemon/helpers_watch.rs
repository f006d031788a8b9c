//! The privileged helpers as the daemon's children: reaped as they end, each end logged loudly, and the daemon's own end decided only when none is left.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The helper processes still running.
pub struct HelperWatch {
    alive: Vec<Pid>,
    started: usize,
}

impl HelperWatch {
    pub fn new(pids: &[Pid]) -> HelperWatch {
        HelperWatch {
            alive: pids.to_vec(),
            started: pids.len(),
        }
    }

    /// Collects every ended child. `Some(why)` once the last helper is
    /// gone: logins can no longer be checked, so the daemon must stop
    /// (for its supervisor to restart it). While one helper lives, the
    /// daemon serves on with fewer.
    pub fn reap(&mut self) -> Option<String> {
        loop {
            let (pid, how) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exited with status {code}")),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid, format!("was killed by {}", sig.as_str()))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return None,
                Ok(_) => continue,
            };
            if let Some(why) = self.ended(pid, &how) {
                return Some(why);
            }
        }
    }

    /// Records that `pid` ended `how`; `Some` when it was the last helper.
    fn ended(&mut self, pid: Pid, how: &str) -> Option<String> {
        let before = self.alive.len();
        self.alive.retain(|&p| p != pid);
        if self.alive.len() == before {
            return None;
        }
        let left = self.alive.len();
        if left == 0 {
            let why =
                format!("the last privileged helper (pid {pid}) {how}; no login can be checked");
            log::error!("{why}");
            return Some(why);
        }
        log::error!(
            "privileged helper (pid {pid}) {how}: {left} of {} helpers left, serving on; \
             restart ironpop to get them all back",
            self.started
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_stops_only_when_the_last_helper_ends() {
        let (a, b) = (Pid::from_raw(100), Pid::from_raw(101));
        let mut watch = HelperWatch::new(&[a, b]);
        assert_eq!(watch.ended(Pid::from_raw(7), "exited with status 0"), None);
        assert_eq!(watch.ended(a, "was killed by SIGKILL"), None);
        let why = watch.ended(b, "exited with status 1").unwrap();
        assert!(why.contains("pid 101") && why.contains("last"), "{why}");
    }

    #[test]
    fn no_helpers_never_stops() {
        let mut watch = HelperWatch::new(&[]);
        assert_eq!(watch.ended(Pid::from_raw(5), "exited with status 0"), None);
    }
}
