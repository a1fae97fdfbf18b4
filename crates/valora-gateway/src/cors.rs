//! CORS: deny by default, allow exact configured origins.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long browsers may cache a preflight answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(7200);

/// Request headers that grpc-web and Connect clients send.
const ALLOWED_REQUEST_HEADERS: [&str; 9] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "x-api-key",
    "authorization",
    "grpc-timeout",
    "connect-protocol-version",
    "connect-timeout-ms",
    "x-request-id",
];

/// Response headers that page scripts may read.
const EXPOSED_RESPONSE_HEADERS: [&str; 10] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
];

/// An entry of the allowed-origins list that is not an exact origin.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an origin: use SCHEME://HOST[:PORT] without a path, \
     such as https://app.example.com, and no wildcards"
)]
pub struct BadOrigin(pub String);

/// Parses a comma-separated list of exact origins.
pub fn parse_origins(list: &str) -> Result<Vec<HeaderValue>, BadOrigin> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            if !is_origin(entry) {
                return Err(BadOrigin(entry.to_owned()));
            }
            HeaderValue::from_str(entry).map_err(|_| BadOrigin(entry.to_owned()))
        })
        .collect()
}

fn is_origin(entry: &str) -> bool {
    let Some((scheme, rest)) = entry.split_once("://") else { return false };
    if !matches!(scheme, "http" | "https") || rest.is_empty() {
        return false;
    }
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    rest.chars().all(valid_char) && !rest.starts_with(':')
        && entry.parse::<http::Uri>().is_ok_and(|uri| uri.path() == "/" && uri.host().is_some())
}

/// The CORS layer for `origins`; with none, no origin is allowed.
pub fn layer(origins: Vec<HeaderValue>) -> CorsLayer {
    let allowed: Vec<HeaderName> =
        ALLOWED_REQUEST_HEADERS.iter().map(|h| HeaderName::from_static(h)).collect();
    let exposed: Vec<HeaderName> =
        EXPOSED_RESPONSE_HEADERS.iter().map(|h| HeaderName::from_static(h)).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::POST])
        .allow_headers(allowed)
        .expose_headers(exposed)
        .max_age(PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exact_origins() {
        let origins = parse_origins("https://app.example.com, http://127.0.0.1:5173").unwrap();
        assert_eq!(origins.len(), 2);
        assert!(parse_origins("").unwrap().is_empty());
    }

    #[test]
    fn rejects_anything_else() {
        for bad in ["*", "https://*.example.com", "app.example.com", "https://a.com/path", "ftp://a.com", "https://"] {
            assert_eq!(parse_origins(bad), Err(BadOrigin(bad.to_owned())), "{bad}");
        }
    }
}
