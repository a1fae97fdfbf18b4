//! One unary gRPC call over HTTP/2, with the status read from the
//! trailers (or from the headers of a trailers-only response).

use anyhow::{Context as _, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version, header};
use http_body_util::{BodyExt, Full};

use crate::target::Sender;

/// What the server answered: the gRPC status code, its message and the
/// first response message (empty when there is none).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) code: i32,
    pub(crate) message: String,
    pub(crate) body: Bytes,
}

/// Prefixes a protobuf message with the 5-byte gRPC message header.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// Sends one unary call and waits for its status.
///
/// Errors are failures below gRPC: the connection, HTTP/2, an HTTP status
/// other than 200, or a response without grpc-status.
pub(crate) async fn unary(sender: &mut Sender, uri: &Uri, headers: &HeaderMap, body: Bytes) -> anyhow::Result<Reply> {
    sender.ready().await.context("connection not ready")?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .version(Version::HTTP_2)
        .body(Full::new(body))?;
    let request_headers = request.headers_mut();
    request_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    request_headers.insert(header::TE, HeaderValue::from_static("trailers"));
    for (name, value) in headers {
        request_headers.append(name.clone(), value.clone());
    }
    let response = sender.send_request(request).await.context("sending the request")?;
    if response.status() != http::StatusCode::OK {
        bail!("HTTP status {}", response.status().as_u16());
    }
    let (parts, body) = response.into_parts();
    if let Some(code) = status_of(&parts.headers)? {
        // Trailers-only: the status is in the headers.
        let _ = body.collect().await;
        return Ok(Reply { code, message: message_of(&parts.headers), body: Bytes::new() });
    }
    let collected = body.collect().await.context("reading the response body")?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let Some(code) = status_of(&trailers)? else {
        bail!("response without grpc-status");
    };
    let message = message_of(&trailers);
    let mut data = collected.to_bytes();
    let body = if data.len() >= 5 {
        let _flag = data.get_u8();
        let length = data.get_u32() as usize;
        data.slice(..length.min(data.len()))
    } else {
        Bytes::new()
    };
    Ok(Reply { code, message, body })
}

fn status_of(headers: &HeaderMap) -> anyhow::Result<Option<i32>> {
    match headers.get("grpc-status") {
        None => Ok(None),
        Some(value) => {
            let code = value.to_str().ok().and_then(|v| v.trim().parse::<i32>().ok());
            code.map(Some).with_context(|| format!("unreadable grpc-status {value:?}"))
        }
    }
}

fn message_of(headers: &HeaderMap) -> String {
    headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default()
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(byte) = hex {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Name of a gRPC status code, for reports.
pub(crate) fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("UNKNOWN_CODE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_length() {
        let framed = frame(b"abc");
        assert_eq!(&framed[..], b"\x00\x00\x00\x00\x03abc");
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode(b"not%20found"), "not found");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz"), "%zz");
    }

    #[test]
    fn status_codes_have_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN_CODE");
    }
}
