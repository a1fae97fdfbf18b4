//! One span, one access-log line and the call metrics per gRPC call.
//!
//! The span (`call`) carries `component`, `method`, `request_id`,
//! `peer`, `client_addr`, `key_id` and `user_id`. Layers further in fill
//! the identity fields with [`record`]. The call ends when its status is
//! known: at once for a trailers-only response, otherwise when the body's
//! trailers arrive. Its access line (target `valora::access`) adds `code`
//! and `latency_us`.
//!
//! Metrics: `valora_calls_total{component,service,method,code}` and
//! `valora_call_duration_seconds{component,service,method}`. Methods that
//! are not part of the API are counted as `unknown`, so clients cannot
//! grow the label set.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tracing::Instrument;
use tracing::field::Empty;

/// Records `value` into field `field` of the current call's span.
pub fn record(field: &'static str, value: &str) {
    tracing::Span::current().record(field, value);
}

/// A layer observing every call of `component` (`edge`, `auth`, ...).
#[derive(Clone, Copy, Debug)]
pub struct ObserveLayer {
    component: &'static str,
}

impl ObserveLayer {
    pub fn new(component: &'static str) -> Self {
        Self { component }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner, component: self.component }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    component: &'static str,
}

/// `(service, method)` labels of a path, `unknown` for anything outside
/// the API, health and reflection. The labels are built once, so a call
/// allocates none.
fn labels(path: &str) -> (&'static str, &'static str) {
    static KNOWN: OnceLock<HashMap<String, (&'static str, &'static str)>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        let mut paths: Vec<String> = valora_proto::services()
            .into_iter()
            .flat_map(|s| s.methods.into_iter().map(move |m| format!("/{}/{m}", s.name)))
            .collect();
        paths.extend(
            [
                "/grpc.health.v1.Health/Check",
                "/grpc.health.v1.Health/Watch",
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            ]
            .map(str::to_owned),
        );
        paths
            .into_iter()
            .filter_map(|path| {
                let (service, method) = path.strip_prefix('/')?.split_once('/')?;
                // Leaked once per method of the API, for labels of
                // `'static` lifetime.
                let labels = (&*service.to_owned().leak(), &*method.to_owned().leak());
                Some((path, labels))
            })
            .collect()
    });
    known.get(path).copied().unwrap_or(("unknown", "unknown"))
}

impl<S, B, R> tower::Service<Request<B>> for Observe<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    R: Body,
{
    type Response = Response<ObservedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let (service, method) = labels(request.uri().path());
        let span = tracing::info_span!(
            "call",
            component = self.component,
            method = request.uri().path(),
            request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default(),
            peer = Empty,
            client_addr = Empty,
            key_id = Empty,
            user_id = Empty,
        );
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let component = self.component;
        Box::pin(
            async move {
                let response = future.await?;
                let call = Call { component, service, method, started, span: tracing::Span::current() };
                let (parts, body) = response.into_parts();
                let mut pending = Some(call);
                if let Some(code) = status_of(&parts.headers, Some(parts.status)) {
                    if let Some(call) = pending.take() {
                        call.finish(code);
                    }
                }
                Ok(Response::from_parts(parts, ObservedBody { inner: body, call: pending }))
            }
            .instrument(span),
        )
    }
}

/// The status of a response: `grpc-status` in `headers`, else the HTTP
/// status of a non-gRPC answer (when `http` is given and not 200).
fn status_of(headers: &HeaderMap, http: Option<http::StatusCode>) -> Option<Cow<'static, str>> {
    if let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()) {
        let number: i32 = code.parse().unwrap_or(2);
        return Some(Cow::Borrowed(code_name(number)));
    }
    match http {
        Some(status) if status != http::StatusCode::OK => Some(Cow::Owned(format!("http_{}", status.as_u16()))),
        _ => None,
    }
}

fn code_name(number: i32) -> &'static str {
    match tonic_code(number) {
        "Ok" => "OK",
        name => name,
    }
}

fn tonic_code(number: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "Ok", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
        "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
        "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
    ];
    usize::try_from(number).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("Unknown")
}

/// A call whose status is not known yet.
struct Call {
    component: &'static str,
    service: &'static str,
    method: &'static str,
    started: Instant,
    span: tracing::Span,
}

impl Call {
    fn finish(self, code: impl Into<Cow<'static, str>>) {
        let label = code.into();
        let code = label.as_ref();
        let elapsed = self.started.elapsed();
        // Whole microseconds: an integer formats faster than a float, and
        // a log shipper reads it as a number.
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let _entered = self.span.enter();
        if self.service == "grpc.health.v1.Health" {
            tracing::debug!(target: "valora::access", code, latency_us, "call finished");
        } else {
            tracing::info!(target: "valora::access", code, latency_us, "call finished");
        }
        metrics::counter!(
            "valora_calls_total",
            "component" => self.component,
            "service" => self.service,
            "method" => self.method,
            "code" => label.clone()
        )
        .increment(1);
        metrics::histogram!(
            "valora_call_duration_seconds",
            "component" => self.component,
            "service" => self.service,
            "method" => self.method
        )
        .record(elapsed.as_secs_f64());
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its call when the status arrives.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the status: the client went away.
            if let Some(call) = this.project().call.take() {
                call.finish("Cancelled");
            }
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| status_of(t, None)) {
                    if let Some(call) = this.call.take() {
                        call.finish(code);
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.take() {
                    call.finish("Unknown");
                }
            }
            None => {
                if let Some(call) = this.call.take() {
                    // A body without trailers: a plain HTTP answer, or a
                    // grpc-web body whose status travels inside it.
                    call.finish("OK");
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
