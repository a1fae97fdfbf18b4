//! Micro-benchmarks of the edge's hot path: the API-key check, the
//! security-header and CORS layers, and a rate-limit decision with each
//! backend (Redis only when `VALORA_TEST_REDIS_URL`, default
//! redis://127.0.0.1:6379, answers).
//!
//! Run: `cargo bench -p valora-gateway --bench hot_path`.

use std::convert::Infallible;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tower::{Service, ServiceBuilder, ServiceExt};
use valora_gateway::ratelimit::local::LocalLimiter;
use valora_gateway::ratelimit::shared::SharedLimiter;
use valora_gateway::ratelimit::Rate;
use valora_mesh::apikey::{StaticKeys, check_key_syntax};
use valora_mesh::security_headers::{SecurityHeaders, SecurityHeadersLayer};

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

criterion_group!(benches, api_key, layers, limiter);
criterion_main!(benches);
