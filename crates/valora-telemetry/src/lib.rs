//! Telemetry shared by VALORA processes: logging set-up, the Prometheus
//! recorder and the admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).

mod admin;
mod logging;

pub use admin::{AdminServer, ReadinessCheck, Readiness};
pub use logging::{LogFormat, init_logging};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide Prometheus recorder and returns the handle that
/// renders `/metrics`.
///
/// Installing twice in one process (as tests do) returns a handle that is
/// not connected to the recorder; the first installation wins.
pub fn install_metrics() -> PrometheusHandle {
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
