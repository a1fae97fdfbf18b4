//! Client-side load balancing over the replicas of an internal service.
//!
//! A pool is configured with a list of `HOST:PORT` entries; each host may
//! be an address or a DNS name that resolves to several replicas (a
//! Kubernetes headless Service, for example). Names are resolved again
//! every few seconds, so new replicas join and vanished ones leave. Each
//! replica gets one long-lived, multiplexed mutual-TLS channel, and calls
//! go round-robin over the replicas that pass their health checks.
//!
//! A replica that goes away is noticed two ways: its health check fails
//! (probed every second), or a call to it fails to connect. A call that
//! failed to connect never reached the replica, so it is sent again to the
//! next one; calls already in flight on a dying replica fail. To resend,
//! the pool keeps each request body in memory until the call is sent;
//! every request of the VALORA API is a single message, so this holds one
//! message at most, and a larger body is refused.
//! NOTE: a client-streaming method would be held in full before sending;
//! none exists in the API today.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use tonic::body::Body;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt;

use crate::identity::Identity;
use crate::tls::{ChannelError, MeshTls, mesh_channel};

/// How often names are resolved again.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// How often each replica's health is checked.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Deadline of one health check.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One replica.
struct Member {
    addr: SocketAddr,
    channel: Channel,
    healthy: AtomicBool,
}

/// The replicas of one internal service.
pub struct UpstreamPool {
    name: &'static str,
    tls: Arc<MeshTls>,
    expected: Identity,
    targets: Vec<String>,
    members: ArcSwap<Vec<Arc<Member>>>,
    next: AtomicUsize,
    /// Largest request body held for resending.
    max_request_bytes: usize,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<SocketAddr> = self.members.load().iter().map(|m| m.addr).collect();
        f.debug_struct("UpstreamPool").field("name", &self.name).field("members", &addrs).finish()
    }
}

/// A pool configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{0:?} is not HOST:PORT (a comma-separated list of them is allowed)")]
    Target(String),
    #[error("{target} does not resolve: {reason}")]
    Resolve { target: String, reason: String },
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

impl UpstreamPool {
    /// Resolves `targets` (comma-separated `HOST:PORT` entries) and builds a
    /// channel per replica, verifying that each presents `expected`. A
    /// request body larger than `max_request_bytes` is refused with
    /// [`http_body_util::LengthLimitError`].
    pub async fn new(
        name: &'static str,
        tls: &Arc<MeshTls>,
        targets: &str,
        expected: &Identity,
        max_request_bytes: usize,
    ) -> Result<Arc<Self>, PoolError> {
        let targets: Vec<String> = targets.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
        if targets.is_empty() {
            return Err(PoolError::Target(String::new()));
        }
        for target in &targets {
            let valid = target.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(PoolError::Target(target.clone()));
            }
        }
        let pool = Arc::new(Self {
            name,
            tls: tls.clone(),
            expected: expected.clone(),
            targets,
            members: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            max_request_bytes,
        });
        // A name that does not resolve yet (a Kubernetes Service whose
        // pods are still starting, say) is not fatal: discovery keeps
        // trying, and calls fail with UNAVAILABLE until a replica appears.
        match pool.refresh().await {
            Err(PoolError::Resolve { target, reason }) => {
                tracing::warn!(upstream = name, %target, %reason, "no replica found yet; retrying");
            }
            other => other?,
        }
        Ok(pool)
    }

    /// Resolves the targets and updates the members, keeping the channels
    /// of replicas that stay.
    async fn refresh(&self) -> Result<(), PoolError> {
        let mut addrs = Vec::new();
        for target in &self.targets {
            let resolved = tokio::net::lookup_host(target.as_str())
                .await
                .map_err(|e| PoolError::Resolve { target: target.clone(), reason: e.to_string() })?;
            addrs.extend(resolved);
        }
        addrs.sort();
        addrs.dedup();
        let current: HashMap<SocketAddr, Arc<Member>> = self.members.load().iter().map(|m| (m.addr, m.clone())).collect();
        if addrs.iter().all(|a| current.contains_key(a)) && addrs.len() == current.len() {
            return Ok(());
        }
        let mut members = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let member = match current.get(&addr) {
                Some(member) => member.clone(),
                None => {
                    tracing::info!(upstream = self.name, %addr, "replica joined");
                    let channel = mesh_channel(&self.tls, &addr.to_string(), &self.expected)?;
                    Arc::new(Member { addr, channel, healthy: AtomicBool::new(true) })
                }
            };
            members.push(member);
        }
        for gone in current.keys().filter(|a| !members.iter().any(|m| m.addr == **a)) {
            tracing::info!(upstream = self.name, addr = %gone, "replica left");
        }
        self.members.store(Arc::new(members));
        Ok(())
    }

    /// Re-resolves names and checks replica health until the runtime stops.
    pub fn spawn_maintenance(self: &Arc<Self>) {
        let pool = self.clone();
        tokio::spawn(async move {
            let mut resolve = tokio::time::interval(RESOLVE_INTERVAL);
            let mut probe = tokio::time::interval(PROBE_INTERVAL);
            loop {
                tokio::select! {
                    // While no replica is known, look again at every probe.
                    _ = resolve.tick() => {
                        if let Err(error) = pool.refresh().await {
                            tracing::warn!(upstream = pool.name, %error, "replica discovery failed; keeping the known replicas");
                        }
                    }
                    _ = probe.tick() => {
                        if pool.members.load().is_empty() {
                            let _ = pool.refresh().await;
                        }
                        pool.probe().await;
                    }
                }
            }
        });
    }

    async fn probe(&self) {
        let members = self.members.load_full();
        let checks = members.iter().map(|member| async move {
            let mut client = HealthClient::new(member.channel.clone());
            let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
            request.set_timeout(PROBE_TIMEOUT);
            let healthy = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, client.check(request)).await,
                Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32
            );
            let was = member.healthy.swap(healthy, Ordering::Relaxed);
            if was != healthy {
                tracing::info!(upstream = self.name, addr = %member.addr, healthy, "replica health changed");
            }
        });
        futures::future::join_all(checks).await;
        let (known, healthy) = self.counts();
        metrics::gauge!("valora_upstream_replicas", "upstream" => self.name, "state" => "healthy").set(healthy as f64);
        metrics::gauge!("valora_upstream_replicas", "upstream" => self.name, "state" => "unhealthy")
            .set((known - healthy) as f64);
    }

    /// Replicas in the order to try: healthy ones round-robin, then the
    /// rest (so that calls fail fast rather than wait when all are down).
    fn order(&self) -> Vec<Arc<Member>> {
        let members = self.members.load();
        if members.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % members.len();
        let rotated = members.iter().cycle().skip(start).take(members.len());
        let (healthy, unhealthy): (Vec<_>, Vec<_>) = rotated.cloned().partition(|m| m.healthy.load(Ordering::Relaxed));
        healthy.into_iter().chain(unhealthy).collect()
    }

    /// Returns the number of replicas and how many of them are healthy.
    pub fn counts(&self) -> (usize, usize) {
        let members = self.members.load();
        (members.len(), members.iter().filter(|m| m.healthy.load(Ordering::Relaxed)).count())
    }

    /// Sends `request` to a replica, resending it to the next one when a
    /// replica cannot be connected to.
    pub async fn call(&self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let (parts, body) = request.into_parts();
        let body = Limited::new(body, self.max_request_bytes).collect().await?.to_bytes();
        let mut last_error: Option<BoxError> = None;
        for member in self.order() {
            let request = Request::from_parts(parts.clone(), Body::new(Full::new(body.clone())));
            match member.channel.clone().oneshot(request).await {
                Ok(response) => return Ok(response),
                Err(error) if never_sent(&error) => {
                    if member.healthy.swap(false, Ordering::Relaxed) {
                        tracing::info!(upstream = self.name, addr = %member.addr, %error, "replica unreachable; trying the next");
                    }
                    last_error = Some(error.into());
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(last_error.unwrap_or_else(|| format!("no replica of {} is known", self.name).into()))
    }
}

/// Reports whether the request certainly never reached the replica (the
/// connection failed, or HTTP/2 refused the stream), so it may be sent
/// elsewhere. Other errors (a reset, a closed connection) are not resent:
/// the replica may have acted on the call.
fn never_sent(error: &tonic::transport::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable) {
                return true;
            }
        }
        // HTTP/2 guarantees that a refused stream was not processed, and a
        // graceful GOAWAY (NO_ERROR) fails only the streams it did not
        // accept; a replica shutting down sends one.
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            let graceful_goaway = h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
            if refused || graceful_goaway {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// A pool as a tower service, for generated gRPC clients.
#[derive(Clone, Debug)]
pub struct PoolService(pub Arc<UpstreamPool>);

impl tower::Service<Request<Body>> for PoolService {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let pool = self.0.clone();
        Box::pin(async move { pool.call(request).await })
    }
}
