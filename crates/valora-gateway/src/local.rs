//! Services the edge answers itself: reflection and health.

use std::time::Duration;

use tonic::service::Routes;
use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;

/// Interval between health probes of each internal service.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Deadline of one health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Reports each public service as SERVING while its internal service
/// answers health checks, NOT_SERVING otherwise.
pub async fn probe_upstreams(reporter: HealthReporter, targets: Vec<(String, Channel)>) {
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    loop {
        ticker.tick().await;
        for (service, channel) in &targets {
            let status = probe(channel.clone()).await;
            reporter.set_service_status(service.as_str(), status).await;
        }
    }
}

async fn probe(channel: Channel) -> ServingStatus {
    let mut client = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
    request.set_timeout(PROBE_TIMEOUT);
    match client.check(request).await {
        Ok(response) if response.get_ref().status == WireStatus::Serving as i32 => {
            ServingStatus::Serving
        }
        Ok(_) => ServingStatus::NotServing,
        Err(status) => {
            tracing::debug!(code = ?status.code(), "internal health probe failed");
            ServingStatus::NotServing
        }
    }
}
