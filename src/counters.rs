//! The daemon's event counters since start: one atomic per event, bumped with one line from anywhere.
//!
//! `counters::bump(Counter::UpdatesCommitted)` (or `counters::add(c, n)`)
//! is all a module needs; `ironpop --stats` reads them through the control
//! socket. Counting is relaxed atomics: a counter is a tally, not a lock,
//! and a reader may see one event a moment early or late.
//!
//! Each counter has a name for `--stats`; the OpenMetrics exposition
//! groups them into families with a label (`reason`, `method`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares `Counter` and `ALL` from one list, so they cannot disagree.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Every event the daemon counts.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Counter {
            $($(#[$doc])* $name,)*
        }

        /// Every counter, in `--stats` order.
        pub const ALL: &[Counter] = &[$(Counter::$name,)*];
    };
}

counters! {
    ConnectionsAccepted,
    /// Refused: every worker busy and the queue full (`max_sessions`).
    RefusedLimit,
    /// Refused: `max_sessions_per_ip` reached.
    RefusedPerAddress,
    /// Refused: the address is blocked for failed logins.
    RefusedThrottle,
    /// An idle unauthenticated connection closed to make room.
    RefusedEviction,
    LoginsSucceededUserPass,
    LoginsSucceededPlain,
    LoginsSucceededScram,
    LoginsSucceededExternal,
    LoginsFailedUserPass,
    LoginsFailedPlain,
    LoginsFailedScram,
    LoginsFailedExternal,
    /// RETR: messages and octets sent.
    MessagesRetrieved,
    BytesRetrieved,
    /// Messages removed from spools by committed updates.
    MessagesDeleted,
    UpdatesCommitted,
    UpdatesFailed,
    /// Interrupted updates undone or finished from their journals.
    JournalsRecovered,
    /// Requests to the privileged helpers, and those without an answer
    /// (each counted once: a request another helper answers after the
    /// first died is not, a late reply given up later is not again).
    HelperRequests,
    HelperFailures,
    TlsHandshakesFailed,
    /// Sessions ended with `ironpop --kick`.
    SessionsKicked,
}

use Counter::*;

static VALUES: [AtomicU64; ALL.len()] = [const { AtomicU64::new(0) }; ALL.len()];

/// Counts one `counter` event.
pub fn bump(counter: Counter) {
    add(counter, 1);
}

/// Counts `n` `counter` events (octets, messages).
pub fn add(counter: Counter, n: u64) {
    if let Some(value) = VALUES.get(counter as usize) {
        value.fetch_add(n, Ordering::Relaxed);
    }
}

/// The count so far.
pub fn get(counter: Counter) -> u64 {
    VALUES
        .get(counter as usize)
        .map_or(0, |v| v.load(Ordering::Relaxed))
}

/// A login that succeeded (`ok`) or failed with `method`, named as the
/// log lines name it: `USER` or a SASL mechanism.
pub fn login(method: &str, ok: bool) {
    let counter = match (method, ok) {
        ("PLAIN", true) => LoginsSucceededPlain,
        ("SCRAM-SHA-256", true) => LoginsSucceededScram,
        ("EXTERNAL", true) => LoginsSucceededExternal,
        (_, true) => LoginsSucceededUserPass,
        ("PLAIN", false) => LoginsFailedPlain,
        ("SCRAM-SHA-256", false) => LoginsFailedScram,
        ("EXTERNAL", false) => LoginsFailedExternal,
        (_, false) => LoginsFailedUserPass,
    };
    bump(counter);
}

impl Counter {
    /// The `--stats` name, one word: the family, then the label's value.
    pub fn name(self) -> String {
        match self.family() {
            (family, None) => family.to_owned(),
            (family, Some((_, value))) => {
                let value = value.to_ascii_lowercase().replace('-', "_");
                format!("{family}_{value}")
            }
        }
    }

    /// The OpenMetrics family (without `_total`) and its label, if any.
    pub fn family(self) -> (&'static str, Option<(&'static str, &'static str)>) {
        let reason = |v| ("connections_refused", Some(("reason", v)));
        let ok = |v| ("logins_succeeded", Some(("method", v)));
        let failed = |v| ("logins_failed", Some(("method", v)));
        match self {
            ConnectionsAccepted => ("connections_accepted", None),
            RefusedLimit => reason("limit"),
            RefusedPerAddress => reason("per_address"),
            RefusedThrottle => reason("throttle"),
            RefusedEviction => reason("eviction"),
            LoginsSucceededUserPass => ok("USER"),
            LoginsSucceededPlain => ok("PLAIN"),
            LoginsSucceededScram => ok("SCRAM-SHA-256"),
            LoginsSucceededExternal => ok("EXTERNAL"),
            LoginsFailedUserPass => failed("USER"),
            LoginsFailedPlain => failed("PLAIN"),
            LoginsFailedScram => failed("SCRAM-SHA-256"),
            LoginsFailedExternal => failed("EXTERNAL"),
            MessagesRetrieved => ("messages_retrieved", None),
            BytesRetrieved => ("bytes_retrieved", None),
            MessagesDeleted => ("messages_deleted", None),
            UpdatesCommitted => ("updates_committed", None),
            UpdatesFailed => ("updates_failed", None),
            JournalsRecovered => ("journals_recovered", None),
            HelperRequests => ("helper_requests", None),
            HelperFailures => ("helper_failures", None),
            TlsHandshakesFailed => ("tls_handshakes_failed", None),
            SessionsKicked => ("sessions_kicked", None),
        }
    }

    /// One line of help for the OpenMetrics `# HELP` of its family.
    pub fn help(self) -> &'static str {
        match self.family().0 {
            "connections_accepted" => "Connections accepted and handed to a worker.",
            "connections_refused" => "Connections refused, by reason.",
            "logins_succeeded" => "Logins that reached TRANSACTION state, by method.",
            "logins_failed" => "Logins refused for wrong credentials, by method.",
            "messages_retrieved" => "Messages sent with RETR.",
            "bytes_retrieved" => "Octets of messages sent with RETR.",
            "messages_deleted" => "Messages removed from spools by committed updates.",
            "updates_committed" => "UPDATE states that committed.",
            "updates_failed" => "UPDATE states that failed and changed nothing.",
            "journals_recovered" => "Interrupted updates recovered from their journal.",
            "helper_requests" => "Requests to the privileged helpers.",
            "helper_failures" => "Helper requests that got no answer.",
            "tls_handshakes_failed" => "TLS handshakes that failed.",
            _ => "Sessions ended by ironpop --kick.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_listed_once() {
        for (i, c) in ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?} out of place in ALL");
        }
    }

    #[test]
    fn names_are_unique_words() {
        let mut names: Vec<String> = ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(names.iter().all(|n| n
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    }

    #[test]
    fn bump_add_and_login_count() {
        // Other tests in this process may count too: compare differences.
        let before = get(BytesRetrieved);
        add(BytesRetrieved, 10);
        bump(BytesRetrieved);
        assert!(get(BytesRetrieved) >= before + 11);
        let before = (get(LoginsFailedScram), get(LoginsSucceededUserPass));
        login("SCRAM-SHA-256", false);
        login("USER", true);
        assert!(get(LoginsFailedScram) > before.0);
        assert!(get(LoginsSucceededUserPass) > before.1);
    }
}
