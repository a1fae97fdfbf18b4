//! Security headers and request ids on every HTTP response, for the edge
//! and the internal services alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};

/// Header carrying the request id, set on requests and responses.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Values of the security headers set on every response.
#[derive(Clone, Debug)]
pub struct SecurityHeaders {
    pub strict_transport_security: HeaderValue,
    pub content_security_policy: HeaderValue,
    pub x_content_type_options: HeaderValue,
    pub x_frame_options: HeaderValue,
    pub referrer_policy: HeaderValue,
}

impl Default for SecurityHeaders {
    /// Strict values suited to an API that serves no documents: HSTS for two
    /// years including subdomains, no content of any kind, no framing, no
    /// MIME sniffing and no referrer.
    fn default() -> Self {
        Self {
            strict_transport_security: HeaderValue::from_static(
                "max-age=63072000; includeSubDomains",
            ),
            content_security_policy: HeaderValue::from_static(
                "default-src 'none'; frame-ancestors 'none'",
            ),
            x_content_type_options: HeaderValue::from_static("nosniff"),
            x_frame_options: HeaderValue::from_static("DENY"),
            referrer_policy: HeaderValue::from_static("no-referrer"),
        }
    }
}

impl SecurityHeaders {
    fn apply(&self, headers: &mut http::HeaderMap) {
        use http::header;
        headers.insert(header::STRICT_TRANSPORT_SECURITY, self.strict_transport_security.clone());
        headers.insert(header::CONTENT_SECURITY_POLICY, self.content_security_policy.clone());
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, self.x_content_type_options.clone());
        headers.insert(header::X_FRAME_OPTIONS, self.x_frame_options.clone());
        headers.insert(header::REFERRER_POLICY, self.referrer_policy.clone());
    }
}

/// The outermost layer: assigns a request id, then sets it and the security
/// headers on the response, whoever produced it.
#[derive(Clone)]
pub struct SecurityHeadersLayer {
    headers: Arc<SecurityHeaders>,
}

impl SecurityHeadersLayer {
    pub fn new(headers: SecurityHeaders) -> Self {
        Self { headers: Arc::new(headers) }
    }
}

impl<S> tower::Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeadersService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SecurityHeadersService { inner, headers: self.headers.clone() }
    }
}

/// The service made by [`SecurityHeadersLayer`].
#[derive(Clone)]
pub struct SecurityHeadersService<S> {
    inner: S,
    headers: Arc<SecurityHeaders>,
}

impl<S, B, R> tower::Service<Request<B>> for SecurityHeadersService<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = request_id(request.headers().get(&REQUEST_ID));
        request.headers_mut().insert(REQUEST_ID, id.clone());
        let future = self.inner.call(request);
        let headers = self.headers.clone();
        Box::pin(async move {
            let mut response = future.await?;
            headers.apply(response.headers_mut());
            response.headers_mut().insert(REQUEST_ID, id);
            Ok(response)
        })
    }
}

/// Keeps a client's request id when it is short and plain (so it can be
/// logged safely), otherwise makes a new one.
fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    let acceptable = |v: &&HeaderValue| {
        let bytes = v.as_bytes();
        (8..=64).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match given.filter(acceptable) {
        Some(value) => value.clone(),
        None => HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        let plain = HeaderValue::from_static("abc-123_x.y");
        assert_eq!(request_id(Some(&plain)), plain);
        let hostile = HeaderValue::from_static("abc\" injected=1");
        assert_ne!(request_id(Some(&hostile)), hostile);
        assert_eq!(request_id(None).len(), 36);
    }
}
