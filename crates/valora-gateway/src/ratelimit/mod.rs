//! Edge rate limits: an exact sliding window per API key, per user, per
//! client address for failed and unauthenticated calls, and per client
//! address for chosen methods.
//!
//! Algorithm: a sliding-window log. Each bucket keeps the time of every
//! call it admitted within the last window, and admits a call only while
//! fewer than the limit are inside. In any window of the configured
//! length, a bucket admits at most its limit: the error bound is zero,
//! not an estimate. Memory is one entry per admitted call in the window,
//! so a limit of 1000/minute costs at most 1000 entries per active bucket.
//!
//! Backends: in this process ([`local::LocalLimiter`], the default), or
//! Redis ([`shared::SharedLimiter`]) so that several edges enforce one
//! limit; while Redis is unreachable, each edge falls back to its own
//! in-process limits.

pub mod client_addr;
pub mod local;
pub mod rate;
pub mod shared;

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};

pub use client_addr::TrustedProxies;
pub use rate::{Rate, parse_rate};

/// The outcome of one limit check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Calls left in the window after this one.
    pub remaining: u32,
    /// Time until the oldest admitted call leaves the window.
    pub reset: Duration,
}

impl Decision {
    /// Seconds to wait before retrying, rounded up, at least 1.
    pub fn retry_after_seconds(&self) -> u64 {
        let seconds = self.reset.as_secs() + u64::from(self.reset.subsec_nanos() > 0);
        seconds.max(1)
    }

    /// Sets `retry-after` (when limited) and the RateLimit headers of the
    /// IETF draft: `RateLimit-Limit`, `RateLimit-Remaining`,
    /// `RateLimit-Reset` (seconds) and `RateLimit-Policy`.
    pub fn add_headers(&self, headers: &mut HeaderMap, window: Duration) {
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name, value);
            }
        };
        set("ratelimit-limit", self.limit.to_string());
        set("ratelimit-remaining", self.remaining.to_string());
        set("ratelimit-reset", self.retry_after_seconds().to_string());
        set("ratelimit-policy", format!("{};w={}", self.limit, window.as_secs()));
        if !self.allowed {
            set("retry-after", self.retry_after_seconds().to_string());
        }
    }
}

/// Where the counts live.
pub enum Backend {
    Local(local::LocalLimiter),
    Shared(shared::SharedLimiter),
}

/// The configured limits.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Calls per API key.
    pub per_key: Option<Rate>,
    /// Calls per signed-in user.
    pub per_user: Option<Rate>,
    /// Failed calls (bad or missing credentials) per client address; once
    /// exhausted, the address's calls are refused before any check.
    pub failures_per_address: Option<Rate>,
    /// Calls per client address to one method, by full path.
    pub methods: Vec<(String, Rate)>,
}

/// The edge's limiter.
pub struct Limiter {
    backend: Backend,
    limits: Limits,
    logged: Mutex<std::collections::HashMap<String, Instant>>,
}

/// How often one bucket's limiting is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Limiter {
    pub fn new(backend: Backend, limits: Limits) -> Self {
        Self { backend, limits, logged: Mutex::default() }
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn decide(&self, bucket: &str, rate: Rate, count: bool) -> Decision {
        match &self.backend {
            Backend::Local(local) => local.decide(bucket, rate, count),
            Backend::Shared(shared) => shared.decide(bucket, rate, count).await,
        }
    }

    /// Counts a call to `path` from `client` against its method limit.
    pub async fn method(&self, path: &str, client: IpAddr) -> Option<(Decision, Rate)> {
        let (_, rate) = self.limits.methods.iter().find(|(p, _)| p == path)?;
        let decision = self.decide(&format!("m:{path}:{client}"), *rate, true).await;
        Some((decision, *rate))
    }

    /// Whether `client` has failed too often; counts nothing.
    pub async fn failures_exhausted(&self, client: IpAddr) -> Option<(Decision, Rate)> {
        let rate = self.limits.failures_per_address?;
        let decision = self.decide(&format!("f:{client}"), rate, false).await;
        (!decision.allowed).then_some((decision, rate))
    }

    /// Counts a failed call from `client`.
    pub async fn record_failure(&self, client: IpAddr) {
        if let Some(rate) = self.limits.failures_per_address {
            self.decide(&format!("f:{client}"), rate, true).await;
        }
    }

    /// Counts a call with API key `key_id`.
    pub async fn key(&self, key_id: &str) -> Option<(Decision, Rate)> {
        let rate = self.limits.per_key?;
        Some((self.decide(&format!("k:{key_id}"), rate, true).await, rate))
    }

    /// Counts a call by user `user_id`.
    pub async fn user(&self, user_id: &str) -> Option<(Decision, Rate)> {
        let rate = self.limits.per_user?;
        Some((self.decide(&format!("u:{user_id}"), rate, true).await, rate))
    }

    /// Records a limited call: a metric always, a log line at most every
    /// few seconds per bucket, so that a flood does not flood the logs.
    pub fn note_limited(&self, limit: &'static str, bucket: &str, client: IpAddr) {
        metrics::counter!("valora_rate_limited_total", "component" => "edge", "limit" => limit).increment(1);
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() > 10_000 {
            logged.retain(|_, at| at.elapsed() < LOG_EVERY);
        }
        let due = logged.get(bucket).is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            logged.insert(bucket.to_owned(), Instant::now());
            tracing::warn!(target: "valora::security", limit, bucket, client_addr = %client, "rate limit exceeded");
        }
    }
}
