//! Micro-benchmarks of the edge's hot path: the API-key check, the
//! security-header and CORS layers, bearer-token validation, and a
//! rate-limit decision with each backend (Redis only when
//! `VALORA_TEST_REDIS_URL`, default redis://127.0.0.1:6379, responds).
//!
//! Run: `cargo bench -p valora-gateway --bench hot_path`.

use std::convert::Infallible;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tower::{Service, ServiceBuilder, ServiceExt};
use valora_gateway::bearer::TokenValidator;
use valora_gateway::ratelimit::local::LocalLimiter;
use valora_gateway::ratelimit::shared::SharedLimiter;
use valora_gateway::ratelimit::Rate;
use valora_mesh::apikey::{StaticKeys, check_key_syntax};
use valora_mesh::security_headers::{SecurityHeaders, SecurityHeadersLayer};
use valora_proto::auth::v1::Jwk;

const KEY: &str = "bench-static-key-0123456789abcdef0123456789";

fn api_key(c: &mut Criterion) {
    let keys = StaticKeys::parse(&format!("{KEY},another-static-key-0123456789abcdef012345")).unwrap();
    c.bench_function("api key check (two static keys, match)", |b| {
        b.iter(|| keys.lookup(check_key_syntax(KEY.as_bytes()).unwrap()).is_some())
    });
    c.bench_function("api key check (two static keys, miss)", |b| {
        b.iter(|| keys.lookup(check_key_syntax(b"wrong-key-wrong-key-wrong-key-0123").unwrap()).is_none())
    });
}

fn layers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let origin = http::HeaderValue::from_static("https://app.example.com");
    let service = ServiceBuilder::new()
        .layer(SecurityHeadersLayer::new(SecurityHeaders::default()))
        .layer(valora_gateway::cors::layer(vec![origin]))
        .service(tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) }));
    c.bench_function("security headers + CORS layers (one request)", |b| {
        b.to_async(&runtime).iter(|| {
            let mut service = service.clone();
            async move {
                let request = Request::post("/valora.marketplace.v1.MarketplaceService/GetListing")
                    .header("origin", "https://app.example.com")
                    .body(())
                    .unwrap();
                service.ready().await.unwrap().call(request).await.unwrap()
            }
        })
    });
}

fn bearer_token(c: &mut Criterion) {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::signature::KeyPair;

    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let validator = TokenValidator::new("https://auth.valora.test", "valora-api");
    validator.set_keys(vec![Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        kid: "bench-key".into(),
        alg: "EdDSA".into(),
        r#use: "sig".into(),
    }]);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("bench-key".into());
    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = serde_json::json!({
        "sub": "0193a8f2-7c4e-7b1a-9d55-4e1f0a3c2b77", "role": "USER",
        "iss": "https://auth.valora.test", "aud": "valora-api", "exp": expires,
    });
    let token = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref())).unwrap();
    let authorization = format!("Bearer {token}");
    assert!(validator.validate(authorization.as_bytes()).is_ok(), "the benchmark token is valid");
    c.bench_function("bearer token validation (Ed25519)", |b| {
        b.iter(|| validator.validate(authorization.as_bytes()))
    });
}

fn limiter(c: &mut Criterion) {
    let rate = Rate { count: u32::MAX / 2, window: Duration::from_secs(1) };
    let local = LocalLimiter::default();
    let mut n = 0u64;
    c.bench_function("rate limit decision, in process", |b| {
        b.iter(|| {
            n += 1;
            local.decide(&format!("k:key-{}", n % 1000), rate, true)
        })
    });

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let url = std::env::var("VALORA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let shared = runtime.block_on(async {
        let limiter = SharedLimiter::new(&url, "valora-bench:", Duration::from_millis(200)).await.ok()?;
        let probe = limiter.decide("probe", rate, false).await;
        probe.allowed.then_some(limiter)
    });
    match shared {
        Some(shared) => {
            c.bench_function("rate limit decision, Redis (one round trip)", |b| {
                b.to_async(&runtime).iter(|| shared.decide("k:bench", Rate { count: 1_000_000, window: Duration::from_secs(1) }, true))
            });
        }
        None => eprintln!("Redis at {url} not reachable: skipping the Redis backend"),
    }
}

criterion_group!(benches, api_key, layers, bearer_token, limiter);
criterion_main!(benches);
