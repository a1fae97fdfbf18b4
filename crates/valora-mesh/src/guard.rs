//! The admission layer of internal services: who is calling, may they call
//! this method, and on whose behalf.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Request, Response};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::apikey::{API_KEY_HEADER, KeyVerifier, check_key_syntax};
use crate::identity::Identity;
use crate::policy::{Decision, Policy, split_grpc_path};
use crate::principal::{PRINCIPAL_HEADER, Principal};

/// Service name of gRPC health checking, callable by every mesh peer.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// Header carrying the request id from the edge.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Header carrying the end client's address from the edge.
pub const CLIENT_ADDR_HEADER: &str = "x-valora-client-addr";

tokio::task_local! {
    /// The context of the call being handled, for code far from the
    /// request (such as the audit trail).
    static CURRENT: CallContext;
}

/// The context of the call this task is handling, if any.
pub fn current_call() -> Option<CallContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// What a handler knows about the caller; inserted into request extensions.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The workload identity from the peer's certificate.
    pub peer: Identity,
    /// The authenticated caller, absent for calls that need none.
    pub principal: Option<Principal>,
    /// Request id assigned by the edge, when present.
    pub request_id: Option<String>,
    /// The end client's address: from the edge's header when the edge
    /// calls, else the TCP peer address.
    pub client_addr: Option<String>,
}

impl CallContext {
    /// The principal, or UNAUTHENTICATED when the call carries none.
    pub fn require_principal(&self) -> Result<&Principal, Status> {
        self.principal.as_ref().ok_or_else(|| Status::unauthenticated("missing caller credentials"))
    }
}

/// Settings of the [`GuardLayer`].
#[derive(Clone)]
pub struct GuardConfig {
    pub policy: Arc<Policy>,
    pub keys: Arc<dyn KeyVerifier>,
    /// Services whose calls need no principal, such as an internal verifier.
    pub anonymous_services: HashSet<String>,
}

/// A tower layer enforcing [`GuardConfig`] in front of a tonic server.
#[derive(Clone)]
pub struct GuardLayer {
    config: Arc<GuardConfig>,
}

impl GuardLayer {
    pub fn new(config: GuardConfig) -> Self {
        Self { config: Arc::new(config) }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard { inner, config: self.config.clone() }
    }
}

/// The service made by [`GuardLayer`].
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    config: Arc<GuardConfig>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<Request<B>> for Guard<S>
where
    S: tower::Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone is ready only after its own poll_ready; swap so the
        // service that was polled handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let (mut parts, body) = request.into_parts();
        Box::pin(async move {
            match admit(&config, &parts).await {
                Ok(context) => {
                    record_call(&context);
                    parts.extensions.insert(context.clone());
                    let call = inner.call(Request::from_parts(parts, body));
                    CURRENT.scope(context, call).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

async fn admit(config: &GuardConfig, request: &Parts) -> Result<CallContext, Status> {
    let peer = peer_identity(request)?;
    let request_id = header_str(request, REQUEST_ID_HEADER).map(str::to_owned);
    let client_addr = client_addr(request, &peer);
    let path = request.uri.path();
    let Some((service, method)) = split_grpc_path(path) else {
        // Not a gRPC path: the router returns its own error.
        return Ok(CallContext { peer, principal: None, request_id, client_addr });
    };
    if service != HEALTH_SERVICE {
        check_policy(&config.policy, &peer, service, method)?;
    }
    let principal = authenticate(config, request, &peer, service).await?;
    Ok(CallContext { peer, principal, request_id, client_addr })
}

/// Fills the identity fields of the call's span (opened by the observe
/// layer); credentials never enter it.
fn record_call(context: &CallContext) {
    use valora_telemetry::observe::record;
    record("peer", &context.peer.to_string());
    record("client_addr", context.client_addr.as_deref().unwrap_or_default());
    if let Some(principal) = &context.principal {
        record("key_id", &principal.key_id);
        if let Some(user) = &principal.user {
            record("user_id", &user.id);
        }
    }
}

fn check_policy(policy: &Policy, peer: &Identity, service: &str, method: &str) -> Result<(), Status> {
    match policy.check(peer, service, method) {
        Decision::Allow => Ok(()),
        Decision::WouldDeny => {
            tracing::warn!(%peer, service, method, "policy would deny this call (audit mode)");
            Ok(())
        }
        Decision::Deny => {
            tracing::warn!(target: "valora::security", %peer, service, method, "call denied by policy");
            metrics::counter!("valora_auth_failures_total", "component" => "mesh", "reason" => "policy_denied").increment(1);
            Err(Status::permission_denied(format!(
                "{peer} may not call {service}/{method}"
            )))
        }
    }
}

async fn authenticate(
    config: &GuardConfig,
    request: &Parts,
    peer: &Identity,
    service: &str,
) -> Result<Option<Principal>, Status> {
    let forwarded = request.headers.get(PRINCIPAL_HEADER);
    if *peer == Identity::edge() {
        return match forwarded {
            Some(value) => Principal::from_header_value(value.as_bytes())
                .map(Some)
                .map_err(|e| Status::unauthenticated(e.to_string())),
            None => Ok(None),
        };
    }
    if forwarded.is_some() {
        tracing::warn!(target: "valora::security", %peer, "forged principal header from a non-edge peer");
        metrics::counter!("valora_auth_failures_total", "component" => "mesh", "reason" => "forged_principal").increment(1);
        return Err(Status::permission_denied(format!(
            "{PRINCIPAL_HEADER} is accepted only from {}; {peer} must send its own x-api-key",
            Identity::edge()
        )));
    }
    let anonymous = service == HEALTH_SERVICE || config.anonymous_services.contains(service);
    let key = request.headers.get(API_KEY_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if anonymous && key.is_empty() {
        return Ok(None);
    }
    let key = check_key_syntax(key).map_err(|e| Status::unauthenticated(e.to_string()))?;
    match config.keys.verify(key).await {
        Ok(principal) => Ok(Some(principal)),
        Err(rejection) => {
            tracing::info!(%peer, reason = rejection.as_str(), "API key rejected");
            Err(Status::unauthenticated(rejection.to_string()))
        }
    }
}

/// The edge's forwarded client address is trusted only from the edge.
fn client_addr(request: &Parts, peer: &Identity) -> Option<String> {
    if *peer == Identity::edge() {
        if let Some(addr) = header_str(request, CLIENT_ADDR_HEADER) {
            return Some(addr.to_owned());
        }
    }
    request
        .extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
        .map(|addr| addr.ip().to_string())
}

fn peer_identity(request: &Parts) -> Result<Identity, Status> {
    let certs = request
        .extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let leaf = certs.first().ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    Identity::from_certificate(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
}

fn header_str<'a>(request: &'a Parts, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}
