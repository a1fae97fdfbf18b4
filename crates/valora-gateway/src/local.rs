//! Services the edge answers itself: reflection and health.

use std::sync::Arc;
use std::time::Duration;

use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use valora_mesh::balance::UpstreamPool;

/// Interval between updates of each public service's health.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Failure to build the reflection service.
#[derive(Debug, thiserror::Error)]
#[error("cannot build gRPC reflection from the compiled descriptors: {0}")]
pub struct ReflectionError(String);

/// Builds reflection (v1 and v1alpha) listing `services` and the health
/// service, plus health itself. Returns the routes and the reporter.
pub fn local_routes(services: &[String]) -> Result<(Routes, HealthReporter), ReflectionError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let routes = valora_mesh::server::add_reflection(Routes::new(health), services)
        .map_err(ReflectionError)?;
    Ok((routes, reporter))
}

/// Reports each public service as SERVING while at least one replica of
/// its internal service passes health checks, NOT_SERVING otherwise.
pub async fn report_upstreams(reporter: HealthReporter, targets: Vec<(String, Arc<UpstreamPool>)>) {
    let mut ticker = tokio::time::interval(REPORT_INTERVAL);
    loop {
        ticker.tick().await;
        for (service, pool) in &targets {
            let (_, healthy) = pool.counts();
            let status = if healthy > 0 { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status(service.as_str(), status).await;
        }
    }
}
