//! Edge rate limits: one limit shared by two edges through Redis,
//! forwarding headers that cannot pick a bucket, and the fallback while
//! Redis is down.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::Code;
use valora_proto::marketplace::v1::ListListingsRequest;

use crate::support::{DevMesh, KEY, MeshOptions, free_port, in_ci, tool};

fn redis_url() -> String {
    std::env::var("VALORA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Whether a Redis answers PING at `url`; fails in CI when not.
fn redis_reachable(url: &str) -> bool {
    let port = url.rsplit(':').next().unwrap_or("6379").trim_end_matches('/');
    let ok = Command::new("redis-cli").args(["-p", port, "ping"]).output().is_ok_and(|o| o.stdout.starts_with(b"PONG"));
    if !ok {
        assert!(!in_ci(), "Redis at {url} is required in CI");
        eprintln!("skipping: no Redis at {url}");
    }
    ok
}

fn limited_options(redis: Option<&str>, prefix: &str, per_key: &str) -> MeshOptions {
    let mut env = vec![("VALORA_RATE_LIMIT_PER_KEY".to_owned(), per_key.to_owned())];
    if let Some(url) = redis {
        env.push(("VALORA_REDIS_URL".into(), url.to_owned()));
        env.push(("VALORA_REDIS_PREFIX".into(), prefix.to_owned()));
    }
    MeshOptions { env, ..Default::default() }
}

/// Outcome counts of calls: (ok, limited).
async fn burst(meshes: &[&DevMesh], calls: usize) -> (usize, usize) {
    let mut clients = Vec::new();
    for mesh in meshes {
        clients.push(mesh.client(KEY).await);
    }
    let mut tasks = Vec::new();
    for n in 0..calls {
        let mut client = clients[n % clients.len()].clone();
        tasks.push(tokio::spawn(async move { client.list_listings(ListListingsRequest::default()).await }));
    }
    let (mut ok, mut limited) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let retry = status.metadata().get("retry-after").expect("retry-after");
                assert!(retry.to_str().unwrap().parse::<u64>().unwrap() >= 1);
                assert_eq!(status.metadata().get("ratelimit-remaining").unwrap(), "0");
                assert!(status.metadata().get("ratelimit-limit").is_some());
                limited += 1;
            }
        }
    }
    (ok, limited)
}

#[tokio::test]
async fn two_edges_share_one_limit_through_redis() {
    let url = redis_url();
    if !redis_reachable(&url) {
        return;
    }
    let prefix = format!("valora-test:{}:", uuid::Uuid::new_v4().simple());
    let first = DevMesh::start(limited_options(Some(&url), &prefix, "20/minute")).await;
    let second = DevMesh::start(limited_options(Some(&url), &prefix, "20/minute")).await;
    // Tolerance: none. The sliding-window log admits exactly the limit.
    let (ok, limited) = burst(&[&first, &second], 60).await;
    assert_eq!(ok, 20, "admitted across both edges");
    assert_eq!(limited, 40);
    assert!(first.logs().contains("rate limit exceeded") || second.logs().contains("rate limit exceeded"));
}

#[tokio::test]
async fn one_edge_alone_admits_exactly_its_limit() {
    let mesh = DevMesh::start(limited_options(None, "", "7/minute")).await;
    let (ok, limited) = burst(&[&mesh], 25).await;
    assert_eq!((ok, limited), (7, 18));
    // Admitted calls carry the RateLimit headers too.
    let fresh = DevMesh::start(limited_options(None, "", "7/minute")).await;
    let response = fresh.client(KEY).await.list_listings(ListListingsRequest::default()).await.unwrap();
    assert_eq!(response.metadata().get("ratelimit-limit").unwrap(), "7");
    assert_eq!(response.metadata().get("ratelimit-remaining").unwrap(), "6");
    assert_eq!(response.metadata().get("ratelimit-policy").unwrap(), "7;w=60");
}

#[tokio::test]
async fn forwarding_headers_cannot_pick_a_bucket() {
    let options = MeshOptions {
        env: vec![("VALORA_RATE_LIMIT_FAILURES_PER_ADDRESS".into(), "5/minute".into())],
        ..Default::default()
    };
    let mesh = DevMesh::start(options).await;
    for n in 0..5 {
        let mut client = mesh.client("wrong-key-0123456789abcdefghijklmnop").await;
        let mut request = tonic::Request::new(ListListingsRequest::default());
        request.metadata_mut().insert("x-forwarded-for", format!("198.51.100.{n}").parse().unwrap());
        let status = client.list_listings(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "attempt {n}: {status:?}");
    }
    // A new forwarded address and even a valid key do not escape the block:
    // the edge trusts no proxy, so the bucket is the TCP peer.
    let mut client = mesh.client(KEY).await;
    let mut request = tonic::Request::new(ListListingsRequest::default());
    request.metadata_mut().insert("x-forwarded-for", "203.0.113.77".parse().unwrap());
    let status = client.list_listings(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("failed calls"), "{}", status.message());
}

/// A redis-server of the test's own, on its own port.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let started = Instant::now();
        while !Command::new("redis-cli").args(["-p", &port.to_string(), "ping"]).output().is_ok_and(|o| o.stdout.starts_with(b"PONG")) {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, child: Some(child) }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn keys(&self, pattern: &str) -> usize {
        let output = Command::new("redis-cli").args(["-p", &self.port.to_string(), "--scan", "--pattern", pattern]).output().unwrap();
        String::from_utf8_lossy(&output.stdout).lines().count()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn redis_outage_falls_back_and_recovers() {
    if tool("redis-server").is_none() || tool("redis-cli").is_none() {
        return;
    }
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let mesh = DevMesh::start(limited_options(Some(&url), "fallback:", "10/minute")).await;
    assert_eq!(burst(&[&mesh], 15).await, (10, 5));
    assert_eq!(redis.keys("fallback:rl:*"), 1, "the count did not live in Redis");

    // Redis gone: the edge limits by itself, and says so once.
    redis.kill();
    let (ok, limited) = burst(&[&mesh], 15).await;
    assert_eq!((ok, limited), (10, 5), "the fallback did not limit");
    let logs = mesh.logs();
    assert_eq!(logs.matches("Redis unavailable").count(), 1, "{logs}");

    // Redis back (empty): counts go to Redis again.
    let redis = OwnRedis::start(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis.keys("fallback:rl:*") == 0 {
        assert!(Instant::now() < deadline, "the edge never returned to Redis");
        let _ = mesh.client(KEY).await.list_listings(ListListingsRequest::default()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(mesh.logs().contains("shared through Redis again"));
}
