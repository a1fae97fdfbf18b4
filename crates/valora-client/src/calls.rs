//! Per-call settings: credentials and the default deadline.

use std::fmt;
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::ClientError;

/// Deadline of a call whose caller set none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Header of the API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Header of the caller's user token.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// Header carrying a call's deadline, as gRPC defines it.
const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// An interceptor that adds credentials and a default deadline to every
/// call of a generated client.
///
/// - `x-api-key` with [`Calls::api_key`], needed by every call through the
///   edge and by direct calls to internal services;
/// - `authorization: Bearer TOKEN` with [`Calls::bearer`], the access
///   token of a signed-in user;
/// - a deadline of [`DEFAULT_TIMEOUT`] (or [`Calls::default_timeout`]) on
///   every call whose request has none. A request's own
///   `Request::set_timeout` always wins, longer or shorter. The deadline
///   travels as `grpc-timeout`, so the edge and the service stop working on
///   the call when it passes, and the channel ends the call with
///   DEADLINE_EXCEEDED.
///
/// The deadline covers a whole call, streams included: give a long-lived
/// `WatchListingEvents` stream its own timeout, or use
/// [`Calls::without_default_timeout`].
///
/// A header that is already set on the request is left alone. Combine with
/// an interceptor of your own with [`Calls::then`].
#[derive(Clone)]
pub struct Calls {
    api_key: Option<AsciiMetadataValue>,
    authorization: Option<AsciiMetadataValue>,
    default_timeout: Option<Duration>,
}

impl fmt::Debug for Calls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials stay out of debug output.
        f.debug_struct("Calls")
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("authorization", &self.authorization.as_ref().map(|_| "<set>"))
            .field("default_timeout", &self.default_timeout)
            .finish()
    }
}

impl Default for Calls {
    fn default() -> Self {
        Self::new()
    }
}

impl Calls {
    /// No credentials and a default deadline of [`DEFAULT_TIMEOUT`].
    pub fn new() -> Self {
        Self { api_key: None, authorization: None, default_timeout: Some(DEFAULT_TIMEOUT) }
    }

    /// Sends `key` in `x-api-key`.
    pub fn api_key(mut self, key: &str) -> Result<Self, ClientError> {
        self.api_key = Some(secret_value(API_KEY_HEADER, key)?);
        Ok(self)
    }

    /// Sends `authorization: Bearer TOKEN`.
    pub fn bearer(mut self, token: &str) -> Result<Self, ClientError> {
        if token.trim().is_empty() {
            return Err(ClientError::Header { header: AUTHORIZATION_HEADER, reason: "the token is empty" });
        }
        self.authorization = Some(secret_value(AUTHORIZATION_HEADER, &format!("Bearer {token}"))?);
        Ok(self)
    }

    /// The deadline of calls whose request sets none.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = Some(timeout);
        self
    }

    /// Leaves calls without a deadline unless their request sets one.
    pub fn without_default_timeout(mut self) -> Self {
        self.default_timeout = None;
        self
    }

    /// Runs `next` after this interceptor on every call.
    pub fn then<I: Interceptor>(self, next: I) -> Chain<Self, I> {
        Chain { first: self, second: next }
    }
}

impl Interceptor for Calls {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        if let Some(key) = &self.api_key
            && !metadata.contains_key(API_KEY_HEADER)
        {
            metadata.insert(API_KEY_HEADER, key.clone());
        }
        if let Some(authorization) = &self.authorization
            && !metadata.contains_key(AUTHORIZATION_HEADER)
        {
            metadata.insert(AUTHORIZATION_HEADER, authorization.clone());
        }
        if let Some(timeout) = self.default_timeout
            && !metadata.contains_key(GRPC_TIMEOUT_HEADER)
        {
            request.set_timeout(timeout);
        }
        Ok(request)
    }
}

/// Two interceptors run one after the other; made by [`Calls::then`].
#[derive(Clone, Debug)]
pub struct Chain<A, B> {
    first: A,
    second: B,
}

impl<A: Interceptor, B: Interceptor> Chain<A, B> {
    /// Runs `next` after both.
    pub fn then<I: Interceptor>(self, next: I) -> Chain<Self, I> {
        Chain { first: self, second: next }
    }
}

impl<A: Interceptor, B: Interceptor> Interceptor for Chain<A, B> {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let request = self.first.call(request)?;
        self.second.call(request)
    }
}

/// A header value marked sensitive, so that HTTP/2 header compression never
/// indexes it.
fn secret_value(header: &'static str, value: &str) -> Result<AsciiMetadataValue, ClientError> {
    if value.trim().is_empty() {
        return Err(ClientError::Header { header, reason: "it is empty" });
    }
    let mut value: AsciiMetadataValue = MetadataValue::try_from(value).map_err(|_| ClientError::Header {
        header,
        reason: "it contains control or non-ASCII characters",
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut calls: impl Interceptor, request: Request<()>) -> Request<()> {
        calls.call(request).unwrap()
    }

    #[test]
    fn adds_key_token_and_default_deadline() {
        let calls = Calls::new().api_key("k".repeat(32).as_str()).unwrap().bearer("tok").unwrap();
        let request = run(calls, Request::new(()));
        let metadata = request.metadata();
        assert_eq!(metadata.get(API_KEY_HEADER).unwrap(), "k".repeat(32).as_str());
        assert_eq!(metadata.get(AUTHORIZATION_HEADER).unwrap(), "Bearer tok");
        assert_eq!(metadata.get(GRPC_TIMEOUT_HEADER).unwrap(), "10000000u");
        assert!(metadata.get(API_KEY_HEADER).unwrap().is_sensitive());
    }

    #[test]
    fn a_deadline_set_by_the_caller_wins() {
        let mut request = Request::new(());
        request.set_timeout(Duration::from_secs(3600));
        let request = run(Calls::new().default_timeout(Duration::from_secs(1)), request);
        assert_eq!(request.metadata().get(GRPC_TIMEOUT_HEADER).unwrap(), "3600000m");
    }

    #[test]
    fn without_default_timeout_sets_none() {
        let request = run(Calls::new().without_default_timeout(), Request::new(()));
        assert!(request.metadata().get(GRPC_TIMEOUT_HEADER).is_none());
        assert!(request.metadata().get(API_KEY_HEADER).is_none());
    }

    #[test]
    fn headers_set_on_the_request_are_kept() {
        let mut request = Request::new(());
        request.metadata_mut().insert(API_KEY_HEADER, "mine".parse().unwrap());
        let request = run(Calls::new().api_key("theirs").unwrap(), request);
        assert_eq!(request.metadata().get(API_KEY_HEADER).unwrap(), "mine");
    }

    #[test]
    fn chains_with_another_interceptor() {
        let extra = |mut request: Request<()>| {
            request.metadata_mut().insert("x-request-id", "chained-0001".parse().unwrap());
            Ok(request)
        };
        let request = run(Calls::new().api_key("key").unwrap().then(extra), Request::new(()));
        assert_eq!(request.metadata().get("x-request-id").unwrap(), "chained-0001");
        assert_eq!(request.metadata().get(API_KEY_HEADER).unwrap(), "key");
    }

    #[test]
    fn rejects_values_that_are_not_header_values() {
        let error = Calls::new().api_key("bad\nkey").unwrap_err();
        assert!(error.to_string().contains("x-api-key"), "{error}");
        let error = Calls::new().bearer("").unwrap_err();
        assert!(error.to_string().contains("authorization"), "{error}");
        let debug = format!("{:?}", Calls::new().api_key("secret-value").unwrap());
        assert!(!debug.contains("secret-value"), "{debug}");
    }
}
