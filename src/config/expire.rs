//! `expire_days` (RFC 2449 EXPIRE): the configured value, its CAPA argument, and when a retrieved message is due.

/// `expire_days`: how long retrieved messages stay on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expire {
    /// Never deleted unless the client deletes them (the default).
    #[default]
    Never,
    /// Deleted at the first update more than this many days after their
    /// first retrieval; 0: at the end of the session that retrieved them.
    Days(u64),
}

impl Expire {
    /// The CAPA argument (RFC 2449 §6.7).
    pub fn capa(self) -> String {
        match self {
            Expire::Never => "EXPIRE NEVER".into(),
            Expire::Days(n) => format!("EXPIRE {n}"),
        }
    }

    /// Whether a message first retrieved at `retrieved_at` (0: never) is
    /// due for deletion at `now`.
    pub fn is_due(self, retrieved_at: i64, now: i64) -> bool {
        match self {
            Expire::Never => false,
            Expire::Days(days) => {
                let period = i64::try_from(days.saturating_mul(86_400)).unwrap_or(i64::MAX);
                retrieved_at != 0 && now.saturating_sub(retrieved_at) >= period
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expire_counts_whole_days_from_retrieval() {
        let day = 86_400;
        assert!(!Expire::Never.is_due(1, i64::MAX));
        assert!(!Expire::Days(3).is_due(0, 100 * day), "never retrieved");
        assert!(!Expire::Days(3).is_due(day, 4 * day - 1));
        assert!(Expire::Days(3).is_due(day, 4 * day));
        assert!(Expire::Days(0).is_due(day, day), "EXPIRE 0: same session");
        assert!(!Expire::Days(u64::MAX).is_due(1, i64::MAX - 1));
    }
}
