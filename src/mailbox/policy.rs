//! The RFC 2449 retention policies: EXPIRE (delete retrieved mail after N days) and LOGIN-DELAY.
//!
//! Also the clock both read. In debug builds (the test suite), the
//! environment variable `IRONPOP_TEST_CLOCK_FILE` may name a file holding
//! the current Unix time, so tests can move time forward between
//! sessions; release builds do not contain that code at all, so no
//! environment or file can change the time a production daemon sees.

use std::fs;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use super::state::{self, SpoolKey, StateDir};
use crate::config::Expire;

/// What the maildrop enforces besides the client's DELE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailPolicy {
    pub expire: Expire,
    /// Minimum seconds between two logins to one spool; 0: none.
    pub login_delay: u64,
}

impl MailPolicy {
    /// The CAPA lines these policies add.
    pub fn capa_lines(&self) -> Vec<String> {
        let mut lines = vec![self.expire.capa()];
        if self.login_delay > 0 {
            lines.push(format!("LOGIN-DELAY {}", self.login_delay));
        }
        lines
    }
}

/// Seconds since the Unix epoch (see the module documentation for tests).
pub fn now() -> i64 {
    #[cfg(debug_assertions)]
    if let Some(t) = test_clock() {
        return t;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(debug_assertions)]
fn test_clock() -> Option<i64> {
    let path = std::env::var_os("IRONPOP_TEST_CLOCK_FILE")?;
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `login_delay`: `Ok(())` and the login is recorded, or `Err(seconds)`
/// to wait because the previous login of this spool was too recent. A
/// refused login is not recorded (a client polling a little too often is
/// not locked out for good); a clock that went backwards lets the login
/// through. Runs under the session lock, so logins of one spool are
/// checked one at a time, also across nodes sharing `state_dir`.
pub fn check_login_delay(
    state: &StateDir,
    spool: &SpoolKey,
    delay: u64,
    now: i64,
) -> io::Result<Result<(), u64>> {
    if delay == 0 {
        return Ok(Ok(()));
    }
    let path = state.last_login(spool);
    let last = match fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<i64>().ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(last) = last {
        let since = now.saturating_sub(last);
        if (0..i64::try_from(delay).unwrap_or(i64::MAX)).contains(&since) {
            return Ok(Err(delay - since as u64));
        }
    }
    let data = format!("{now}\n");
    state::replace_file(&state.last_login_tmp(spool), &path, data.as_bytes())?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capa_says_the_configured_values() {
        assert_eq!(MailPolicy::default().capa_lines(), ["EXPIRE NEVER"]);
        let p = MailPolicy {
            expire: Expire::Days(0),
            login_delay: 900,
        };
        assert_eq!(p.capa_lines(), ["EXPIRE 0", "LOGIN-DELAY 900"]);
    }

    #[test]
    fn login_delay_refuses_early_logins_without_recording_them() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let spool = SpoolKey::of(&dir.path().join("bob"));
        assert_eq!(check_login_delay(&state, &spool, 0, 100).unwrap(), Ok(()));
        assert!(!state.last_login(&spool).exists(), "no delay, no file");
        assert_eq!(check_login_delay(&state, &spool, 60, 1000).unwrap(), Ok(()));
        assert_eq!(
            check_login_delay(&state, &spool, 60, 1010).unwrap(),
            Err(50)
        );
        assert_eq!(check_login_delay(&state, &spool, 60, 1059).unwrap(), Err(1));
        assert_eq!(check_login_delay(&state, &spool, 60, 1060).unwrap(), Ok(()));
        assert_eq!(
            check_login_delay(&state, &spool, 60, 1100).unwrap(),
            Err(20)
        );
        // The clock went back an hour: let the user in.
        assert_eq!(check_login_delay(&state, &spool, 60, 100).unwrap(), Ok(()));
    }
}
