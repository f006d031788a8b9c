//! Brute-force resistance per client address: a failed-login delay that grows with repeated failures, then a temporary block.
//!
//! The base delay (`auth_fail_delay`) is the driver's; this adds to it,
//! doubling with each failure from the same address up to a cap, and after
//! [`Policy::block_after`] failures refuses the address outright for
//! [`Policy::block_for`]. A successful login from the address resets it.
//! Memory is bounded: at most [`Policy::max_addresses`] are remembered,
//! the stalest forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::account::{AuthOutcome, Login};
use crate::authenticator::{Authenticator, ScramLogin};
use crate::limits;
use crate::sasl::{SecretLookup, KEY_LEN};

/// The knobs; [`Policy::new`] gives the defaults (limits.rs `THROTTLE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The driver's delay before every failure reply (`auth_fail_delay`).
    pub base: Duration,
    /// The total delay never grows beyond this.
    pub max_delay: Duration,
    /// Failures in a row after which the address is refused.
    pub block_after: u32,
    /// How long a blocked address stays refused.
    pub block_for: Duration,
    /// Failures older than this are forgotten.
    pub forget_after: Duration,
    pub max_addresses: usize,
}

impl Policy {
    pub fn new(base: Duration) -> Policy {
        Policy {
            base,
            max_delay: limits::THROTTLE_MAX_DELAY,
            block_after: limits::THROTTLE_BLOCK_AFTER,
            block_for: limits::THROTTLE_BLOCK_FOR,
            forget_after: limits::THROTTLE_FORGET_AFTER,
            max_addresses: limits::THROTTLE_MAX_ADDRESSES,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Failed-login bookkeeping for every client address.
pub struct Throttle {
    policy: Policy,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl Throttle {
    pub fn new(policy: Policy) -> Throttle {
        Throttle {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err(remaining)` while `ip` is blocked.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = ip.to_canonical();
        match self.lock().get(&ip).and_then(|e| e.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns the delay to add to the base one.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Duration {
        let ip = ip.to_canonical();
        let p = &self.policy;
        let mut entries = self.lock();
        if !entries.contains_key(&ip) && entries.len() >= p.max_addresses {
            evict(&mut entries, now, p.forget_after);
        }
        let entry = entries.entry(ip).or_insert(Entry {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        if now.duration_since(entry.last) > p.forget_after {
            entry.failures = 0;
            entry.blocked_until = None;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        if entry.failures >= p.block_after {
            entry.blocked_until = Some(now + p.block_for);
        }
        extra_delay(p, entry.failures)
    }

    /// A successful login clears the address's record.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().remove(&ip.to_canonical());
    }

    /// Addresses currently remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// base × (2^(n-1) − 1), so the total (base + extra) doubles with each
/// failure, capped at `max_delay`.
fn extra_delay(p: &Policy, failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1).min(16))
        .unwrap_or(u32::MAX);
    let total = p.base.saturating_mul(factor).min(p.max_delay.max(p.base));
    total.saturating_sub(p.base)
}

/// Makes room: drops entries not seen for `forget_after`, else the stalest.
fn evict(entries: &mut HashMap<IpAddr, Entry>, now: Instant, forget_after: Duration) {
    let before = entries.len();
    entries.retain(|_, e| {
        now.duration_since(e.last) <= forget_after || e.blocked_until.is_some_and(|u| u > now)
    });
    if entries.len() < before {
        return;
    }
    if let Some(stalest) = entries
        .iter()
        .min_by_key(|(_, e)| e.last)
        .map(|(ip, _)| *ip)
    {
        entries.remove(&stalest);
    }
}

/// One session's authenticator with the throttle of its client address
/// in front: refuses a blocked address without spending a hash, and makes
/// each further failure slower.
pub struct ThrottledAuth {
    pub inner: Arc<dyn Authenticator>,
    pub throttle: Arc<Throttle>,
    /// `None` (no address, e.g. inetd on a pipe): not throttled.
    pub ip: Option<IpAddr>,
}

impl ThrottledAuth {
    /// Runs one credential check under the per-address policy: refused
    /// while the address is blocked, slowed after failures, reset on
    /// success. `who` names the login for the log line.
    fn checked<T>(
        &self,
        who: &str,
        check: impl FnOnce() -> T,
        outcome: impl Fn(&T) -> &AuthOutcome<Login>,
    ) -> Result<T, AuthOutcome<Login>> {
        let Some(ip) = self.ip else {
            return Ok(check());
        };
        if let Err(left) = self.throttle.check(ip, Instant::now()) {
            log::warn!(
                "auth refused: user={who} rip={ip} reason=too many failed logins, blocked for {}s",
                left.as_secs().max(1)
            );
            return Err(AuthOutcome::Unavailable(format!(
                "too many failed logins from {ip}; blocked for {}s",
                left.as_secs().max(1)
            )));
        }
        let result = check();
        match outcome(&result) {
            AuthOutcome::Rejected => {
                let extra = self.throttle.failed(ip, Instant::now());
                if !extra.is_zero() {
                    std::thread::sleep(extra);
                }
            }
            AuthOutcome::Accepted(_) => self.throttle.succeeded(ip),
            AuthOutcome::Unavailable(_) => {}
        }
        Ok(result)
    }
}

impl Authenticator for ThrottledAuth {
    fn verify_password(&self, user: &str, password: &[u8]) -> AuthOutcome<Login> {
        self.checked(user, || self.inner.verify_password(user, password), |o| o)
            .unwrap_or_else(|refused| refused)
    }

    fn verify_certificate(
        &self,
        chain: &[rustls::pki_types::CertificateDer<'_>],
        authzid: &str,
    ) -> AuthOutcome<Login> {
        self.checked(
            "(certificate)",
            || self.inner.verify_certificate(chain, authzid),
            |o| o,
        )
        .unwrap_or_else(|refused| refused)
    }

    fn offers_scram(&self) -> bool {
        self.inner.offers_scram()
    }

    fn scram_params(&self, user: &str) -> SecretLookup {
        self.inner.scram_params(user)
    }

    fn scram_login(&self, user: &str, auth_message: &[u8], proof: &[u8; KEY_LEN]) -> ScramLogin {
        self.checked(
            user,
            || self.inner.scram_login(user, auth_message, proof),
            |l| &l.outcome,
        )
        .unwrap_or_else(ScramLogin::failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Principal;
    use crate::test_support::ip;

    #[test]
    fn delay_doubles_up_to_the_cap() {
        let p = Policy::new(Duration::from_secs(2));
        let extras: Vec<u64> = (1..=6).map(|n| extra_delay(&p, n).as_secs()).collect();
        assert_eq!(extras, vec![0, 2, 6, 14, 28, 28]);
        assert_eq!(extra_delay(&p, u32::MAX), Duration::from_secs(28));
        let none = Policy::new(Duration::ZERO);
        assert_eq!(extra_delay(&none, 9), Duration::ZERO);
    }

    #[test]
    fn blocks_after_repeated_failures_and_unblocks_later() {
        let t = Throttle::new(Policy::new(Duration::ZERO));
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..9 {
            t.failed(a, now);
            assert_eq!(t.check(a, now), Ok(()));
        }
        t.failed(a, now);
        assert_eq!(t.check(a, now), Err(Duration::from_secs(300)));
        assert_eq!(
            t.check(ip("::ffff:192.0.2.1"), now),
            Err(Duration::from_secs(300)),
            "mapped address is the same client"
        );
        assert_eq!(t.check(ip("192.0.2.2"), now), Ok(()), "others unaffected");
        assert_eq!(t.check(a, now + Duration::from_secs(301)), Ok(()));
    }

    #[test]
    fn success_resets_and_old_failures_are_forgotten() {
        let t = Throttle::new(Policy::new(Duration::from_secs(1)));
        let now = Instant::now();
        let a = ip("2001:db8::7");
        t.failed(a, now);
        assert_eq!(t.failed(a, now), Duration::from_secs(1));
        t.succeeded(a);
        assert_eq!(t.failed(a, now), Duration::ZERO, "counting starts over");
        let later = now + Duration::from_secs(901);
        assert_eq!(t.failed(a, later), Duration::ZERO, "stale record forgotten");
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = Policy::new(Duration::ZERO);
        p.max_addresses = 4;
        let t = Throttle::new(p);
        let now = Instant::now();
        for i in 0..100u8 {
            t.failed(
                IpAddr::from([198, 51, 100, i]),
                now + Duration::from_millis(i.into()),
            );
        }
        assert!(t.len() <= 4, "{} entries", t.len());
    }

    struct Fixed(AuthOutcome);
    impl Authenticator for Fixed {
        fn verify_password(&self, _: &str, _: &[u8]) -> AuthOutcome<Login> {
            self.0.clone().map(Login::by_path)
        }
    }

    fn check(auth: &ThrottledAuth, password: &[u8]) -> AuthOutcome {
        auth.verify_password("u", password).map(|l| l.principal)
    }

    #[test]
    fn throttled_auth_refuses_blocked_addresses_without_asking() {
        let throttle = Arc::new(Throttle::new(Policy::new(Duration::ZERO)));
        let a = ip("203.0.113.5");
        let bad = ThrottledAuth {
            inner: Arc::new(Fixed(AuthOutcome::Rejected)),
            throttle: Arc::clone(&throttle),
            ip: Some(a),
        };
        for _ in 0..10 {
            assert_eq!(check(&bad, b"p"), AuthOutcome::Rejected);
        }
        let principal = Principal {
            user: "u".into(),
            mailbox: "/m".into(),
        };
        let good = ThrottledAuth {
            inner: Arc::new(Fixed(AuthOutcome::Accepted(principal.clone()))),
            throttle: Arc::clone(&throttle),
            ip: Some(a),
        };
        match check(&good, b"right") {
            AuthOutcome::Unavailable(why) => {
                assert!(why.contains("too many failed logins"), "{why}")
            }
            other => panic!("blocked address got {other:?}"),
        }
        let elsewhere = ThrottledAuth {
            ip: Some(ip("203.0.113.6")),
            ..good
        };
        assert_eq!(
            check(&elsewhere, b"right"),
            AuthOutcome::Accepted(principal)
        );
    }
}
