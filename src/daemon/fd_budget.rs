//! The file-descriptor budget: what `max_sessions` needs at most, checked against RLIMIT_NOFILE at startup (raising the soft limit where the hard one allows) and by `ironpop -t`.

use std::fmt;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::limits::{accept_queue_len, FDS_FIXED, FDS_PER_QUEUED, FDS_PER_SESSION};

/// Descriptors `max_sessions` sessions and a full queue need at most.
pub fn needed(max_sessions: usize) -> u64 {
    let sessions = max_sessions as u64;
    let queued = accept_queue_len(max_sessions) as u64;
    FDS_FIXED
        .saturating_add(sessions.saturating_mul(FDS_PER_SESSION))
        .saturating_add(queued.saturating_mul(FDS_PER_QUEUED))
}

/// The most sessions `limit` descriptors carry.
pub fn most_sessions(limit: u64) -> usize {
    let mut n = usize::try_from(limit.saturating_sub(FDS_FIXED) / FDS_PER_SESSION).unwrap_or(0);
    while n > 0 && needed(n) > limit {
        n -= 1;
    }
    n
}

/// How `max_sessions` fares against a soft and a hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The soft limit carries it.
    Fits { needed: u64, soft: u64 },
    /// The soft limit must be raised to `needed` (the hard one allows).
    RaiseSoft { needed: u64, soft: u64, hard: u64 },
    /// Even the hard limit cannot carry it.
    TooFew {
        max_sessions: usize,
        needed: u64,
        hard: u64,
    },
}

/// The rule, from numbers alone.
pub fn fit(max_sessions: usize, soft: u64, hard: u64) -> Fit {
    let needed = needed(max_sessions);
    if needed <= soft {
        Fit::Fits { needed, soft }
    } else if needed <= hard {
        Fit::RaiseSoft { needed, soft, hard }
    } else {
        Fit::TooFew {
            max_sessions,
            needed,
            hard,
        }
    }
}

impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fit::Fits { needed, soft } => write!(
                f,
                "needs at most {needed} file descriptors; the limit is {soft}"
            ),
            Fit::RaiseSoft { needed, soft, hard } => write!(
                f,
                "needs at most {needed} file descriptors; the soft limit {soft} is raised to it \
                 (hard limit {hard})"
            ),
            Fit::TooFew {
                max_sessions,
                needed,
                hard,
            } => write!(
                f,
                "max_sessions = {max_sessions} needs up to {needed} file descriptors \
                 ({FDS_PER_SESSION} per session), but the limit is {hard}: lower max_sessions \
                 to {} or raise the limit (LimitNOFILE= in the service, ulimit -n)",
                most_sessions(hard)
            ),
        }
    }
}

/// This process's soft and hard RLIMIT_NOFILE (`None`: unlimited or unknown).
fn current() -> Option<(u64, u64)> {
    getrlimit(Resource::RLIMIT_NOFILE).ok()
}

/// `ironpop -t`: the verdict under this process's limits.
pub fn check(max_sessions: usize) -> Option<Fit> {
    let (soft, hard) = current()?;
    Some(fit(max_sessions, soft, hard))
}

/// Startup: raises the soft limit as far as needed, or refuses a
/// `max_sessions` the hard limit cannot carry (the error names both).
pub fn apply(max_sessions: usize) -> Result<(), String> {
    let Some((soft, hard)) = current() else {
        return Ok(());
    };
    match fit(max_sessions, soft, hard) {
        Fit::Fits { .. } => Ok(()),
        Fit::RaiseSoft { needed, .. } => setrlimit(Resource::RLIMIT_NOFILE, needed, hard)
            .map_err(|e| format!("cannot raise the file descriptor limit to {needed}: {e}")),
        too_few @ Fit::TooFew { .. } => Err(too_few.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_fits_a_debian_service() {
        let n = crate::limits::DEFAULT_MAX_SESSIONS;
        // The packaged unit's LimitNOFILE=16384; systemd's default hard limit.
        assert!(
            matches!(fit(n, 16384, 16384), Fit::Fits { .. }),
            "{}",
            needed(n)
        );
        assert!(matches!(fit(n, 1024, 524_288), Fit::RaiseSoft { .. }));
    }

    #[test]
    fn too_few_names_both_numbers_and_what_fits() {
        let f = fit(4000, 1024, 4096);
        let text = f.to_string();
        assert!(text.contains("max_sessions = 4000"), "{text}");
        assert!(text.contains(&needed(4000).to_string()), "{text}");
        assert!(text.contains("the limit is 4096"), "{text}");
        let most = most_sessions(4096);
        assert!(
            text.contains(&format!("lower max_sessions to {most}")),
            "{text}"
        );
        assert!(needed(most) <= 4096 && needed(most + 1) > 4096);
    }

    #[test]
    fn arithmetic() {
        assert_eq!(needed(1), FDS_FIXED + FDS_PER_SESSION + FDS_PER_QUEUED);
        assert_eq!(
            needed(1000),
            FDS_FIXED + 1000 * FDS_PER_SESSION + 256 * FDS_PER_QUEUED
        );
        assert_eq!(most_sessions(10), 0);
        let exact = needed(10);
        assert_eq!(exact, 144, "64 fixed, 7 per session, 1 per queued");
        assert!(matches!(fit(10, exact, exact), Fit::Fits { .. }));
        assert!(matches!(fit(10, exact - 1, exact - 1), Fit::TooFew { .. }));
    }
}
