//! Keeps a flood of like events (refused connections, accept(2) out of descriptors) from flooding the log: a few lines per second, then one line with the count of what was left out.

use std::time::{Duration, Instant};

/// One kind of log line, limited to `per_second` lines a second.
pub struct LogLimiter {
    /// What the lines are about, for the count line ("refused connections").
    what: &'static str,
    per_second: u32,
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(what: &'static str, per_second: u32) -> LogLimiter {
        LogLimiter {
            what,
            per_second,
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log one more line at `now`. When a new second starts,
    /// first logs how many lines the last one left out.
    pub fn allow(&mut self, now: Instant) -> bool {
        let expired = match self.window_start {
            None => true,
            Some(start) => now.duration_since(start) >= Duration::from_secs(1),
        };
        if expired {
            if let Some(line) = self.count_line() {
                log::warn!("{line}");
            }
            self.window_start = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < self.per_second {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// The line that reports what was left out, if anything was.
    fn count_line(&self) -> Option<String> {
        (self.suppressed > 0).then(|| {
            format!(
                "{} more {} in the last second were not logged",
                self.suppressed, self.what
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_per_second_then_a_count() {
        let mut limiter = LogLimiter::new("refused connections", 5);
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| limiter.allow(t0)).count();
        assert_eq!(allowed, 5);
        assert_eq!(
            limiter.count_line().as_deref(),
            Some("15 more refused connections in the last second were not logged")
        );
        assert!(limiter.allow(t0 + Duration::from_millis(1001)));
        assert_eq!(limiter.count_line(), None, "count reset in the new window");
    }

    #[test]
    fn one_per_second() {
        let mut limiter = LogLimiter::new("accept errors", 1);
        let t0 = Instant::now();
        assert!(limiter.allow(t0));
        assert!(!limiter.allow(t0 + Duration::from_millis(10)));
        assert!(!limiter.allow(t0 + Duration::from_millis(999)));
        assert_eq!(limiter.suppressed, 2);
        assert!(limiter.allow(t0 + Duration::from_millis(1000)));
    }
}
