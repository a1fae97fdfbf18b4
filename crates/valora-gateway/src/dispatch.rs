//! Dispatch by content type: gRPC, grpc-web, or plain HTTP.
//!
//! The content type decides, not the HTTP version: grpc-web works over
//! HTTP/1.1 and HTTP/2 alike, and a request that is neither gRPC nor
//! grpc-web gets a plain HTTP answer that says what the edge speaks.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::Full;
use tonic::body::Body;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use valora_mesh::apikey::{API_KEY_HEADER, KeyVerifier, check_key_syntax};

use crate::bearer::BearerVerifier;
use crate::listener::ClientAddr;
use crate::ratelimit::{Limiter, TrustedProxies};
use crate::grpc_web::{self, Encoding};

/// What a request is, judged by its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Grpc,
    GrpcWeb(Encoding),
    Other,
}

fn kind(request: &Request<Body>) -> Kind {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if let Some(encoding) = Encoding::from_content_type(&essence) {
        return Kind::GrpcWeb(encoding);
    }
    match essence.as_str() {
        "application/grpc" | "application/grpc+proto" => Kind::Grpc,
        _ => Kind::Other,
    }
}

/// The edge's innermost service below CORS.
#[derive(Clone)]
pub struct Dispatch {
    grpc: BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>,
    keys: Arc<dyn KeyVerifier>,
    bearer: Option<Arc<BearerVerifier>>,
    limiter: Arc<Limiter>,
    proxies: TrustedProxies,
}

/// Path of the public JWKS, served without an API key.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

impl Dispatch {
    pub fn new(
        grpc: BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>,
        keys: Arc<dyn KeyVerifier>,
        bearer: Option<Arc<BearerVerifier>>,
        limiter: Arc<Limiter>,
        proxies: TrustedProxies,
    ) -> Self {
        Self { grpc, keys, bearer, limiter, proxies }
    }
}

impl tower::Service<Request<Body>> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.dispatch(request).await) })
    }
}

impl Dispatch {
    async fn dispatch(&self, request: Request<Body>) -> Response<Body> {
        let kind = kind(&request);
        if kind != Kind::Other && request.method() != Method::POST {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "gRPC and grpc-web calls use POST\n");
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        match kind {
            Kind::GrpcWeb(encoding) => {
                let grpc_request = grpc_web::to_grpc_request(request, encoding);
                let response = self.route(grpc_request).await;
                grpc_web::to_grpc_web_response(response, encoding)
            }
            Kind::Grpc if request.version() == Version::HTTP_2 => self.route(request).await,
            Kind::Grpc => plain(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "gRPC needs HTTP/2; over HTTP/1.1 use grpc-web \
                 (content-type application/grpc-web+proto)\n",
            ),
            Kind::Other => self.other(request).await,
        }
    }

    async fn route(&self, request: Request<Body>) -> Response<Body> {
        match self.grpc.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Plain HTTP: the API key is checked first (401 with
    /// `WWW-Authenticate` when missing or wrong), then the edge explains
    /// which content types it accepts.
    async fn other(&self, request: Request<Body>) -> Response<Body> {
        if request.uri().path() == JWKS_PATH && request.method() == Method::GET {
            if let Some(bearer) = &self.bearer {
                let mut response = plain(StatusCode::OK, &bearer.jwks_json());
                response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
                response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
                return response;
            }
        }
        let client = request
            .extensions()
            .get::<ClientAddr>()
            .map(|c| self.proxies.client_addr(c.0.ip(), request.headers()));
        if let Some(client) = client {
            if let Some((decision, rate)) = self.limiter.failures_exhausted(client).await {
                let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "too many failed requests from this address\n");
                decision.add_headers(response.headers_mut(), rate.window);
                return response;
            }
        }
        let key = request.headers().get(API_KEY_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        let verdict = match check_key_syntax(key) {
            Ok(key) => self.keys.verify(key).await.map(drop),
            Err(rejection) => Err(rejection),
        };
        if let Err(rejection) = verdict {
            if let Some(client) = client {
                self.limiter.record_failure(client).await;
            }
            let mut response = plain(StatusCode::UNAUTHORIZED, &format!("{rejection}\n"));
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("ApiKey realm=\"valora\", header=\"x-api-key\""),
            );
            return response;
        }
        plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this endpoint serves gRPC (content-type application/grpc over HTTP/2) and \
             grpc-web (application/grpc-web+proto or application/grpc-web-text+proto)\n",
        )
    }
}

/// A plain-text HTTP response.
pub fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from(text.to_owned()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
