//! The edge as browsers and raw HTTP clients see it: security headers on
//! every response, CORS, grpc-web bytes in both encodings, message size
//! limits and deadlines.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tonic::Code;
use valora_proto::marketplace::v1::{
    CreateListingRequest, GetListingRequest, ListListingsRequest, ListListingsResponse, Money,
    WatchListingEventsRequest,
};

use crate::support::{DevMesh, KEY, MeshOptions};

const ORIGIN: &str = "http://app.example.test";
const LIST: &str = "/valora.marketplace.v1.MarketplaceService/ListListings";
const GET: &str = "/valora.marketplace.v1.MarketplaceService/GetListing";

fn mesh_options() -> MeshOptions {
    MeshOptions {
        env: vec![
            ("VALORA_CORS_ALLOW_ORIGINS".into(), format!("{ORIGIN}, https://other.example.test")),
            ("VALORA_MAX_MESSAGE_BYTES".into(), "1024".into()),
        ],
        ..Default::default()
    }
}

/// A raw HTTP response: status, headers, body.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn send(mesh: &DevMesh, version: Version, request: Request<Full<Bytes>>) -> Raw {
    let mut builder = Client::builder(TokioExecutor::new());
    if version == Version::HTTP_2 {
        builder.http2_only(true);
    }
    let client = builder.build_http::<Full<Bytes>>();
    let (mut parts, body) = request.into_parts();
    parts.uri = format!("http://{}{}", mesh.edge(), parts.uri.path_and_query().unwrap()).parse().unwrap();
    let response = client.request(Request::from_parts(parts, body)).await.expect("HTTP request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Raw { status: parts.status, headers: parts.headers, body }
}

fn frame(message: &impl Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

fn grpc_web(path: &str, body: Vec<u8>, text: bool, key: &str) -> Request<Full<Bytes>> {
    let (content_type, body) = if text {
        ("application/grpc-web-text", STANDARD.encode(body).into_bytes())
    } else {
        ("application/grpc-web+proto", body)
    };
    Request::post(path)
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .header("x-api-key", key)
        .header("origin", ORIGIN)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn assert_security_headers(raw: &Raw, case: &str) {
    let expect = [
        ("strict-transport-security", "max-age=63072000; includeSubDomains"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ];
    for (name, value) in expect {
        assert_eq!(raw.headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{case}: {name}");
    }
    assert!(raw.headers.contains_key("x-request-id"), "{case}: x-request-id");
}

/// Splits a binary grpc-web body into (flag, payload) frames.
fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while body.len() >= 5 {
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        frames.push((body[0], body[5..5 + length].to_vec()));
        body = &body[5 + length..];
    }
    assert!(body.is_empty(), "trailing bytes in grpc-web body");
    frames
}

/// Decodes a grpc-web-text body that may consist of separately padded
/// chunks.
fn decode_text(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in (4..=body.len()).step_by(4) {
        if body[end - 1] == b'=' || end == body.len() {
            out.extend(STANDARD.decode(&body[start..end]).unwrap());
            start = end;
        }
    }
    out
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let mesh = DevMesh::start(mesh_options()).await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let cases: Vec<(&str, Request<Full<Bytes>>)> = vec![
            ("grpc-web success", grpc_web(LIST, frame(&ListListingsRequest::default()), false, KEY)),
            ("grpc-web error", grpc_web(GET, frame(&GetListingRequest { id: "bad".into() }), false, KEY)),
            ("grpc-web wrong key", grpc_web(LIST, frame(&ListListingsRequest::default()), false, "wrong")),
            ("401", Request::get("/").body(Full::default()).unwrap()),
            ("unknown path with key", Request::get("/nothing/here").header("x-api-key", KEY).body(Full::default()).unwrap()),
            (
                "preflight",
                Request::builder()
                    .method(Method::OPTIONS)
                    .uri(LIST)
                    .header("origin", ORIGIN)
                    .header("access-control-request-method", "POST")
                    .header("access-control-request-headers", "content-type,x-grpc-web,x-api-key")
                    .body(Full::default())
                    .unwrap(),
            ),
            ("unknown service", grpc_web("/no.Such/Method", frame(&ListListingsRequest::default()), false, KEY)),
        ];
        for (case, request) in cases {
            let raw = send(&mesh, version, request).await;
            assert_security_headers(&raw, &format!("{case} over {version:?}"));
        }
    }
    if version_native_grpc_has_headers(&mesh).await {
        return;
    }
    panic!("native gRPC responses lack security headers");
}

async fn version_native_grpc_has_headers(mesh: &DevMesh) -> bool {
    let mut client = mesh.client(KEY).await;
    let response = client.list_listings(ListListingsRequest::default()).await.unwrap();
    response.metadata().get("strict-transport-security").is_some()
        && response.metadata().get("x-content-type-options").is_some()
}

#[tokio::test]
async fn plain_http_answers_and_preflight() {
    let mesh = DevMesh::start(mesh_options()).await;
    let raw = send(&mesh, Version::HTTP_11, Request::get("/").body(Full::default()).unwrap()).await;
    assert_eq!(raw.status, StatusCode::UNAUTHORIZED);
    assert!(raw.headers.contains_key("www-authenticate"));

    let unsupported = Request::post(LIST)
        .header("content-type", "application/json")
        .header("x-api-key", KEY)
        .body(Full::from("{}"))
        .unwrap();
    let raw = send(&mesh, Version::HTTP_11, unsupported).await;
    assert_eq!(raw.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(String::from_utf8_lossy(&raw.body).contains("application/grpc-web"));

    // A preflight needs no key and is cacheable.
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(LIST)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web,x-api-key,grpc-timeout")
            .body(Full::default())
            .unwrap()
    };
    let raw = send(&mesh, Version::HTTP_11, preflight(ORIGIN)).await;
    assert!(raw.status.is_success(), "{}", raw.status);
    assert_eq!(raw.headers.get("access-control-allow-origin").unwrap(), ORIGIN);
    let allowed = raw.headers.get("access-control-allow-headers").unwrap().to_str().unwrap().to_owned();
    for header in ["content-type", "x-grpc-web", "x-user-agent", "x-api-key", "authorization", "grpc-timeout", "connect-protocol-version", "connect-timeout-ms"] {
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }
    assert!(raw.headers.get("access-control-max-age").is_some());
    assert!(raw.headers.get("access-control-allow-credentials").is_none());

    let raw = send(&mesh, Version::HTTP_11, preflight("http://evil.example.test")).await;
    assert!(raw.headers.get("access-control-allow-origin").is_none(), "a disallowed origin was allowed");

    // A bare OPTIONS is answered by the edge, never forwarded.
    let bare = Request::builder().method(Method::OPTIONS).uri(LIST).body(Full::default()).unwrap();
    let raw = send(&mesh, Version::HTTP_11, bare).await;
    assert!(raw.headers.get("grpc-status").is_none());
    assert!(raw.body.is_empty());

    // Real responses expose the gRPC status headers to page scripts.
    let raw = send(&mesh, Version::HTTP_11, grpc_web(LIST, frame(&ListListingsRequest::default()), false, KEY)).await;
    assert_eq!(raw.headers.get("access-control-allow-origin").unwrap(), ORIGIN);
    let exposed = raw.headers.get("access-control-expose-headers").unwrap().to_str().unwrap().to_owned();
    for header in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(header), "{header} not in {exposed}");
    }
}

#[tokio::test]
async fn grpc_web_bytes_binary_and_text() {
    let mesh = DevMesh::start(mesh_options()).await;
    let mut client = mesh.client(KEY).await;
    client
        .create_listing(CreateListingRequest {
            title: "Web".into(),
            description: String::new(),
            category: "web".into(),
            price: Some(Money { currency_code: "EUR".into(), amount_minor: 1 }),
        })
        .await
        .unwrap();

    for version in [Version::HTTP_11, Version::HTTP_2] {
        for text in [false, true] {
            let case = format!("{version:?} text={text}");
            // Success: one message frame, then one trailer frame with status 0.
            let raw = send(&mesh, version, grpc_web(LIST, frame(&ListListingsRequest::default()), text, KEY)).await;
            assert_eq!(raw.status, StatusCode::OK, "{case}");
            let expected_type = if text { "application/grpc-web-text+proto" } else { "application/grpc-web+proto" };
            assert_eq!(raw.headers.get("content-type").unwrap(), expected_type, "{case}");
            assert!(raw.headers.get("grpc-status").is_none(), "{case}: status in headers and body");
            let body = if text { decode_text(&raw.body) } else { raw.body.to_vec() };
            let frames = frames(&body);
            assert_eq!(frames.len(), 2, "{case}");
            assert_eq!(frames[0].0, 0, "{case}");
            let listed = ListListingsResponse::decode(frames[0].1.as_slice()).unwrap();
            assert_eq!(listed.listings.len(), 1, "{case}");
            assert_eq!(frames[1].0, 0x80, "{case}");
            let trailers = String::from_utf8(frames[1].1.clone()).unwrap();
            assert!(trailers.contains("grpc-status: 0\r\n"), "{case}: {trailers}");

            // Error: a true trailers-only response, status in headers, empty body.
            let request = GetListingRequest { id: "0190a8e2-0000-7000-8000-000000000000".into() };
            let raw = send(&mesh, version, grpc_web(GET, frame(&request), text, KEY)).await;
            assert_eq!(raw.status, StatusCode::OK, "{case}");
            assert_eq!(raw.headers.get("grpc-status").unwrap(), "5", "{case}");
            assert!(raw.headers.get("grpc-message").unwrap().to_str().unwrap().contains("not%20found"), "{case}");
            assert!(raw.body.is_empty(), "{case}: trailers-only response has a body");

            // The edge's own rejection is trailers-only too.
            let raw = send(&mesh, version, grpc_web(LIST, frame(&ListListingsRequest::default()), text, "wrong")).await;
            assert_eq!(raw.headers.get("grpc-status").unwrap(), "16", "{case}");
            assert!(raw.body.is_empty(), "{case}");
        }
    }
}

#[tokio::test]
async fn grpc_web_text_accepts_padded_chunks() {
    let mesh = DevMesh::start(mesh_options()).await;
    let bytes = frame(&ListListingsRequest { page_size: 5, ..Default::default() });
    // Two base64 chunks, each padded on its own.
    let body = format!("{}{}", STANDARD.encode(&bytes[..4]), STANDARD.encode(&bytes[4..]));
    assert!(body[..body.len() - 1].contains('='));
    let request = Request::post(LIST)
        .header("content-type", "application/grpc-web-text")
        .header("x-api-key", KEY)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let raw = send(&mesh, Version::HTTP_11, request).await;
    let frames = frames(&decode_text(&raw.body));
    let trailers = String::from_utf8(frames.last().unwrap().1.clone()).unwrap();
    assert!(trailers.contains("grpc-status: 0"), "{trailers}");
}

fn listing_of_size(target: usize) -> CreateListingRequest {
    let mut request = CreateListingRequest {
        title: "Sized".into(),
        description: String::new(),
        category: "sizes".into(),
        price: Some(Money { currency_code: "EUR".into(), amount_minor: 1 }),
    };
    while request.encoded_len() < target {
        request.description.push('x');
    }
    assert_eq!(request.encoded_len(), target, "cannot hit {target} bytes exactly");
    request
}

#[tokio::test]
async fn message_size_limit_applies_everywhere() {
    let mesh = DevMesh::start(mesh_options()).await;
    let mut client = mesh.client(KEY).await;
    client.create_listing(listing_of_size(1024)).await.expect("a message at the limit passes");
    let status = client.create_listing(listing_of_size(1025)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("1025 bytes"), "{}", status.message());

    // grpc-web text: the limit applies to the decoded message.
    let path = "/valora.marketplace.v1.MarketplaceService/CreateListing";
    let raw = send(&mesh, Version::HTTP_11, grpc_web(path, frame(&listing_of_size(1025)), true, KEY)).await;
    assert_eq!(raw.headers.get("grpc-status").unwrap(), "8");
    let raw = send(&mesh, Version::HTTP_11, grpc_web(path, frame(&listing_of_size(1024)), true, KEY)).await;
    let trailers = frames(&decode_text(&raw.body)).last().map(|f| String::from_utf8(f.1.clone()).unwrap());
    assert!(trailers.unwrap_or_default().contains("grpc-status: 0"));

    // Only a header claiming a huge message is sent: rejected without the payload.
    let mut header = vec![0u8];
    header.extend_from_slice(&(64u32 * 1024 * 1024).to_be_bytes());
    let raw = send(&mesh, Version::HTTP_2, grpc_web(path, header, false, KEY)).await;
    assert_eq!(raw.headers.get("grpc-status").unwrap(), "8");
}

#[tokio::test]
async fn deadlines_hold_end_to_end() {
    let mesh = DevMesh::start(mesh_options()).await;
    let mut client = mesh.client(KEY).await;

    // Raw requests, so that the client library does not enforce (or
    // reject) the deadline itself.
    let grpc = |timeout: &str| {
        Request::post(LIST)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-api-key", KEY)
            .header("grpc-timeout", timeout)
            .body(Full::new(Bytes::from(frame(&ListListingsRequest::default()))))
            .unwrap()
    };
    let raw = send(&mesh, Version::HTTP_2, grpc("1n")).await;
    assert_eq!(raw.headers.get("grpc-status").unwrap(), "4", "expired budget");
    let raw = send(&mesh, Version::HTTP_2, grpc("soon")).await;
    assert_eq!(raw.headers.get("grpc-status").unwrap(), "3", "malformed timeout");
    let message = raw.headers.get("grpc-message").unwrap().to_str().unwrap().to_owned();
    assert!(message.contains("grpc-timeout"), "{message}");
    let raw = send(&mesh, Version::HTTP_2, grpc("123456789S")).await;
    assert_eq!(raw.headers.get("grpc-status").unwrap(), "3", "nine digits");

    // A stream that would run forever ends with DEADLINE_EXCEEDED.
    let mut request = tonic::Request::new(WatchListingEventsRequest::default());
    request.metadata_mut().insert("grpc-timeout", "1S".parse().unwrap());
    let started = Instant::now();
    let mut stream = client.watch_listing_events(request).await.unwrap().into_inner();
    let outcome = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("stream ended");
    let status = outcome.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}
