//! The admin HTTP endpoint: Prometheus metrics, liveness and readiness.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A readiness check: `Ok` when ready, else the reason.
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Named readiness checks; `/readyz` passes when all pass.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(String, ReadinessCheck)>,
}

impl Readiness {
    /// Adds a check.
    pub fn add(&mut self, name: impl Into<String>, check: ReadinessCheck) {
        self.checks.push((name.into(), check));
    }

    /// Runs every check and returns the failures.
    pub async fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for (name, check) in &self.checks {
            if let Err(reason) = check().await {
                failures.push(format!("{name}: {reason}"));
            }
        }
        failures
    }
}

/// The admin HTTP server.
pub struct AdminServer {
    listener: TcpListener,
    metrics: PrometheusHandle,
    readiness: Readiness,
}

impl AdminServer {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener, metrics: PrometheusHandle, readiness: Readiness) -> Self {
        Self { listener, metrics, readiness }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let state = Arc::new((self.metrics, self.readiness));
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
            };
            let Ok((tcp, _)) = accepted else { continue };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state.0, &state.1, request).await) }
                });
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    }
}

async fn route(
    metrics: &PrometheusHandle,
    readiness: &Readiness,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are allowed\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, metrics.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let failures = readiness.failures().await;
            if failures.is_empty() {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{}\n", failures.join("\n")))
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found; try /metrics, /healthz or /readyz\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
