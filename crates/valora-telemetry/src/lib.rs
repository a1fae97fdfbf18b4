//! Telemetry shared by VALORA processes: logging set-up, the Prometheus
//! recorder and the admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).

mod admin;
mod logging;
pub mod observe;

pub use admin::{AdminServer, ReadinessCheck, Readiness};
pub use logging::{LogFormat, init_logging};

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static METRICS: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns the
/// handle that renders `/metrics`. Call it before anything records a
/// metric: values recorded earlier are lost.
pub fn install_metrics() -> PrometheusHandle {
    METRICS.get_or_init(build_recorder).clone()
}

fn build_recorder() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .unwrap_or_else(|_| PrometheusBuilder::new());
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_ok() {
        spawn_upkeep(handle.clone());
    }
    handle
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Name of the thread that runs the recorder's upkeep.
const UPKEEP_THREAD: &str = "metrics-upkeep";

/// Runs the recorder's upkeep every [`UPKEEP_INTERVAL`]. A recorder built
/// with `build_recorder` keeps every histogram sample until a scrape or
/// an upkeep drains them, so without upkeep an unscraped process grows
/// by every sample it records.
fn spawn_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new().name(UPKEEP_THREAD.to_owned()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        }
    });
    if let Err(error) = started {
        tracing::error!(%error, "cannot start the metrics upkeep thread; histograms grow until scraped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_names() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    }

    #[test]
    fn installing_metrics_starts_upkeep() {
        install_metrics();
        // A new thread sets its own name once it runs, so allow it a moment.
        let started = std::time::Instant::now();
        while !thread_names().iter().any(|name| name == UPKEEP_THREAD) {
            assert!(started.elapsed() < Duration::from_secs(5), "no upkeep thread among {:?}", thread_names());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
