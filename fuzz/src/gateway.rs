//! The edge's decoders: grpc-web request bodies (binary and base64 text,
//! then the message size check) and bearer tokens.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use tonic::body::Body;
use tonic::{Code, Status};
use valora_gateway::grpc_web::{Encoding, to_grpc_request};
use valora_gateway::limit::check_first_message;

/// Message size limits the first input byte chooses from: the edge's
/// default (4 MiB) and small ones that short inputs can exceed.
const LIMITS: [usize; 8] = [0, 1, 4, 5, 16, 100, 4096, 4 * 1024 * 1024];

/// HTTP chunk sizes the first input byte chooses from; `usize::MAX` sends
/// the body as one chunk.
const CHUNKS: [usize; 16] = [1, 1, 2, 3, 3, 4, 5, 6, 7, 8, 11, 13, 16, 64, 256, usize::MAX];

/// A grpc-web request body through `to_grpc_request` and
/// `check_first_message`, as the edge sends it to the router.
///
/// Input: one control byte (bit 0: text encoding; bits 1 to 3: the limit;
/// bits 4 to 7: the chunk size), then the HTTP body.
///
/// Properties:
/// - the translated request is HTTP/2 `application/grpc` with `te:
///   trailers` and no `content-length`;
/// - a binary body passes through unchanged, or fails with
///   RESOURCE_EXHAUSTED exactly when a complete message header announces
///   more than the limit;
/// - a text body decodes to the same bytes, or fails, whatever its HTTP
///   chunking; without padding inside, it decodes like one base64 string;
/// - a body that passes is never shorter or longer than what was decoded.
pub fn grpc_web_body(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else { return };
    let encoding = if control & 1 == 1 { Encoding::Text } else { Encoding::Binary };
    let limit = LIMITS[usize::from((control >> 1) & 0b111)];
    let chunk = CHUNKS[usize::from(control >> 4)];

    let chunked = translate(body, chunk, encoding, limit);
    match encoding {
        Encoding::Binary => {
            let expected_error = oversized(body, limit);
            match &chunked {
                Ok(out) => {
                    assert!(!expected_error, "a message over the limit of {limit} bytes passed");
                    assert_eq!(out.as_slice(), body, "binary body changed in transit");
                }
                Err(status) => {
                    assert!(expected_error, "binary body refused: {status:?}");
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                }
            }
        }
        Encoding::Text => {
            let whole = translate(body, usize::MAX, encoding, limit);
            match (&chunked, &whole) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "text body decoded differently in chunks of {chunk}"),
                (Err(_), Err(_)) => {}
                _ => panic!("chunks of {chunk} gave {chunked:?}, one chunk gave {whole:?}"),
            }
            let clean: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            let inner_padding = clean.len() > 4 && clean[..clean.len() - 4].contains(&b'=');
            if !inner_padding {
                match STANDARD.decode(&clean) {
                    Ok(decoded) if !oversized(&decoded, limit) => {
                        assert_eq!(whole.as_deref().ok(), Some(decoded.as_slice()), "text body misdecoded");
                    }
                    _ => assert!(whole.is_err(), "undecodable or oversized text body passed: {whole:?}"),
                }
            }
        }
    }
}

/// Sends `body` in chunks of `chunk` bytes through the edge's translation
/// and size check, and collects what the router would read.
fn translate(body: &[u8], chunk: usize, encoding: Encoding, limit: usize) -> Result<Vec<u8>, Status> {
    let frames: Vec<Result<http_body::Frame<Bytes>, Status>> = body
        .chunks(chunk.min(body.len()).max(1))
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let content_type = match encoding {
        Encoding::Binary => "application/grpc-web+proto",
        Encoding::Text => "application/grpc-web-text+proto",
    };
    let request = http::Request::builder()
        .method("POST")
        .uri("/valora.marketplace.v1.MarketplaceService/GetListing")
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(Body::new(StreamBody::new(futures::stream::iter(frames))))
        .map_err(|e| Status::internal(e.to_string()))?;
    let request = to_grpc_request(request, encoding);
    assert_eq!(request.version(), http::Version::HTTP_2);
    assert_eq!(request.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"application/grpc"[..]));
    assert_eq!(request.headers().get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
    assert!(request.headers().get("content-length").is_none(), "content-length kept");
    futures::executor::block_on(async move {
        let checked = check_first_message(request.into_body(), limit).await?;
        Ok(checked.collect().await?.to_bytes().to_vec())
    })
}

/// Whether a complete gRPC message header in `bytes`, read message by
/// message, announces more than `limit` bytes.
fn oversized(bytes: &[u8], limit: usize) -> bool {
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 5) {
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if u64::from(length) > limit as u64 {
            return true;
        }
        at += 5 + length as usize;
    }
    false
}

/// Issuer and audience the token checks expect, the defaults of
/// `AUTH_TOKEN_ISSUER` and `AUTH_TOKEN_AUDIENCE`.
const ISSUER: &str = "valora-auth";
const AUDIENCE: &str = "valora";
/// Key id of the fuzzing key.
const KID: &str = "fuzz";
/// Clock leeway of the edge's validation, in seconds.
const LEEWAY: u64 = 30;
/// PKCS #8 prefix of an Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
/// Seed of the fuzzing key: 32 bytes of 7. It signs fuzz inputs only.
const SEED: [u8; 32] = [7; 32];
/// Public key of [`SEED`], base64url as in a JWK's `x`.
const PUBLIC_X: &str = "6kpsY-KcUgq-9VB7Ey7F-ZVHdq6-vnuSQh7qaRRG0iw";

/// The claims the edge reads, as in `bearer.rs`.
#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    role: String,
}

struct TokenFixture {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

fn token_fixture() -> &'static TokenFixture {
    static FIXTURE: OnceLock<TokenFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&SEED);
        let encoding = EncodingKey::from_ed_der(&der);
        let decoding = DecodingKey::from_ed_components(PUBLIC_X).expect("the fuzzing public key");
        // The validation of BearerVerifier::new.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        let fixture = TokenFixture { encoding, decoding, validation };
        let probe = sign(&fixture.encoding, br#"{"alg":"EdDSA"}"#, b"{}");
        let (input, signature) = probe.rsplit_once('.').unwrap_or_default();
        assert!(
            jsonwebtoken::crypto::verify(signature, input.as_bytes(), &fixture.decoding, Algorithm::EdDSA)
                .unwrap_or(false),
            "PUBLIC_X is not the public key of SEED"
        );
        fixture
    })
}

/// Signs `header` and `claims`, taken as they are, with EdDSA.
fn sign(key: &EncodingKey, header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, Algorithm::EdDSA).unwrap_or_default();
    format!("{input}.{signature}")
}

/// The steps of `BearerVerifier::verify` after the key set is loaded, with
/// one key, [`KID`]: the `Authorization` value, `decode_header`, the key
/// id, `decode` with the edge's validation, and the role.
fn verify(fixture: &TokenFixture, header: &[u8]) -> Result<(String, String), &'static str> {
    const INVALID: &str = valora_gateway::bearer::INVALID_TOKEN;
    let token = std::str::from_utf8(header)
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(INVALID)?;
    let jose = jsonwebtoken::decode_header(token).map_err(|_| INVALID)?;
    if jose.kid.as_deref() != Some(KID) {
        return Err(INVALID);
    }
    let now = jsonwebtoken::get_current_timestamp();
    let data = jsonwebtoken::decode::<Claims>(token, &fixture.decoding, &fixture.validation).map_err(|_| INVALID)?;
    check_accepted(token, &data.header, now);
    match data.claims.role.as_str() {
        "USER" | "ADMIN" => Ok((data.claims.sub, data.claims.role)),
        _ => Err(INVALID),
    }
}

/// Bearer tokens through the edge's checks (`bearer.rs`), with a fixed
/// Ed25519 key: the input as an `Authorization` value, and a token whose
/// JOSE header and claims are the input split at its first newline,
/// signed with that key.
///
/// Properties of an accepted token: `alg: EdDSA`, the expected `iss` and
/// `aud`, an `exp` not past (with the leeway), an `nbf` not in the future,
/// a string `sub`; the principal is that `sub` with role USER or ADMIN.
pub fn bearer_token(data: &[u8]) {
    let fixture = token_fixture();
    // Any input is accepted or refused without a panic.
    let _ = verify(fixture, data);
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (jose, claims) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let token = sign(&fixture.encoding, jose, claims);
    let _ = verify(fixture, format!("Bearer {token}").as_bytes());
}

fn check_accepted(token: &str, header: &jsonwebtoken::Header, now: u64) {
    assert_eq!(header.alg, Algorithm::EdDSA);
    let payload = token.split('.').nth(1).unwrap_or_default();
    // serde_json skips the strings of fields that a struct ignores without
    // checking their UTF-8, so an accepted claims set may hold invalid
    // UTF-8 in a claim the edge does not read; read it leniently here.
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_str(&String::from_utf8_lossy(&bytes)).ok())
        .unwrap_or_default();
    assert_eq!(claims["iss"].as_str(), Some(ISSUER), "accepted claims {claims}");
    let audience_ok = match &claims["aud"] {
        serde_json::Value::String(aud) => aud == AUDIENCE,
        serde_json::Value::Array(list) => list.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    assert!(audience_ok, "accepted claims {claims}");
    let exp = claims["exp"].as_f64();
    assert!(exp.is_some_and(|exp| exp + LEEWAY as f64 >= now as f64), "accepted claims {claims}");
    if let Some(nbf) = claims.get("nbf") {
        let later = jsonwebtoken::get_current_timestamp();
        assert!(nbf.as_f64().is_some_and(|nbf| nbf <= (later + LEEWAY) as f64), "accepted claims {claims}");
    }
    assert!(claims["sub"].is_string(), "accepted claims {claims}");
}
