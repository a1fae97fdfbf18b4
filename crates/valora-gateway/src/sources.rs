//! Which client addresses fail authentication most, for the
//! `valora_auth_failure_sources{component="edge", client}` gauge.
//!
//! Failures are counted per address over a sliding 5-minute window. Only
//! the 20 addresses with the most failures, and at least 10, are exported,
//! so the label set stays small however many addresses attack.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(300);
const TOP: usize = 20;
const MIN_FAILURES: usize = 10;
const EXPORT_INTERVAL: Duration = Duration::from_secs(15);
/// Addresses tracked at most; beyond this, the quietest are forgotten.
const MAX_TRACKED: usize = 100_000;

/// Authentication failures per client address.
#[derive(Default)]
pub struct FailureSources {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl FailureSources {
    /// Counts one failure from `addr`.
    pub fn record(&self, addr: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&addr) {
            let now = Instant::now();
            failures.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
            if failures.len() >= MAX_TRACKED {
                return;
            }
        }
        failures.entry(addr).or_default().push_back(Instant::now());
    }

    /// The addresses to export with their failure counts, most first.
    pub fn top(&self) -> Vec<(IpAddr, usize)> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.retain(|_, times| {
            while times.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
                times.pop_front();
            }
            !times.is_empty()
        });
        let mut counts: Vec<(IpAddr, usize)> =
            failures.iter().map(|(addr, times)| (*addr, times.len())).filter(|(_, n)| *n >= MIN_FAILURES).collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counts.truncate(TOP);
        counts
    }

    /// Exports the gauge every few seconds, zeroing addresses that left the
    /// top list.
    pub fn spawn_exporter(self: &Arc<Self>) {
        let sources = self.clone();
        tokio::spawn(async move {
            let mut exported: HashSet<IpAddr> = HashSet::new();
            let mut tick = tokio::time::interval(EXPORT_INTERVAL);
            loop {
                tick.tick().await;
                let top = sources.top();
                let current: HashSet<IpAddr> = top.iter().map(|(addr, _)| *addr).collect();
                for gone in exported.difference(&current) {
                    metrics::gauge!("valora_auth_failure_sources", "component" => "edge", "client" => gone.to_string()).set(0.0);
                }
                for (addr, count) in &top {
                    metrics::gauge!("valora_auth_failure_sources", "component" => "edge", "client" => addr.to_string())
                        .set(*count as f64);
                }
                exported = current;
            }
        });
    }
}

/// Counts an authentication failure at the edge.
pub fn count_failure(sources: &FailureSources, reason: &str, addr: Option<IpAddr>) {
    metrics::counter!("valora_auth_failures_total", "component" => "edge", "reason" => reason.to_owned()).increment(1);
    if let Some(addr) = addr {
        sources.record(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_frequent_sources_are_exported() {
        let sources = FailureSources::default();
        let loud: IpAddr = "192.0.2.1".parse().unwrap();
        let quiet: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..12 {
            sources.record(loud);
        }
        for _ in 0..3 {
            sources.record(quiet);
        }
        assert_eq!(sources.top(), vec![(loud, 12)]);
    }

    #[test]
    fn at_most_twenty_sources_are_exported() {
        let sources = FailureSources::default();
        for n in 0..30u8 {
            for _ in 0..(10 + usize::from(n)) {
                sources.record(IpAddr::from([10, 0, 0, n]));
            }
        }
        let top = sources.top();
        assert_eq!(top.len(), TOP);
        assert_eq!(top[0].0, IpAddr::from([10, 0, 0, 29]));
    }
}
