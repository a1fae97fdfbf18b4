//! grpc-web translation: grpc-web requests become gRPC requests for the
//! router, and gRPC responses become grpc-web responses.
//!
//! Both encodings of the grpc-web protocol are handled, binary
//! (`application/grpc-web`, `+proto`) and text (`application/grpc-web-text`,
//! base64). Text request bodies may arrive as several base64 chunks, each
//! with its own padding. Bodies stream in both directions; nothing is
//! buffered beyond one base64 quantum, so server streams reach the browser
//! message by message.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;

/// Flag byte of a grpc-web trailer frame.
const TRAILER_FLAG: u8 = 0x80;

/// How message bytes travel in the HTTP body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Binary,
    /// Base64 (standard alphabet, padded).
    Text,
}

impl Encoding {
    /// The encoding of a grpc-web content type, `None` for anything else.
    pub fn from_content_type(essence: &str) -> Option<Self> {
        match essence {
            "application/grpc-web" | "application/grpc-web+proto" => Some(Self::Binary),
            "application/grpc-web-text" | "application/grpc-web-text+proto" => Some(Self::Text),
            _ => None,
        }
    }

    fn content_type(self) -> HeaderValue {
        match self {
            Self::Binary => HeaderValue::from_static("application/grpc-web+proto"),
            Self::Text => HeaderValue::from_static("application/grpc-web-text+proto"),
        }
    }
}

/// Turns a grpc-web request into a gRPC request.
pub fn to_grpc_request(request: Request<Body>, encoding: Encoding) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
    let body = match encoding {
        Encoding::Binary => body,
        Encoding::Text => Body::new(Base64Decode { inner: body, pending: BytesMut::new() }),
    };
    parts.version = http::Version::HTTP_2;
    Request::from_parts(parts, body)
}

/// Turns a gRPC response into a grpc-web response in `encoding`.
///
/// A trailers-only response (status in the headers) stays one: headers
/// only, empty body. Otherwise the trailers become the final trailer frame
/// of the body.
pub fn to_grpc_web_response(response: Response<Body>, encoding: Encoding) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, encoding.content_type());
    parts.headers.remove(header::CONTENT_LENGTH);
    let trailers_only = parts.headers.contains_key("grpc-status");
    let body = if trailers_only {
        Body::empty()
    } else {
        Body::new(WebResponse { inner: body, encoding, done: false })
    };
    Response::from_parts(parts, body)
}

/// Decodes a base64 request body, chunk by chunk.
struct Base64Decode {
    inner: Body,
    /// Base64 characters not yet decoded (less than one quantum, or a
    /// quantum followed by more input).
    pending: BytesMut,
}

impl Base64Decode {
    /// Decodes every complete 4-character quantum in `pending`. A quantum
    /// that ends in padding closes a chunk, so chunks padded on their own
    /// decode correctly when concatenated.
    fn decode_ready(&mut self) -> Result<Bytes, Status> {
        let mut out = BytesMut::new();
        let usable = self.pending.len() / 4 * 4;
        let input = self.pending.split_to(usable);
        let mut start = 0;
        for end in (4..=input.len()).step_by(4) {
            if input[end - 1] == b'=' || end == input.len() {
                let decoded = STANDARD
                    .decode(&input[start..end])
                    .map_err(|e| Status::invalid_argument(format!("malformed grpc-web-text body: {e}")))?;
                out.put_slice(&decoded);
                start = end;
            }
        }
        Ok(out.freeze())
    }
}

impl HttpBody for Base64Decode {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let clean = data.iter().filter(|b| !b.is_ascii_whitespace());
                    self.pending.extend(clean);
                    let decoded = self.decode_ready()?;
                    if !decoded.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(decoded))));
                    }
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None if self.pending.is_empty() => return Poll::Ready(None),
                None => {
                    return Poll::Ready(Some(Err(Status::invalid_argument(
                        "malformed grpc-web-text body: its length is not a multiple of 4",
                    ))));
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        // The decoded length differs from the encoded one.
        SizeHint::default()
    }
}

/// Encodes a gRPC response body as grpc-web: messages pass through (or are
/// base64-encoded), trailers become a trailer frame.
struct WebResponse {
    inner: Body,
    encoding: Encoding,
    done: bool,
}

impl WebResponse {
    fn encode(&self, bytes: Bytes) -> Bytes {
        match self.encoding {
            Encoding::Binary => bytes,
            Encoding::Text => Bytes::from(STANDARD.encode(bytes)),
        }
    }
}

impl HttpBody for WebResponse {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    Poll::Ready(Some(Ok(Frame::data(self.encode(bytes)))))
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().unwrap_or_default();
                    self.done = true;
                    let encoded = self.encode(trailer_frame(&trailers));
                    Poll::Ready(Some(Ok(Frame::data(encoded))))
                }
            },
            Some(Err(status)) => {
                // The upstream stream broke: end with a status the client
                // can read instead of a truncated body.
                self.done = true;
                let mut trailers = HeaderMap::new();
                let _ = status.add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::data(self.encode(trailer_frame(&trailers))))))
            }
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A grpc-web trailer frame: flag 0x80, a 4-byte length, then the trailers
/// as lowercase `name: value` lines ending in CRLF.
fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut block = BytesMut::new();
    for (name, value) in trailers {
        block.put_slice(name.as_str().as_bytes());
        block.put_slice(b": ");
        block.put_slice(value.as_bytes());
        block.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + block.len());
    frame.put_u8(TRAILER_FLAG);
    frame.put_u32(block.len() as u32);
    frame.put_slice(&block);
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn decode(chunks: &[&[u8]]) -> Result<Vec<u8>, Status> {
        let stream = futures::stream::iter(
            chunks.iter().map(|c| Ok::<_, Status>(Frame::data(Bytes::copy_from_slice(c)))).collect::<Vec<_>>(),
        );
        let body = Body::new(http_body_util::StreamBody::new(stream));
        let decoder = Base64Decode { inner: body, pending: BytesMut::new() };
        Ok(decoder.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn decodes_padded_chunks_and_split_quanta() {
        let frame = b"\x00\x00\x00\x00\x02\x08\x05";
        let whole = STANDARD.encode(frame);
        assert_eq!(decode(&[whole.as_bytes()]).await.unwrap(), frame);
        // Two chunks, each padded on its own.
        let padded = format!("{}{}", STANDARD.encode(&frame[..4]), STANDARD.encode(&frame[4..]));
        assert!(padded.contains("=A"));
        assert_eq!(decode(&[padded.as_bytes()]).await.unwrap(), frame);
        // A quantum split across HTTP chunks.
        let (a, b) = whole.as_bytes().split_at(3);
        assert_eq!(decode(&[a, b]).await.unwrap(), frame);
    }

    #[tokio::test]
    async fn rejects_malformed_text() {
        assert!(decode(&[b"AAA*"]).await.is_err());
        assert!(decode(&[b"AAAAA"]).await.is_err());
    }

    #[test]
    fn trailer_frames_carry_the_status() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("5"));
        trailers.insert("grpc-message", HeaderValue::from_static("not%20found"));
        let frame = trailer_frame(&trailers);
        assert_eq!(frame[0], 0x80);
        let length = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(length, frame.len() - 5);
        let text = std::str::from_utf8(&frame[5..]).unwrap();
        assert!(text.contains("grpc-status: 5\r\n"), "{text}");
        assert!(text.contains("grpc-message: not%20found\r\n"), "{text}");
    }
}
