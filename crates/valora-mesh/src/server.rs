//! Running an internal service: mutual TLS, the guard, health, reflection
//! and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::guard::{GuardConfig, GuardLayer};
use crate::security_headers::{SecurityHeaders, SecurityHeadersLayer};
use crate::tls::{HandshakeFailure, MeshTls, serve_tls};

/// Everything an internal server needs.
pub struct InternalServer {
    /// Short name for logs, such as `marketplace`.
    pub name: &'static str,
    pub listener: TcpListener,
    pub tls: Arc<MeshTls>,
    pub guard: GuardConfig,
    /// The service's own gRPC routes.
    pub routes: Routes,
    /// Full names of the services in `routes`, for health and reflection.
    pub services: Vec<String>,
    /// How long in-flight calls may run after shutdown starts.
    pub drain: Duration,
    /// Called with the reason of every refused handshake.
    pub on_handshake_failure: Arc<dyn Fn(HandshakeFailure) + Send + Sync>,
    /// Health turns NOT_SERVING when the certificate expires within this.
    pub expiry_threshold: Duration,
    /// Headers set on every response.
    pub security_headers: SecurityHeaders,
    /// How long the listener keeps accepting, with health NOT_SERVING,
    /// after shutdown starts.
    pub shutdown_delay: Duration,
}

/// A failure to start or run an internal server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{listener} listener: cannot build its TLS configuration: {source}")]
    Tls { listener: &'static str, source: rustls::Error },
    #[error("{listener} listener: {source}")]
    Io { listener: &'static str, source: std::io::Error },
    #[error("{listener} listener: cannot build gRPC reflection: {reason}")]
    Reflection { listener: &'static str, reason: String },
    #[error("{listener} listener: {source}")]
    Transport { listener: &'static str, source: tonic::transport::Error },
}

impl InternalServer {
    /// Serves until `shutdown` turns true. Health turns NOT_SERVING first,
    /// then the listener stops accepting and in-flight calls get up to
    /// `drain` to finish.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ServerError> {
        let name = self.name;
        let config = self
            .tls
            .server_config()
            .map_err(|source| ServerError::Tls { listener: name, source })?;
        let incoming = serve_tls(self.listener, config, name, self.on_handshake_failure)
            .map_err(|source| ServerError::Io { listener: name, source })?;

        let (reporter, health) = tonic_health::server::health_reporter();
        set_all(&reporter, &self.services, ServingStatus::Serving).await;
        tokio::spawn(expiry_health(
            self.tls.clone(),
            self.expiry_threshold,
            reporter.clone(),
            self.services.clone(),
            shutdown.clone(),
        ));
        let routes = add_reflection(self.routes.add_service(health), &self.services)
            .map_err(|reason| ServerError::Reflection { listener: name, reason })?;

        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let services = self.services.clone();
        let delay = self.shutdown_delay;
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            set_all(&reporter, &services, ServingStatus::NotServing).await;
            tracing::info!(listener = name, ?delay, "shutting down: health is NOT_SERVING");
            tokio::time::sleep(delay).await;
            tracing::info!(listener = name, "draining in-flight calls");
            let _ = drain_tx.send(());
        };
        let server = Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(256)
            .layer(SecurityHeadersLayer::new(self.security_headers))
            .layer(valora_telemetry::observe::ObserveLayer::new(name))
            .layer(GuardLayer::new(self.guard))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, stop);

        tokio::pin!(server);
        tokio::select! {
            result = &mut server => {
                return result.map_err(|source| ServerError::Transport { listener: name, source });
            }
            _ = drain_rx => {}
        }
        match tokio::time::timeout(self.drain, &mut server).await {
            Ok(result) => result.map_err(|source| ServerError::Transport { listener: name, source }),
            Err(_) => {
                tracing::warn!(listener = name, drain = ?self.drain, "drain timed out; closing remaining calls");
                Ok(())
            }
        }
    }
}

/// Turns health NOT_SERVING while the certificate is about to expire, so
/// that balancers move traffic before handshakes start failing.
async fn expiry_health(
    tls: Arc<MeshTls>,
    threshold: Duration,
    reporter: HealthReporter,
    services: Vec<String>,
    shutdown: watch::Receiver<bool>,
) {
    let mut expiring = false;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if *shutdown.borrow() {
            return;
        }
        let now_expiring = tls.expires_within(threshold);
        if now_expiring == expiring {
            continue;
        }
        expiring = now_expiring;
        let identity = tls.identity();
        if expiring {
            tracing::error!(%identity, seconds_left = tls.seconds_to_expiry(), "certificate about to expire: health is NOT_SERVING");
            set_all(&reporter, &services, ServingStatus::NotServing).await;
        } else {
            tracing::info!(%identity, "certificate renewed: health is SERVING again");
            set_all(&reporter, &services, ServingStatus::Serving).await;
        }
    }
}

async fn set_all(reporter: &HealthReporter, services: &[String], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(service.as_str(), status).await;
    }
}

/// Adds gRPC reflection, v1 and v1alpha (grpcurl 1.8 speaks only v1alpha),
/// listing `services` and the health service. The `google.rpc` error
/// detail types are registered too, so that clients can decode the
/// `BadRequest` details of INVALID_ARGUMENT errors.
pub fn add_reflection(routes: Routes, services: &[String]) -> Result<Routes, String> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(valora_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for service in services {
            builder = builder.with_service_name(service.clone());
        }
        builder
    };
    let v1 = builder().build_v1().map_err(|e| e.to_string())?;
    let v1alpha = builder().build_v1alpha().map_err(|e| e.to_string())?;
    Ok(routes.add_service(v1).add_service(v1alpha))
}
