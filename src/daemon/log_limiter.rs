//! Keeps a flood of like events (refused connections, accept(2) out of descriptors) from flooding the log: a few lines per second, then one line with the count of what was left out.

use std::time::{Duration, Instant};

/// The span the per-second limit counts over.
const WINDOW: Duration = Duration::from_secs(1);

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
        self.flush(now);
        if self.window_start.is_none() {
            self.window_start = Some(now);
        }
        if self.logged < self.per_second {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// When the count of left-out lines is due, if any were left out: the
    /// poll loop wakes then and calls [`LogLimiter::flush`], so the count
    /// of a burst that stopped is written too.
    pub fn due(&self) -> Option<Instant> {
        self.window_start
            .filter(|_| self.suppressed > 0)
            .map(|start| start + WINDOW)
    }

    /// Logs the count of the second that ended by `now`, if lines were
    /// left out, and starts afresh.
    pub fn flush(&mut self, now: Instant) {
        if let Some(line) = self.close_window(now) {
            log::warn!("{line}");
        }
    }

    /// Ends the window if its second is over, with its count line.
    fn close_window(&mut self, now: Instant) -> Option<String> {
        let start = self.window_start?;
        if now.saturating_duration_since(start) < WINDOW {
            return None;
        }
        let line = self.count_line();
        self.window_start = None;
        self.logged = 0;
        self.suppressed = 0;
        line
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
    fn the_count_of_a_burst_that_stopped_is_due_at_the_end_of_its_second() {
        let mut limiter = LogLimiter::new("refused connections", 2);
        let t0 = Instant::now();
        assert_eq!(limiter.due(), None);
        assert!(limiter.allow(t0));
        assert!(limiter.allow(t0));
        assert_eq!(limiter.due(), None, "nothing left out yet");
        for _ in 0..3 {
            assert!(!limiter.allow(t0 + Duration::from_millis(100)));
        }
        // No later event comes: the poll loop wakes at `due` and flushes.
        assert_eq!(limiter.due(), Some(t0 + WINDOW));
        assert_eq!(limiter.close_window(t0 + Duration::from_millis(999)), None);
        assert_eq!(
            limiter.close_window(t0 + WINDOW).as_deref(),
            Some("3 more refused connections in the last second were not logged")
        );
        assert_eq!(limiter.due(), None, "written once");
        assert_eq!(limiter.close_window(t0 + 2 * WINDOW), None);
        assert!(limiter.allow(t0 + 3 * WINDOW), "a fresh second");
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
