//! Throttling of failed logins.
//!
//! Three sliding windows of 15 minutes each:
//!
//! | key | failures allowed | then blocked for |
//! |---|---|---|
//! | account and client address | 5 | 30 s, doubling per further failure, at most 15 min |
//! | client address | 50 | until the window has room again |
//! | account, from anywhere | 30 | at most 60 s |
//!
//! The strict limit is per account *and* address, so an attacker guessing
//! from one address cannot lock the real user out elsewhere. The account-wide
//! limit slows distributed guessing but blocks for at most a minute at a
//! time. A successful login clears its account-and-address record. State is
//! per process: with several auth replicas, each enforces its own limits.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(15 * 60);
const PAIR_LIMIT: usize = 5;
const PAIR_FIRST_BLOCK: Duration = Duration::from_secs(30);
const PAIR_MAX_BLOCK: Duration = Duration::from_secs(15 * 60);
const ADDRESS_LIMIT: usize = 50;
const ACCOUNT_LIMIT: usize = 30;
const ACCOUNT_MAX_BLOCK: Duration = Duration::from_secs(60);
/// Records kept before expired ones are pruned.
const PRUNE_AT: usize = 100_000;

#[derive(Default)]
struct Record {
    failures: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl Record {
    fn expire(&mut self, now: Instant) {
        while self.failures.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            self.failures.pop_front();
        }
    }
}

/// In-memory failed-login throttle.
#[derive(Default)]
pub struct LoginThrottle {
    records: Mutex<HashMap<String, Record>>,
}

fn pair_key(account: &str, address: &str) -> String {
    format!("pair\u{0}{account}\u{0}{address}")
}

impl LoginThrottle {
    /// `Err(seconds)` while a login for `account` from `address` is blocked.
    pub fn check(&self, account: &str, address: &str) -> Result<(), u64> {
        self.check_at(account, address, Instant::now())
    }

    fn check_at(&self, account: &str, address: &str, now: Instant) -> Result<(), u64> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let keys = [pair_key(account, address), format!("addr\u{0}{address}"), format!("acct\u{0}{account}")];
        let mut wait: Option<Duration> = None;
        for key in &keys {
            if let Some(record) = records.get_mut(key) {
                record.expire(now);
                let left = record.blocked_until.filter(|until| *until > now).map(|until| until - now);
                wait = wait.max(left);
            }
        }
        match wait {
            Some(wait) => Err(wait.as_secs().max(1)),
            None => Ok(()),
        }
    }

    /// Records a failed login.
    pub fn record_failure(&self, account: &str, address: &str) {
        self.record_failure_at(account, address, Instant::now());
    }

    fn record_failure_at(&self, account: &str, address: &str, now: Instant) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() > PRUNE_AT {
            records.retain(|_, r| {
                r.expire(now);
                !r.failures.is_empty() || r.blocked_until.is_some_and(|u| u > now)
            });
        }
        let mut bump = |key: String, limit: usize, block: &dyn Fn(usize) -> Duration| {
            let record = records.entry(key).or_default();
            record.expire(now);
            record.failures.push_back(now);
            let count = record.failures.len();
            if count >= limit {
                record.blocked_until = Some(now + block(count - limit));
            }
        };
        bump(pair_key(account, address), PAIR_LIMIT, &|excess| {
            let factor = 1u32 << excess.min(10);
            (PAIR_FIRST_BLOCK * factor).min(PAIR_MAX_BLOCK)
        });
        bump(format!("addr\u{0}{address}"), ADDRESS_LIMIT, &|_| WINDOW / 15);
        bump(format!("acct\u{0}{account}"), ACCOUNT_LIMIT, &|excess| {
            (Duration::from_secs(5) * (excess as u32 + 1)).min(ACCOUNT_MAX_BLOCK)
        });
    }

    /// Clears the record of a successful login's account and address.
    pub fn record_success(&self, account: &str, address: &str) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.remove(&pair_key(account, address));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_five_failures_from_one_address() {
        let throttle = LoginThrottle::default();
        let start = Instant::now();
        for _ in 0..4 {
            throttle.record_failure_at("ada", "10.0.0.1", start);
            assert!(throttle.check_at("ada", "10.0.0.1", start).is_ok());
        }
        throttle.record_failure_at("ada", "10.0.0.1", start);
        let wait = throttle.check_at("ada", "10.0.0.1", start).unwrap_err();
        assert_eq!(wait, 30);
        // The real user elsewhere is not blocked.
        assert!(throttle.check_at("ada", "192.0.2.7", start).is_ok());
        // The block ends.
        assert!(throttle.check_at("ada", "10.0.0.1", start + Duration::from_secs(31)).is_ok());
    }

    #[test]
    fn blocks_grow_but_stay_bounded() {
        let throttle = LoginThrottle::default();
        let start = Instant::now();
        for _ in 0..20 {
            throttle.record_failure_at("ada", "10.0.0.1", start);
        }
        let wait = throttle.check_at("ada", "10.0.0.1", start).unwrap_err();
        assert_eq!(wait, PAIR_MAX_BLOCK.as_secs());
    }

    #[test]
    fn distributed_guessing_blocks_the_account_briefly() {
        let throttle = LoginThrottle::default();
        let start = Instant::now();
        for n in 0..40 {
            throttle.record_failure_at("ada", &format!("10.0.{n}.1"), start);
        }
        let wait = throttle.check_at("ada", "192.0.2.7", start).unwrap_err();
        assert!(wait <= ACCOUNT_MAX_BLOCK.as_secs(), "{wait}");
        assert!(throttle.check_at("ada", "192.0.2.7", start + ACCOUNT_MAX_BLOCK + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn success_clears_the_pair() {
        let throttle = LoginThrottle::default();
        let start = Instant::now();
        for _ in 0..4 {
            throttle.record_failure_at("ada", "10.0.0.1", start);
        }
        throttle.record_success("ada", "10.0.0.1");
        throttle.record_failure_at("ada", "10.0.0.1", start);
        assert!(throttle.check_at("ada", "10.0.0.1", start).is_ok());
    }
}
