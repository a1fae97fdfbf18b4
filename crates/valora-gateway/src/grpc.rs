//! The gRPC side of the edge: API-key check, then local services
//! (reflection, health) or a transparent hop to an internal service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use tonic::Status;
use tonic::body::Body;
use tonic::service::Routes;
use tower::ServiceExt;
use valora_mesh::Principal;
use valora_mesh::balance::UpstreamPool;
use valora_mesh::principal::UserPrincipal;
use valora_mesh::apikey::{API_KEY_HEADER, KeyRejection, KeyVerifier, check_key_syntax};
use valora_mesh::policy::split_grpc_path;
use valora_mesh::guard::CLIENT_ADDR_HEADER;
use valora_mesh::principal::PRINCIPAL_HEADER;

use crate::bearer::{self, BearerVerifier};
use crate::deadline::{self, GRPC_TIMEOUT};
use crate::listener::ClientAddr;
use crate::ratelimit::{Decision, Limiter, Rate, TrustedProxies};
use crate::sources::{self, FailureSources};
use crate::limit::{self, REQUEST_BODY_TIMEOUT};

/// gRPC paths that need no API key: health checks, so that load balancers
/// and orchestrators can probe without credentials. Matched exactly.
pub const KEY_EXEMPT_PATHS: [&str; 2] =
    ["/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"];

/// Services the edge answers itself (after the API-key check).
const LOCAL_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Query parameters in which clients sometimes put API keys; the edge
/// refuses such requests so that keys do not end up in URL logs.
const KEY_QUERY_PARAMETERS: [&str; 5] = ["api_key", "apikey", "api-key", "x-api-key", "key"];

/// Request headers that never cross the edge: hop-by-hop headers, the
/// client's credentials (the internal hop carries the verified principal
/// instead) and any principal the client tried to supply itself.
const STRIPPED_HEADERS: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    HeaderName::from_static(API_KEY_HEADER),
    header::AUTHORIZATION,
    HeaderName::from_static(PRINCIPAL_HEADER),
    CLIENT_ADDR,
];

/// [`CLIENT_ADDR_HEADER`] as a header name.
const CLIENT_ADDR: HeaderName = HeaderName::from_static(CLIENT_ADDR_HEADER);

/// An internal service the edge forwards to.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// Short name for logs and errors, such as `marketplace`.
    pub name: &'static str,
    /// The replicas of that service.
    pub pool: Arc<UpstreamPool>,
}

/// The edge's gRPC router.
#[derive(Clone)]
pub struct GrpcRouter {
    state: Arc<RouterState>,
}

struct RouterState {
    keys: Arc<dyn KeyVerifier>,
    local: Routes,
    /// Full service name -> upstream.
    upstreams: HashMap<String, Upstream>,
    /// Largest request message accepted, in bytes.
    max_message_bytes: usize,
    /// Verifies bearer tokens; `None` when no auth service is configured.
    bearer: Option<Arc<BearerVerifier>>,
    /// Authentication failures per client address.
    sources: Arc<FailureSources>,
    /// Rate limits.
    limiter: Arc<Limiter>,
    /// Proxies whose `X-Forwarded-For` is believed.
    proxies: TrustedProxies,
}

/// What the router needs besides its routes.
pub struct RouterParts {
    pub keys: Arc<dyn KeyVerifier>,
    pub local: Routes,
    pub upstreams: HashMap<String, Upstream>,
    pub max_message_bytes: usize,
    pub bearer: Option<Arc<BearerVerifier>>,
    pub sources: Arc<FailureSources>,
    pub limiter: Arc<Limiter>,
    pub proxies: TrustedProxies,
}

impl GrpcRouter {
    pub fn new(parts: RouterParts) -> Self {
        let RouterParts { keys, local, upstreams, max_message_bytes, bearer, sources, limiter, proxies } = parts;
        Self {
            state: Arc::new(RouterState { keys, local, upstreams, max_message_bytes, bearer, sources, limiter, proxies }),
        }
    }
}

/// RESOURCE_EXHAUSTED for a limited call, with `retry-after` and the
/// RateLimit headers.
fn limited(decision: &Decision, rate: Rate, what: &str) -> Response<Body> {
    let message = format!(
        "rate limit of {rate} per {what} exceeded; retry in {} seconds",
        decision.retry_after_seconds()
    );
    let mut response = Status::resource_exhausted(message).into_http();
    decision.add_headers(response.headers_mut(), rate.window);
    response
}

impl tower::Service<Request<Body>> for GrpcRouter {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(state.route(request).await) })
    }
}

impl RouterState {
    async fn route(&self, request: Request<Body>) -> Response<Body> {
        let arrived = Instant::now();
        let path = request.uri().path().to_owned();
        let peer = request.extensions().get::<ClientAddr>().map(|c| c.0.ip());
        let client = peer.map(|peer| self.proxies.client_addr(peer, request.headers()));
        // Formatted once, for the span and for the internal hop's header.
        let client_text = client.map(|c| c.to_string());
        if let Some(text) = &client_text {
            valora_telemetry::observe::record("client_addr", text);
        }
        if KEY_EXEMPT_PATHS.contains(&path.as_str()) {
            return self.local(request).await;
        }
        if let Some(client) = client {
            if let Some((decision, rate)) = self.limiter.method(&path, client).await {
                if !decision.allowed {
                    self.limiter.note_limited("method", &format!("{path} from {client}"), client);
                    return limited(&decision, rate, "client address on this method");
                }
            }
            if let Some((decision, rate)) = self.limiter.failures_exhausted(client).await {
                self.limiter.note_limited("failures", &client.to_string(), client);
                return limited(&decision, rate, "client address for failed calls");
            }
        }
        let mut principal = match self.authenticate(request.uri().query(), request.headers()).await {
            Ok(principal) => principal,
            Err(rejection) => {
                tracing::info!(target: "valora::security", path, reason = rejection.as_str(), client_addr = ?client, "call rejected: API key");
                sources::count_failure(&self.sources, rejection.as_str(), client);
                if let Some(client) = client {
                    self.limiter.record_failure(client).await;
                }
                return Status::unauthenticated(rejection.to_string()).into_http();
            }
        };
        valora_telemetry::observe::record("key_id", &principal.key_id);
        match self.user(request.headers()).await {
            Ok(user) => {
                if let Some(user) = &user {
                    valora_telemetry::observe::record("user_id", &user.id);
                }
                principal.user = user;
            }
            Err(reason) => {
                tracing::info!(target: "valora::security", path, key_id = %principal.key_id, reason, client_addr = ?client, "call rejected: bearer token");
                sources::count_failure(&self.sources, "invalid_bearer", client);
                if let Some(client) = client {
                    self.limiter.record_failure(client).await;
                }
                return Status::unauthenticated(bearer::INVALID_TOKEN).into_http();
            }
        }
        let key_decision = self.limiter.key(&principal.key_id).await;
        if let Some((decision, rate)) = key_decision {
            if !decision.allowed {
                let client = client.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
                self.limiter.note_limited("key", &principal.key_id, client);
                return limited(&decision, rate, "API key");
            }
        }
        if let Some(user) = &principal.user {
            if let Some((decision, rate)) = self.limiter.user(&user.id).await {
                if !decision.allowed {
                    let client = client.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
                    self.limiter.note_limited("user", &user.id, client);
                    return limited(&decision, rate, "user");
                }
            }
        }
        let Some((service, _method)) = split_grpc_path(&path) else {
            return Status::unimplemented(format!("{path:?} is not a gRPC method path")).into_http();
        };
        if LOCAL_SERVICES.contains(&service) {
            return self.local(request).await;
        }
        let mut response = match self.upstreams.get(service) {
            Some(upstream) => {
                forward(upstream, request, &principal, client_text.as_deref(), arrived, self.max_message_bytes).await
            }
            None => Status::unimplemented(format!("unknown service {service}")).into_http(),
        };
        if let Some((decision, rate)) = key_decision {
            decision.add_headers(response.headers_mut(), rate.window);
        }
        response
    }

    async fn local(&self, request: Request<Body>) -> Response<Body> {
        match self.local.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// The user of a bearer token, `None` without an Authorization header.
    async fn user(&self, headers: &HeaderMap) -> Result<Option<UserPrincipal>, &'static str> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Ok(None),
            (Some(value), None) => value,
            (Some(_), Some(_)) => return Err("several Authorization headers"),
        };
        let Some(verifier) = &self.bearer else { return Err("bearer tokens are not configured") };
        verifier.verify(value.as_bytes()).await.map(Some).map_err(|_| "invalid token")
    }

    async fn authenticate(
        &self,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Principal, KeyRejection> {
        if query.is_some_and(has_key_parameter) {
            return Err(KeyRejection::InQueryString);
        }
        let mut values = headers.get_all(API_KEY_HEADER).iter();
        let key = match (values.next(), values.next()) {
            (None, _) => return Err(KeyRejection::Missing),
            (Some(value), None) => check_key_syntax(value.as_bytes())?,
            (Some(_), Some(_)) => return Err(KeyRejection::Malformed),
        };
        self.keys.verify(key).await
    }
}

fn has_key_parameter(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        KEY_QUERY_PARAMETERS.iter().any(|p| name.eq_ignore_ascii_case(p))
    })
}

/// Sends a call to an internal service without decoding its messages.
async fn forward(
    upstream: &Upstream,
    request: Request<Body>,
    principal: &Principal,
    client: Option<&str>,
    arrived: Instant,
    max_message_bytes: usize,
) -> Response<Body> {
    let budget = match request.headers().get(GRPC_TIMEOUT).map(|v| deadline::parse(v.as_bytes())) {
        None => None,
        Some(Ok(budget)) => Some(budget),
        Some(Err(error)) => return Status::invalid_argument(error.to_string()).into_http(),
    };
    let (parts, body) = request.into_parts();
    let body = limit::with_deadline(body, tokio::time::Instant::from_std(arrived) + REQUEST_BODY_TIMEOUT);
    let body = match limit::check_first_message(body, max_message_bytes).await {
        Ok(body) => body,
        Err(status) => return status.into_http(),
    };
    let mut request = Request::from_parts(parts, body);
    prepare_headers(request.headers_mut(), principal, client);

    let remaining = budget.map(|b| b.saturating_sub(arrived.elapsed()));
    if let Some(remaining) = remaining {
        if remaining.is_zero() {
            return deadline_exceeded();
        }
        if let Ok(value) = HeaderValue::try_from(deadline::encode(remaining)) {
            request.headers_mut().insert(GRPC_TIMEOUT, value);
        }
    }

    let call = upstream.pool.call(request);
    let outcome = match remaining {
        Some(remaining) => match tokio::time::timeout(remaining, call).await {
            Ok(outcome) => outcome,
            Err(_) => return deadline_exceeded(),
        },
        None => call.await,
    };
    match outcome {
        Ok(response) => match remaining {
            Some(remaining) => deadline::limit_response(response, arrived + remaining),
            None => response,
        },
        Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Status::resource_exhausted(format!("the request exceeds {max_message_bytes} bytes")).into_http()
        }
        // The request body failed: it was too slow (see `limit::with_deadline`)
        // or the client reset the stream.
        Err(error) if error.is::<Status>() => {
            let status = error.downcast::<Status>().map_or_else(|e| Status::unknown(e.to_string()), |s| *s);
            tracing::debug!(%status, "request body failed");
            status.into_http()
        }
        // The channel enforces the forwarded grpc-timeout itself and can
        // give up a moment before the timer above does.
        Err(error) if timed_out(&*error) => deadline_exceeded(),
        Err(error) => {
            tracing::warn!(upstream = upstream.name, %error, "internal service unreachable");
            Status::unavailable(format!("the {} service is unavailable; retry later", upstream.name))
                .into_http()
        }
    }
}

/// Reports whether `error`, or an error it wraps, is the channel's
/// deadline expiring.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(current) = source {
        if current.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = current.source();
    }
    false
}

fn prepare_headers(headers: &mut HeaderMap, principal: &Principal, client: Option<&str>) {
    for name in &STRIPPED_HEADERS {
        headers.remove(name);
    }
    if let Some(value) = client.and_then(|c| HeaderValue::try_from(c).ok()) {
        headers.insert(CLIENT_ADDR, value);
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Ok(value) = HeaderValue::try_from(principal.to_header_value()) {
        headers.insert(HeaderName::from_static(PRINCIPAL_HEADER), value);
    }
}

fn deadline_exceeded() -> Response<Body> {
    Status::deadline_exceeded("deadline exceeded before the internal service answered").into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_keys_in_query_strings() {
        assert!(has_key_parameter("api_key=abc"));
        assert!(has_key_parameter("a=1&X-API-KEY=abc"));
        assert!(has_key_parameter("key"));
        assert!(!has_key_parameter("monkey=1&keyboard=2"));
    }
}
