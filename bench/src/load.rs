//! The load runner: closed loop (fixed concurrency) or open loop (target
//! rate), latency in an HDR histogram, every gRPC status counted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Uri;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::grpc::{self, Reply};
use crate::target::{Sender, Target};

/// How much load, for how long.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LoadArgs {
    /// Calls in flight at once (with --rate: the most in flight).
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: usize,

    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 1)]
    pub(crate) connections: usize,

    /// Open loop: start this many calls per second, whatever the answers'
    /// pace. Without it, each of --concurrency workers starts its next call
    /// when the previous one ends.
    #[arg(long)]
    pub(crate) rate: Option<f64>,

    /// Seconds of measured load, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,

    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) warmup: f64,

    /// Stop after this many measured calls, even before --duration.
    #[arg(long)]
    pub(crate) requests: Option<u64>,

    /// The gRPC status that counts as success; any other status fails
    /// the run.
    #[arg(long, default_value_t = 0)]
    pub(crate) expect_status: i32,

    /// Open a new connection (TCP, TLS and HTTP/2 handshakes) for every
    /// call and close it afterwards.
    #[arg(long)]
    pub(crate) fresh_connections: bool,

    /// Deadline of one call, in milliseconds; a call that takes longer is
    /// an error.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) timeout_ms: u64,
}

/// What one run measured.
struct Stats {
    latency_us: Histogram<u64>,
    lag_us: Histogram<u64>,
    ok: u64,
    statuses: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    first_failure: Option<String>,
}

impl Stats {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            lag_us: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            ok: 0,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            first_failure: None,
        })
    }

    fn record(&mut self, outcome: &anyhow::Result<Reply>, latency: Duration, expect: i32) {
        self.latency_us.saturating_record(micros(latency));
        match outcome {
            Ok(reply) => {
                *self.statuses.entry(grpc::code_name(reply.code).to_owned()).or_default() += 1;
                if reply.code == expect {
                    self.ok += 1;
                } else if self.first_failure.is_none() {
                    self.first_failure = Some(format!("{}: {}", grpc::code_name(reply.code), reply.message));
                }
            }
            Err(error) => {
                let kind = format!("{error:#}");
                let kind: String = kind.chars().take(160).collect();
                if self.first_failure.is_none() {
                    self.first_failure = Some(kind.clone());
                }
                *self.errors.entry(kind).or_default() += 1;
            }
        }
    }

    fn calls(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One call to make, over and over.
pub(crate) struct Call {
    pub(crate) uri: Uri,
    pub(crate) body: Bytes,
    pub(crate) label: String,
}

struct Shared {
    target: Target,
    call: Call,
    stats: Mutex<Stats>,
    expect: i32,
    timeout: Duration,
    fresh: bool,
}

impl Shared {
    async fn once(&self, sender: &mut Option<Sender>) -> anyhow::Result<Reply> {
        let attempt = async {
            if self.fresh {
                let mut fresh = self.target.connect().await?;
                return grpc::unary(&mut fresh, &self.call.uri, self.target.headers(), self.call.body.clone()).await;
            }
            let sender = sender.as_mut().context("no connection")?;
            grpc::unary(sender, &self.call.uri, self.target.headers(), self.call.body.clone()).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::anyhow!("no answer within {:?}", self.timeout)),
        }
    }

    fn record(&self, outcome: &anyhow::Result<Reply>, latency: Duration) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.record(outcome, latency, self.expect);
        }
    }

    fn record_lag(&self, lag: Duration) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.lag_us.saturating_record(micros(lag));
        }
    }
}

/// Runs the load and returns the report; `Ok(false)` in the second field
/// when any call failed.
pub(crate) async fn run(target: Target, call: Call, args: &LoadArgs) -> anyhow::Result<(Value, bool)> {
    let concurrency = args.concurrency.max(1);
    let mut senders = Vec::new();
    if !args.fresh_connections {
        for _ in 0..args.connections.max(1) {
            senders.push(target.connect().await?);
        }
    }
    let shared = Arc::new(Shared {
        target,
        call,
        stats: Mutex::new(Stats::new()?),
        expect: args.expect_status,
        timeout: Duration::from_millis(args.timeout_ms),
        fresh: args.fresh_connections,
    });
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(args.warmup.max(0.0));
    let deadline = measure_from + Duration::from_secs_f64(args.duration.max(0.0));
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(args.requests.unwrap_or(u64::MAX)));
    let take = move |now: Instant| -> bool {
        if now < measure_from {
            return true;
        }
        budget
            .fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    };
    let sender_for = |index: usize| senders.get(index % senders.len().max(1)).cloned();

    match args.rate {
        None => {
            let mut workers = Vec::new();
            for worker in 0..concurrency {
                let shared = shared.clone();
                let mut sender = sender_for(worker);
                let take = take.clone();
                workers.push(tokio::spawn(async move {
                    loop {
                        let begin = Instant::now();
                        if begin >= deadline || !take(begin) {
                            break;
                        }
                        let outcome = shared.once(&mut sender).await;
                        if begin >= measure_from {
                            shared.record(&outcome, begin.elapsed());
                        }
                    }
                }));
            }
            for worker in workers {
                worker.await?;
            }
        }
        Some(rate) => {
            let rate = rate.max(0.001);
            let permits = Arc::new(Semaphore::new(concurrency));
            let mut index: u64 = 0;
            loop {
                let scheduled = started + Duration::from_secs_f64(index as f64 / rate);
                if scheduled >= deadline {
                    break;
                }
                tokio::time::sleep_until(scheduled).await;
                let permit = permits.clone().acquire_owned().await?;
                let begin = Instant::now();
                if !take(begin) {
                    break;
                }
                let shared = shared.clone();
                let mut sender = sender_for(usize::try_from(index).unwrap_or(0));
                tokio::spawn(async move {
                    let outcome = shared.once(&mut sender).await;
                    if scheduled >= measure_from {
                        shared.record_lag(begin.saturating_duration_since(scheduled));
                        shared.record(&outcome, begin.elapsed());
                    }
                    drop(permit);
                });
                index += 1;
            }
            let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
            let _ = permits.acquire_many(all).await?;
        }
    }
    let elapsed = deadline.min(Instant::now()).saturating_duration_since(measure_from);
    let stats = shared.stats.lock().map_err(|_| anyhow::anyhow!("statistics lock poisoned"))?;
    let calls = stats.calls();
    let failed = calls - stats.ok;
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let quantile = |q: f64| stats.latency_us.value_at_quantile(q);
    let report = json!({
        "tool": "valora-load",
        "rpc": shared.call.label,
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "rate_target": args.rate,
        "concurrency": concurrency,
        "connections": if args.fresh_connections { Value::from("fresh per call") } else { Value::from(args.connections.max(1)) },
        "expect_status": grpc::code_name(args.expect_status),
        "duration_s": seconds,
        "calls": calls,
        "ok": stats.ok,
        "failed": failed,
        "statuses": stats.statuses,
        "errors": stats.errors,
        "first_failure": stats.first_failure,
        "rps": stats.ok as f64 / seconds,
        "latency_us": {
            "p50": quantile(0.50),
            "p90": quantile(0.90),
            "p99": quantile(0.99),
            "p999": quantile(0.999),
            "max": stats.latency_us.max(),
            "mean": stats.latency_us.mean(),
        },
        "lag_us": if args.rate.is_some() {
            json!({ "p50": stats.lag_us.value_at_quantile(0.5), "p99": stats.lag_us.value_at_quantile(0.99), "max": stats.lag_us.max() })
        } else {
            Value::Null
        },
    });
    Ok((report, failed == 0 && calls > 0))
}
