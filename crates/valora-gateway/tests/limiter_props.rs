//! Property tests of the in-process sliding-window limiter
//! (`ratelimit::local::LocalLimiter`), driven through its public `decide`
//! with real time and windows of tens of milliseconds.
//!
//! The limiter reads the clock itself, so each call is bracketed by two
//! readings, and a property fails only when it fails for every moment
//! within the brackets: a slow or preempted test makes the checks weaker,
//! never wrong.
//!
//! Cases are drawn with `rand` from a starting number, because this crate's
//! tests do not use proptest. A failure prints that number, and
//! `LIMITER_PROPS_SEED=N` draws the same cases again. The number of cases
//! follows `PROPTEST_CASES` (default 32), like the proptest suites.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use valora_gateway::ratelimit::local::LocalLimiter;
use valora_gateway::ratelimit::{Decision, Rate};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32)
}

fn seed() -> u64 {
    std::env::var("LIMITER_PROPS_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random)
}

/// One call: when it was made (between `before` and `after`), to which
/// bucket, whether it counted, and the decision.
struct Call {
    bucket: usize,
    count: bool,
    before: Instant,
    after: Instant,
    decision: Decision,
}

/// Runs one random sequence of calls on two buckets and checks it.
fn sequential_case(rng: &mut StdRng) -> Result<(), String> {
    let rate = Rate { count: rng.random_range(1..=5), window: Duration::from_millis(rng.random_range(20..=60)) };
    let limiter = LocalLimiter::default();
    let steps = rng.random_range(20..=60);
    let mut calls = Vec::with_capacity(steps);
    for _ in 0..steps {
        if rng.random_bool(0.4) {
            let pause = rng.random_range(0..=rate.window.as_millis() as u64 / 3);
            std::thread::sleep(Duration::from_millis(pause));
        }
        let bucket = rng.random_range(0..2usize);
        let count = rng.random_bool(0.8);
        let before = Instant::now();
        let decision = limiter.decide(["alpha", "beta"][bucket], rate, count);
        let after = Instant::now();
        calls.push(Call { bucket, count, before, after, decision });
    }
    check(&calls, rate)
}

fn check(calls: &[Call], rate: Rate) -> Result<(), String> {
    let limit = rate.count as usize;
    for (k, call) in calls.iter().enumerate() {
        let d = &call.decision;
        if d.limit != rate.count {
            return Err(format!("call {k}: limit {} instead of {}", d.limit, rate.count));
        }
        if d.allowed && call.count && d.remaining >= rate.count {
            return Err(format!("call {k}: counted, yet {} of {} remain", d.remaining, rate.count));
        }
        if !d.allowed && (d.remaining != 0 || d.reset.is_zero() || d.reset > rate.window) {
            return Err(format!("call {k}: refused with remaining {} and reset {:?}", d.remaining, d.reset));
        }
    }
    for bucket in 0..2 {
        let mine: Vec<&Call> = calls.iter().filter(|c| c.bucket == bucket).collect();
        let admitted: Vec<&Call> = mine.iter().copied().filter(|c| c.count && c.decision.allowed).collect();
        // Never more than the limit in a window: of limit + 1 counted
        // admissions in a row, the last came at least a window after the
        // first.
        for pair in admitted.windows(limit + 1) {
            let (first, last) = (pair[0], pair[limit]);
            if last.after.duration_since(first.before) < rate.window {
                return Err(format!(
                    "bucket {bucket}: {} calls admitted within {:?}, limit {} per {:?}",
                    limit + 1,
                    last.after.duration_since(first.before),
                    rate.count,
                    rate.window
                ));
            }
        }
        // Never refused below the limit: a refused call had at least
        // `limit` counted admissions that may have been within a window
        // before it.
        for (k, refused) in mine.iter().enumerate().filter(|(_, c)| !c.decision.allowed) {
            let recent = mine[..k]
                .iter()
                .filter(|c| c.count && c.decision.allowed && c.after + rate.window > refused.before)
                .count();
            if recent < limit {
                return Err(format!(
                    "bucket {bucket}: call {k} refused with only {recent} admissions in the window, limit {}",
                    rate.count
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn never_more_than_the_limit_in_any_window_and_never_refused_below_it() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..cases() {
        if let Err(problem) = sequential_case(&mut rng) {
            panic!("case {case} of seed {seed} (LIMITER_PROPS_SEED={seed}): {problem}");
        }
    }
}

#[test]
fn concurrent_callers_share_one_limit() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..cases() {
        // A window far longer than the case: nothing leaves it.
        let rate = Rate { count: rng.random_range(1..=40), window: Duration::from_secs(60) };
        let threads = rng.random_range(2..=8usize);
        let per_thread: Vec<u32> = (0..threads).map(|_| rng.random_range(1..=30)).collect();
        let limiter = Arc::new(LocalLimiter::default());
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = per_thread
            .iter()
            .map(|&n| {
                let (limiter, start) = (limiter.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    (0..n).filter(|_| limiter.decide("shared", rate, true).allowed).count() as u32
                })
            })
            .collect();
        let admitted: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let calls: u32 = per_thread.iter().sum();
        assert_eq!(
            admitted,
            calls.min(rate.count),
            "case {case} of seed {seed} (LIMITER_PROPS_SEED={seed}): {threads} threads, {calls} calls, limit {}",
            rate.count
        );
        // Peeking afterwards counts nothing and sees the bucket as it is.
        let peek = limiter.decide("shared", rate, false);
        assert_eq!(peek.allowed, calls < rate.count, "case {case} of seed {seed}");
        assert_eq!(limiter.decide("shared", rate, false).remaining, peek.remaining, "case {case} of seed {seed}");
    }
}
