//! The edge: VALORA's public gRPC and grpc-web front door.
//!
//! Layers, from the outside in: security headers and request id, CORS,
//! grpc-web translation, the API-key check, then either a local service
//! (reflection, health) or a transparent HTTP/2 hop over mutual TLS to the
//! internal service that owns the called method.

pub mod bearer;
pub mod cors;
pub mod deadline;
pub mod dispatch;
pub mod grpc;
pub mod grpc_web;
pub mod limit;
pub mod listener;
pub mod local;
pub mod ratelimit;
pub mod sources;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use valora_mesh::apikey::KeyVerifier;
use valora_mesh::balance::UpstreamPool;
use valora_mesh::tls::{read_certs, read_key};

pub use grpc::Upstream;
pub use valora_mesh::security_headers::SecurityHeaders;

/// Everything the edge needs to run.
pub struct EdgeOptions {
    /// Verifies API keys.
    pub keys: Arc<dyn KeyVerifier>,
    /// Exact origins allowed by CORS.
    pub cors_origins: Vec<HeaderValue>,
    pub security_headers: SecurityHeaders,
    /// Public service name -> internal service that implements it.
    pub upstreams: Vec<(String, Upstream)>,
    /// TLS for the public listener; `None` serves cleartext (h2c and
    /// HTTP/1.1), for development behind nothing or behind a TLS proxy.
    pub tls: Option<Arc<ServerConfig>>,
    /// How long in-flight calls may run after shutdown starts.
    pub drain: Duration,
    /// How long the edge keeps accepting, with health NOT_SERVING, after
    /// shutdown starts.
    pub shutdown_delay: Duration,
    /// Largest request message accepted, in bytes, after grpc-web decoding.
    pub max_message_bytes: usize,
    /// Verifies bearer tokens and serves `/.well-known/jwks.json`.
    pub bearer: Option<Arc<bearer::BearerVerifier>>,
    /// Rate limits.
    pub limiter: Arc<ratelimit::Limiter>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: ratelimit::TrustedProxies,
}

/// A failure to set up the edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Reflection(#[from] local::ReflectionError),
    #[error("edge TLS: {0}")]
    Tls(String),
}

/// Serves the edge on `listener` until `shutdown` turns true.
pub async fn run(
    listener: TcpListener,
    options: EdgeOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), EdgeError> {
    let services: Vec<String> = options.upstreams.iter().map(|(name, _)| name.clone()).collect();
    let (local, reporter) = local::local_routes(&services)?;
    let probes: Vec<(String, Arc<UpstreamPool>)> = options
        .upstreams
        .iter()
        .map(|(name, upstream)| (name.clone(), upstream.pool.clone()))
        .collect();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let prober = tokio::spawn(local::report_upstreams(reporter.clone(), probes));

    let upstreams: HashMap<String, Upstream> = options.upstreams.into_iter().collect();
    let sources = Arc::new(sources::FailureSources::default());
    sources.spawn_exporter();
    let router = grpc::GrpcRouter::new(grpc::RouterParts {
        keys: options.keys.clone(),
        local,
        upstreams,
        max_message_bytes: options.max_message_bytes,
        bearer: options.bearer.clone(),
        sources,
        limiter: options.limiter.clone(),
        proxies: options.trusted_proxies.clone(),
    });
    let observed = ServiceBuilder::new()
        .map_response(|response: http::Response<valora_telemetry::observe::ObservedBody<tonic::body::Body>>| {
            response.map(tonic::body::Body::new)
        })
        .layer(valora_telemetry::observe::ObserveLayer::new("edge"))
        .service(router);
    let dispatch = dispatch::Dispatch::new(
        BoxCloneSyncService::new(observed),
        options.keys,
        options.bearer,
        options.limiter,
        options.trusted_proxies,
    );
    let service = ServiceBuilder::new()
        .layer(valora_mesh::security_headers::SecurityHeadersLayer::new(options.security_headers))
        .layer(cors::layer(options.cors_origins))
        .service(dispatch);

    let mut on_stop = shutdown.clone();
    let health_on_stop = reporter.clone();
    tokio::spawn(async move {
        // Health turns NOT_SERVING first, so balancers stop sending new
        // calls while in-flight ones drain.
        let _ = on_stop.wait_for(|stop| *stop).await;
        health_on_stop.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    });

    listener::serve(
        listener,
        options.tls,
        BoxCloneSyncService::new(service),
        shutdown,
        options.shutdown_delay,
        options.drain,
    )
    .await;
    prober.abort();
    Ok(())
}

/// Builds the public listener's TLS configuration from PEM files: TLS 1.2
/// and 1.3 with rustls' default (forward-secret, AEAD-only) suites, ALPN
/// `h2` and `http/1.1`.
pub fn public_tls(cert: &PathBuf, key: &PathBuf) -> Result<Arc<ServerConfig>, EdgeError> {
    let chain = read_certs(cert).map_err(|e| EdgeError::Tls(e.to_string()))?;
    let key_der = read_key(key).map_err(|e| EdgeError::Tls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(valora_mesh::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| EdgeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| EdgeError::Tls(format!("{} and {} do not form a usable pair: {e}", cert.display(), key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
