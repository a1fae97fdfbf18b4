//! Telemetry shared by VALORA processes: logging set-up, the Prometheus
//! recorder and the admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).

mod admin;
mod logging;
pub mod observe;

pub use admin::{AdminServer, ReadinessCheck, Readiness};
pub use logging::{LogFormat, init_logging};

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
    let _ = metrics::set_global_recorder(recorder);
    handle
}
