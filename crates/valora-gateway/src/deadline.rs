//! The `grpc-timeout` header: parsing and re-encoding the remaining budget.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body as HttpBody, Frame};
use tokio::time::Sleep;
use tonic::Status;
use tonic::body::Body;

/// Header of a gRPC call's deadline.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Ends a streaming response with DEADLINE_EXCEEDED when `deadline` passes
/// before the upstream finishes. A trailers-only response is already
/// complete and passes unchanged.
pub fn limit_response(response: Response<Body>, deadline: Instant) -> Response<Body> {
    if response.headers().contains_key("grpc-status") {
        return response;
    }
    let sleep = Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)));
    response.map(|inner| Body::new(DeadlineBody { inner, sleep, done: false }))
}

/// A response body cut off with DEADLINE_EXCEEDED trailers at a deadline.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    done: bool,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.done = true;
            let mut trailers = HeaderMap::new();
            let status = Status::deadline_exceeded("deadline exceeded while the call was streaming");
            let _ = status.add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if matches!(&frame, Some(Ok(f)) if f.is_trailers()) || frame.is_none() {
            self.done = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// The value is not `1` to `8` digits followed by a unit.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed grpc-timeout header: expected 1 to 8 digits followed by a unit \
     (H, M, S, m, u or n)"
)]
pub struct MalformedTimeout;

/// Parses a `grpc-timeout` value as defined by the gRPC HTTP/2 protocol.
pub fn parse(value: &[u8]) -> Result<Duration, MalformedTimeout> {
    let (digits, unit) = match value.split_last() {
        Some((unit, digits)) if !digits.is_empty() && digits.len() <= 8 => (digits, *unit),
        _ => return Err(MalformedTimeout),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(MalformedTimeout);
    }
    let amount: u64 = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(MalformedTimeout)?;
    let duration = match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return Err(MalformedTimeout),
    };
    Ok(duration)
}

/// Encodes a duration in the finest unit that fits in 8 digits.
pub fn encode(duration: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = duration.as_nanos();
    if nanos <= MAX {
        return format!("{nanos}n");
    }
    let micros = duration.as_micros();
    if micros <= MAX {
        return format!("{micros}u");
    }
    let millis = duration.as_millis();
    if millis <= MAX {
        return format!("{millis}m");
    }
    let secs = duration.as_secs().min(MAX as u64);
    format!("{secs}S")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse(b"2H"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse(b"3M"), Ok(Duration::from_secs(180)));
        assert_eq!(parse(b"4S"), Ok(Duration::from_secs(4)));
        assert_eq!(parse(b"500m"), Ok(Duration::from_millis(500)));
        assert_eq!(parse(b"7u"), Ok(Duration::from_micros(7)));
        assert_eq!(parse(b"99999999n"), Ok(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [&b""[..], b"S", b"123456789S", b"10x", b"-1S", b"1.5S", b"10 S", b"\xff"] {
            assert_eq!(parse(bad), Err(MalformedTimeout), "{bad:?}");
        }
    }

    #[test]
    fn encodes_round_trip() {
        for d in [Duration::from_nanos(5), Duration::from_millis(1500), Duration::from_secs(86_400 * 365)] {
            let encoded = encode(d);
            let parsed = parse(encoded.as_bytes()).unwrap();
            assert!(parsed <= d && d - parsed < Duration::from_secs(1), "{d:?} -> {encoded}");
        }
    }
}
