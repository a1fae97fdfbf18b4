//! Limits shared by several edges through Redis, with the in-process
//! limiter as the fallback while Redis is unreachable.
//!
//! Each decision is one atomic script call: drop the entries that left
//! the window, count the rest, and add this call if it fits. The script
//! reads Redis's own clock, so edges with skewed clocks still agree.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::Script;
use redis::aio::ConnectionManager;

use super::local::LocalLimiter;
use super::{Decision, Rate};

/// Sliding-window log in a sorted set. KEYS[1]: the bucket. ARGV: limit,
/// window in microseconds, count (1) or peek (0), a unique member.
/// Returns {admitted, remaining, microseconds until a slot frees}.
const SCRIPT: &str = r#"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local reset = 0
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
if used < limit then
  if ARGV[3] == '1' then
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
    used = used + 1
    if reset == 0 then reset = window end
  end
  return {1, limit - used, reset}
end
return {0, 0, reset}
"#;

/// How often "Redis unavailable" is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(30);
/// After a failure, Redis is tried again this much later.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The Redis backend and its fallback.
pub struct SharedLimiter {
    connection: ConnectionManager,
    script: Script,
    prefix: String,
    timeout: Duration,
    fallback: LocalLimiter,
    /// When Redis last failed; `None` while it works.
    failed_at: Mutex<Option<Instant>>,
    last_log: Mutex<Option<Instant>>,
    degraded: AtomicBool,
}

impl SharedLimiter {
    /// Connects lazily to `url`; every call waits at most `timeout`.
    pub async fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(100))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            connection,
            script: Script::new(SCRIPT),
            prefix: prefix.to_owned(),
            timeout,
            fallback: LocalLimiter::default(),
            failed_at: Mutex::new(None),
            last_log: Mutex::new(None),
            degraded: AtomicBool::new(false),
        })
    }

    /// Decides a call against `bucket` in Redis, or locally while Redis is
    /// unreachable.
    pub async fn decide(&self, bucket: &str, rate: Rate, count: bool) -> Decision {
        let recently_failed = self
            .failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < RETRY_AFTER);
        if !recently_failed {
            match self.ask(bucket, rate, count).await {
                Ok(decision) => {
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limits are shared through Redis again");
                        metrics::gauge!("valora_rate_limit_degraded", "component" => "edge").set(0.0);
                    }
                    *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return decision;
                }
                Err(error) => self.note_failure(&error),
            }
        }
        metrics::counter!("valora_rate_limit_fallback_total", "component" => "edge").increment(1);
        self.fallback.decide(bucket, rate, count)
    }

    async fn ask(&self, bucket: &str, rate: Rate, count: bool) -> Result<Decision, String> {
        let mut connection = self.connection.clone();
        let member = format!("{:x}", rand::random::<u64>());
        let mut invocation = self.script.key(format!("{}rl:{bucket}", self.prefix));
        invocation
            .arg(rate.count)
            .arg(rate.window.as_micros() as u64)
            .arg(if count { "1" } else { "0" })
            .arg(member);
        let call = invocation.invoke_async::<(i64, i64, i64)>(&mut connection);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((admitted, remaining, reset))) => Ok(Decision {
                allowed: admitted == 1,
                limit: rate.count,
                remaining: u32::try_from(remaining).unwrap_or(0),
                reset: Duration::from_micros(u64::try_from(reset).unwrap_or(0)),
            }),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    fn note_failure(&self, error: &str) {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.degraded.store(true, Ordering::Relaxed);
        metrics::gauge!("valora_rate_limit_degraded", "component" => "edge").set(1.0);
        let mut last_log = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last_log.is_none_or(|at| at.elapsed() >= LOG_INTERVAL) {
            *last_log = Some(Instant::now());
            tracing::warn!(
                error,
                "Redis unavailable: rate limits fall back to this process until it answers again"
            );
        }
    }
}
