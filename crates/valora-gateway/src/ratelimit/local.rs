//! The in-process sliding-window log.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Decision, Rate};

const SHARDS: usize = 32;
/// Buckets per shard before idle ones are dropped.
const PRUNE_AT: usize = 4096;

/// Exact sliding-window limits kept in this process: each bucket keeps the
/// times of the calls it admitted within the window.
pub struct LocalLimiter {
    shards: Vec<Mutex<HashMap<String, VecDeque<Instant>>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher: Default::default() }
    }
}

impl LocalLimiter {
    fn shard(&self, bucket: &str) -> &Mutex<HashMap<String, VecDeque<Instant>>> {
        let mut hasher = self.hasher.build_hasher();
        bucket.hash(&mut hasher);
        &self.shards[hasher.finish() as usize % SHARDS]
    }

    /// Decides a call against `bucket`, counting it when `count` is set
    /// and it is admitted.
    pub fn decide(&self, bucket: &str, rate: Rate, count: bool) -> Decision {
        self.decide_at(bucket, rate, count, Instant::now())
    }

    fn decide_at(&self, bucket: &str, rate: Rate, count: bool, now: Instant) -> Decision {
        let mut shard = self.shard(bucket).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() > PRUNE_AT {
            shard.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < rate.window.max(Duration::from_secs(3600))));
        }
        let times = shard.entry(bucket.to_owned()).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= rate.window) {
            times.pop_front();
        }
        let used = times.len() as u32;
        if used < rate.count {
            if count {
                times.push_back(now);
            }
            let remaining = rate.count - used - u32::from(count);
            let reset = times.front().map_or(Duration::ZERO, |first| rate.window - now.duration_since(*first));
            Decision { allowed: true, limit: rate.count, remaining, reset }
        } else {
            let reset = times.front().map_or(Duration::ZERO, |first| rate.window - now.duration_since(*first));
            Decision { allowed: false, limit: rate.count, remaining: 0, reset }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_exactly_the_limit_per_window() {
        let limiter = LocalLimiter::default();
        let rate = Rate { count: 3, window: Duration::from_secs(10) };
        let start = Instant::now();
        let admitted = (0..10).filter(|_| limiter.decide_at("k", rate, true, start).allowed).count();
        assert_eq!(admitted, 3);
        // Still full until the first call leaves the window.
        assert!(!limiter.decide_at("k", rate, true, start + Duration::from_secs(9)).allowed);
        let later = limiter.decide_at("k", rate, true, start + Duration::from_secs(10));
        assert!(later.allowed);
        // All three earlier calls left the window at the same instant, so
        // two more calls fit after this one.
        assert_eq!(later.remaining, 2, "the earlier calls did not all leave the window");
    }

    #[test]
    fn peeking_counts_nothing() {
        let limiter = LocalLimiter::default();
        let rate = Rate { count: 1, window: Duration::from_secs(10) };
        let now = Instant::now();
        assert!(limiter.decide_at("k", rate, false, now).allowed);
        assert!(limiter.decide_at("k", rate, false, now).allowed);
        assert!(limiter.decide_at("k", rate, true, now).allowed);
        let blocked = limiter.decide_at("k", rate, false, now);
        assert!(!blocked.allowed);
        assert_eq!(blocked.reset, Duration::from_secs(10));
    }

    #[test]
    fn buckets_are_independent() {
        let limiter = LocalLimiter::default();
        let rate = Rate { count: 1, window: Duration::from_secs(10) };
        assert!(limiter.decide("a", rate, true).allowed);
        assert!(limiter.decide("b", rate, true).allowed);
        assert!(!limiter.decide("a", rate, true).allowed);
    }
}
