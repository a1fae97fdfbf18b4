//! Message size limits on request bodies, checked from the 5-byte gRPC
//! message headers as the body streams, never by buffering it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tonic::Status;
use tonic::body::Body;

/// Length of a gRPC message header: one flag byte, four length bytes.
const HEADER_LEN: usize = 5;
/// Longest wait for a whole request body, counted from the request's
/// arrival. Every forwarded method takes one request message, so a client
/// that sends headers and then dribbles or withholds the body is holding a
/// stream open, not streaming.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Ends `body` with DEADLINE_EXCEEDED when it is not complete by
/// `deadline`.
pub fn with_deadline(body: Body, deadline: tokio::time::Instant) -> Body {
    Body::new(Deadline { inner: body, deadline: Box::pin(tokio::time::sleep_until(deadline)) })
}

struct Deadline {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Some(Err(
                Status::deadline_exceeded(format!(
                    "the request body did not arrive within {} seconds",
                    REQUEST_BODY_TIMEOUT.as_secs()
                )),
            ))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn too_large(length: u64, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "request message of {length} bytes is larger than the limit of {limit} bytes"
    ))
}

/// Reads `body` until the first message header is complete and rejects a
/// first message over `limit` bytes at once, before its payload arrives.
/// Returns a body that replays what was read and checks every later
/// message header too.
pub async fn check_first_message(mut body: Body, limit: usize) -> Result<Body, Status> {
    let mut read = BytesMut::new();
    while read.len() < HEADER_LEN {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
            }
            Some(Err(status)) => return Err(status),
            None => break,
        }
    }
    let mut checker = FrameChecker { limit, remaining_payload: 0, header: BytesMut::new() };
    checker.inspect(&read)?;
    Ok(Body::new(Checked { prefix: Some(read.freeze()), inner: body, checker }))
}

/// Tracks message boundaries across data chunks.
struct FrameChecker {
    limit: usize,
    /// Payload bytes of the current message still to come.
    remaining_payload: u64,
    /// Header bytes of the next message collected so far.
    header: BytesMut,
}

impl FrameChecker {
    fn inspect(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining_payload > 0 {
                let take = usize::try_from(self.remaining_payload).unwrap_or(usize::MAX).min(data.len());
                self.remaining_payload -= take as u64;
                data = &data[take..];
                continue;
            }
            let take = (HEADER_LEN - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() == HEADER_LEN {
                let mut header = &self.header[1..];
                let length = u64::from(header.get_u32());
                if length > self.limit as u64 {
                    return Err(too_large(length, self.limit));
                }
                self.remaining_payload = length;
                self.header.clear();
            }
        }
        Ok(())
    }
}

/// A request body that replays a prefix, then checks each message header.
struct Checked {
    prefix: Option<Bytes>,
    inner: Body,
    checker: FrameChecker,
}

impl HttpBody for Checked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(prefix) = self.prefix.take() {
            if !prefix.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(prefix))));
            }
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                let data = data.clone();
                self.checker.inspect(&data)?;
            }
        }
        Poll::Ready(frame)
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(prefix));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(prefix));
        }
        hint
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty) && self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn message(length: usize) -> Vec<u8> {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&(length as u32).to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, length));
        bytes
    }

    fn body(chunks: Vec<Vec<u8>>) -> Body {
        let stream = futures::stream::iter(
            chunks.into_iter().map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c)))).collect::<Vec<_>>(),
        );
        Body::new(http_body_util::StreamBody::new(stream))
    }

    #[tokio::test]
    async fn withheld_body_ends_at_the_deadline() {
        // Three bytes of a message header, then nothing.
        let stream = futures::stream::iter([Ok::<_, Status>(Frame::data(Bytes::from_static(&[0, 0, 0])))])
            .chain(futures::stream::pending());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
        let body = with_deadline(Body::new(http_body_util::StreamBody::new(stream)), deadline);
        let status = body.collect().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("did not arrive"), "{}", status.message());
        assert!(tokio::time::Instant::now() >= deadline, "the body ended before its deadline");
    }

    #[tokio::test]
    async fn complete_body_passes_before_the_deadline() {
        let bytes = message(20);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let body = with_deadline(body(vec![bytes.clone()]), deadline);
        assert_eq!(body.collect().await.unwrap().to_bytes().to_vec(), bytes);
    }

    #[tokio::test]
    async fn message_at_the_limit_passes_intact() {
        let bytes = message(100);
        let (a, b) = bytes.split_at(3);
        let checked = check_first_message(body(vec![a.to_vec(), b.to_vec()]), 100).await.unwrap();
        assert_eq!(checked.collect().await.unwrap().to_bytes().to_vec(), bytes);
    }

    #[tokio::test]
    async fn first_message_over_the_limit_is_rejected_early() {
        // Only the header arrives; the payload never needs to.
        let header = message(101)[..5].to_vec();
        let status = check_first_message(body(vec![header]), 100).await.err().unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("101 bytes"), "{}", status.message());
    }

    #[tokio::test]
    async fn size_hint_counts_the_replayed_prefix() {
        let bytes = message(10);
        let exact = Body::new(http_body_util::Full::new(Bytes::from(bytes.clone())));
        let checked = check_first_message(exact, 100).await.unwrap();
        assert_eq!(checked.size_hint().exact(), Some(bytes.len() as u64));
        assert_eq!(checked.collect().await.unwrap().to_bytes().len(), bytes.len());
    }

    #[tokio::test]
    async fn later_messages_are_checked_too() {
        let mut bytes = message(10);
        bytes.extend(message(500));
        let checked = check_first_message(body(vec![bytes[..15].to_vec(), bytes[15..].to_vec()]), 100)
            .await
            .unwrap();
        assert!(checked.collect().await.is_err());
    }
}
