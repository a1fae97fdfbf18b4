//! Signed webhooks: deliveries verified by the `standardwebhooks` Python
//! library, secret rotation, replay and tampering, retries with backoff,
//! crash safety, and the SSRF guard at registration.

use std::io::Read as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use valora_proto::marketplace::v1::webhook_service_client::WebhookServiceClient;
use valora_proto::marketplace::v1::{
    ArchiveListingRequest, CreateListingRequest, CreatePlanRequest, CreateWebhookEndpointRequest,
    DeleteWebhookEndpointRequest, ListWebhookDeliveriesRequest, ListWebhookEndpointsRequest, Money, PublishListingRequest,
    RotateWebhookSecretRequest,
};

use crate::support::{DevMesh, KEY, KeyInterceptor, MeshLayout, MeshOptions, SECOND_KEY, free_port, in_ci, repo_root};

type Client = WebhookServiceClient<InterceptedService<Channel, KeyInterceptor>>;

async fn webhook_client(mesh: &DevMesh, key: &str) -> Client {
    let channel = Channel::from_shared(format!("http://{}", mesh.edge())).unwrap().connect().await.unwrap();
    WebhookServiceClient::with_interceptor(channel, KeyInterceptor::new(key))
}

pub(crate) fn python_ready() -> bool {
    let ok = Command::new("python3").args(["-c", "import standardwebhooks"]).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(!in_ci(), "python3 with standardwebhooks is required in CI");
        eprintln!("skipping: python3 with standardwebhooks is not installed");
    }
    ok
}

fn options(retry_base_ms: u64, loopback: bool) -> MeshOptions {
    let mut env = vec![
        ("MARKETPLACE_WEBHOOK_RETRY_BASE_MS".to_owned(), retry_base_ms.to_string()),
        ("MARKETPLACE_WEBHOOK_TIMEOUT_MS".into(), "3000".into()),
    ];
    if loopback {
        env.push(("VALORA_WEBHOOK_ALLOW_LOOPBACK".into(), "true".into()));
    }
    MeshOptions { env, ..Default::default() }
}

/// The Python receiver, killed when dropped.
pub(crate) struct Receiver {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Receiver {
    pub(crate) fn start(fail_first: u32, delay_seconds: f64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("secrets"), "").unwrap();
        let child = Command::new("python3")
            .arg(repo_root().join("tests/webhooks/receiver.py"))
            .arg(port.to_string())
            .arg(dir.path().join("secrets"))
            .arg(dir.path().join("log.jsonl"))
            .arg(fail_first.to_string())
            .arg(delay_seconds.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the receiver");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "the receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, dir, child }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub(crate) fn set_secrets(&self, secrets: &[&str]) {
        std::fs::write(self.dir.path().join("secrets"), secrets.join("\n")).unwrap();
    }

    pub(crate) fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until `count` requests arrived.
    pub(crate) async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(started.elapsed() < limit, "{} of {count} deliveries arrived in {limit:?}", requests.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn body(request: &Value) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(request["body"].as_str().unwrap()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn check(secret: &str, mode: &str, request: &Value) -> String {
    let mut child = Command::new("python3")
        .arg(repo_root().join("tests/webhooks/check.py"))
        .args([secret, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), request.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn eur(amount: i64) -> Option<Money> {
    Some(Money { currency_code: "EUR".into(), amount_minor: amount })
}

/// Creates a listing with a plan and publishes it: three events.
async fn three_events(mesh: &DevMesh) -> String {
    let mut market = mesh.client(KEY).await;
    let listing = market
        .create_listing(CreateListingRequest { title: "Hooked".into(), description: String::new(), category: "toys".into(), price: eur(5) })
        .await
        .unwrap()
        .into_inner()
        .listing
        .unwrap();
    market
        .create_plan(CreatePlanRequest { listing_id: listing.id.clone(), name: "Once".into(), price: eur(5), interval: 1 })
        .await
        .unwrap();
    market.publish_listing(PublishListingRequest { id: listing.id.clone() }).await.unwrap();
    listing.id
}

#[tokio::test]
async fn deliveries_verify_with_standardwebhooks() {
    if !python_ready() {
        return;
    }
    let mesh = DevMesh::start(options(200, true)).await;
    let receiver = Receiver::start(0, 0.0);
    let mut hooks = webhook_client(&mesh, KEY).await;
    let created = hooks
        .create_webhook_endpoint(CreateWebhookEndpointRequest { url: receiver.url(), event_types: vec![] })
        .await
        .expect("register the endpoint")
        .into_inner();
    let first_secret = created.secret.clone();
    assert!(first_secret.starts_with("whsec_"));
    receiver.set_secrets(&[&first_secret]);
    let endpoint_id = created.endpoint.unwrap().id;

    let listing_id = three_events(&mesh).await;
    let requests = receiver.wait_for(3, Duration::from_secs(20)).await;
    let types: Vec<String> = requests.iter().map(|r| body(r)["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["listing.created", "plan.created", "listing.published"], "in order per endpoint");
    for request in &requests {
        assert_eq!(request["verified_with"], 0, "standardwebhooks rejected a delivery: {request}");
        assert_eq!(body(request)["data"]["listing"]["id"], listing_id.as_str());
    }
    let ids: std::collections::HashSet<&str> = requests.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "webhook-id must differ per event");

    // Replayed later, or tampered, the library rejects the delivery.
    assert_eq!(check(&first_secret, "as-is", &requests[0]), "accepted");
    let replay = check(&first_secret, "replay", &requests[0]);
    assert!(replay.starts_with("rejected") && replay.contains("too old"), "{replay}");
    let tamper = check(&first_secret, "tamper", &requests[0]);
    assert!(tamper.starts_with("rejected") && tamper.contains("signature"), "{tamper}");

    // Rotation: the new secret verifies at once, and the old one still does
    // during the grace period, because both sign.
    let rotated = hooks
        .rotate_webhook_secret(RotateWebhookSecretRequest { id: endpoint_id.clone(), grace_period: None })
        .await
        .unwrap()
        .into_inner();
    let second_secret = rotated.secret;
    assert_ne!(second_secret, first_secret);
    receiver.set_secrets(&[&second_secret]);
    mesh.client(KEY).await.archive_listing(ArchiveListingRequest { id: listing_id }).await.unwrap();
    let requests = receiver.wait_for(4, Duration::from_secs(20)).await;
    let archived = &requests[3];
    assert_eq!(body(archived)["type"], "listing.archived");
    assert_eq!(archived["verified_with"], 0, "the new secret did not verify: {archived}");
    assert_eq!(check(&first_secret, "as-is", archived), "accepted", "the old secret stopped signing during the grace period");
    assert_eq!(archived["signature"].as_str().unwrap().split(' ').count(), 2);

    // Deliveries and attempts are queryable, with the same webhook-id.
    let deliveries = hooks
        .list_webhook_deliveries(ListWebhookDeliveriesRequest { endpoint_id: endpoint_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(deliveries.len(), 4);
    assert!(deliveries.iter().all(|d| d.status == 2 && d.attempts.len() == 1));
    assert_eq!(deliveries[0].event_id, archived["id"].as_str().unwrap());

    // Another owner sees nothing of this endpoint.
    let mut other = webhook_client(&mesh, SECOND_KEY).await;
    let status = other.delete_webhook_endpoint(DeleteWebhookEndpointRequest { id: endpoint_id }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(!mesh.logs().contains(&first_secret[6..]), "a webhook secret reached the log");
}

#[tokio::test]
async fn failing_receiver_gets_retries_with_backoff() {
    if !python_ready() {
        return;
    }
    let mesh = DevMesh::start(options(400, true)).await;
    let receiver = Receiver::start(3, 0.0);
    let mut hooks = webhook_client(&mesh, KEY).await;
    let created = hooks
        .create_webhook_endpoint(CreateWebhookEndpointRequest { url: receiver.url(), event_types: vec!["listing.created".into()] })
        .await
        .unwrap()
        .into_inner();
    receiver.set_secrets(&[&created.secret]);
    let mut market = mesh.client(KEY).await;
    market
        .create_listing(CreateListingRequest { title: "Retry".into(), description: String::new(), category: "toys".into(), price: eur(1) })
        .await
        .unwrap();
    let requests = receiver.wait_for(4, Duration::from_secs(30)).await;
    let times: Vec<f64> = requests.iter().map(|r| r["received"].as_f64().unwrap()).collect();
    let ids: std::collections::HashSet<&str> = requests.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "retries must keep the webhook-id");
    // Delay n is base × 2^(n−1) times a jitter factor in [0.5, 1.0], plus
    // up to 200 ms of scheduling and HTTP time.
    for n in 1..4 {
        let gap = times[n] - times[n - 1];
        let full = 0.4 * f64::from(1u32 << (n - 1));
        eprintln!("retry {n}: waited {gap:.3} s (allowed {:.3} to {:.3})", full / 2.0, full + 0.2);
        assert!(gap >= full / 2.0 - 0.01 && gap <= full + 0.2, "retry {n} after {gap:.3} s");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deliveries = hooks
        .list_webhook_deliveries(ListWebhookDeliveriesRequest { endpoint_id: created.endpoint.unwrap().id, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    let codes: Vec<i32> = deliveries[0].attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [500, 500, 500, 204]);
    assert_eq!(deliveries[0].status, 2, "delivered in the end");
}

#[tokio::test]
async fn exhausted_attempts_mark_the_endpoint_failing() {
    if !python_ready() {
        return;
    }
    let mut options = options(100, true);
    options.env.push(("MARKETPLACE_WEBHOOK_MAX_ATTEMPTS".into(), "3".into()));
    let mesh = DevMesh::start(options).await;
    let receiver = Receiver::start(1000, 0.0);
    let mut hooks = webhook_client(&mesh, KEY).await;
    hooks
        .create_webhook_endpoint(CreateWebhookEndpointRequest { url: receiver.url(), event_types: vec![] })
        .await
        .unwrap();
    three_events(&mesh).await;
    receiver.wait_for(3, Duration::from_secs(20)).await;
    let started = Instant::now();
    loop {
        let endpoints = hooks.list_webhook_endpoints(ListWebhookEndpointsRequest {}).await.unwrap().into_inner().endpoints;
        if endpoints[0].status == 2 {
            assert!(endpoints[0].failure_reason.contains("HTTP 500"), "{}", endpoints[0].failure_reason);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the endpoint never became FAILING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only the first event was attempted: the others wait behind it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn deliveries_survive_a_crash() {
    if !python_ready() {
        return;
    }
    // Each answer takes a second, so deliveries are in flight at the kill.
    let receiver = Receiver::start(0, 1.0);
    let mesh = DevMesh::start(options(200, true)).await;
    let mut hooks = webhook_client(&mesh, KEY).await;
    let created = hooks
        .create_webhook_endpoint(CreateWebhookEndpointRequest { url: receiver.url(), event_types: vec![] })
        .await
        .unwrap()
        .into_inner();
    receiver.set_secrets(&[&created.secret]);
    three_events(&mesh).await;
    three_events(&mesh).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let layout: MeshLayout = mesh.kill();

    let mesh = DevMesh::start_in(layout, options(200, true)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let requests = receiver.requests();
        let ids: std::collections::HashSet<String> = requests.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
        if ids.len() == 6 {
            assert!(requests.iter().all(|r| r["verified_with"] == 0));
            eprintln!("{} requests for 6 events (duplicates allowed)", requests.len());
            break;
        }
        assert!(Instant::now() < deadline, "only {} of 6 events arrived after the crash", ids.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(mesh);
}

#[tokio::test]
async fn ssrf_guard_refuses_internal_targets_at_registration() {
    let mesh = DevMesh::start(options(200, false)).await;
    // A listener the refused URLs point at: nothing may connect to it.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let port = trap.local_addr().unwrap().port();
    let cases = [
        format!("https://127.0.0.1:{port}/"),
        format!("https://localhost:{port}/"),
        format!("https://2130706433:{port}/"),
        format!("https://0x7f.1:{port}/"),
        format!("https://[::1]:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
        format!("http://127.0.0.1:{port}/"),
        "https://10.0.0.1/".to_owned(),
        "https://172.16.5.4/".to_owned(),
        "https://192.168.1.1/".to_owned(),
        "https://100.64.0.1/".to_owned(),
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        "https://[::ffff:169.254.169.254]/".to_owned(),
        "https://[fe80::1]/".to_owned(),
        "https://[fd00::1]/".to_owned(),
        "https://224.0.0.1/".to_owned(),
        "https://0.0.0.0/".to_owned(),
        "https://[::]/".to_owned(),
        "http://example.com/".to_owned(),
        "ftp://example.com/".to_owned(),
        "https://user:secret@example.com/".to_owned(),
    ];
    let mut hooks = webhook_client(&mesh, KEY).await;
    for url in &cases {
        let status = hooks
            .create_webhook_endpoint(CreateWebhookEndpointRequest { url: url.clone(), event_types: vec![] })
            .await
            .expect_err(url);
        assert_eq!(status.code(), Code::InvalidArgument, "{url}: {status:?}");
        assert!(status.message().contains("url"), "{url}: {}", status.message());
    }
    std::thread::sleep(Duration::from_millis(200));
    match trap.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((mut stream, _)) => {
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf);
            panic!("a refused URL was connected to");
        }
        Err(error) => panic!("{error}"),
    }
    let endpoints = hooks.list_webhook_endpoints(ListWebhookEndpointsRequest {}).await.unwrap().into_inner().endpoints;
    assert!(endpoints.is_empty(), "a refused endpoint was stored");
}

/// Runs `valora serve marketplace` on SQLite in `layout` with one extra
/// webhook setting, for settings that must stop it before it listens.
fn serve_marketplace_with(layout: &MeshLayout, setting: (&str, &str)) -> std::process::Output {
    let database = format!("sqlite://{}?mode=rwc", layout.dir.path().join("m.db").display());
    let webhook_key = "ab".repeat(32);
    crate::support::run_valora(
        &[
            "serve",
            "marketplace",
            "--certs-dir",
            &layout.certs_dir().display().to_string(),
            "--admin-addr",
            "127.0.0.1:0",
            "--marketplace-addr",
            "127.0.0.1:0",
        ],
        &[
            ("MARKETPLACE_API_KEY", KEY),
            ("MARKETPLACE_DATABASE_URL", &database),
            ("MARKETPLACE_WEBHOOK_KEY", &webhook_key),
            setting,
        ],
        layout.dir.path(),
    )
}

#[tokio::test]
async fn loopback_exception_is_development_only() {
    let layout = MeshLayout::new();
    valora_mesh::pki::write_dev_pki(&layout.certs_dir(), false).unwrap();
    let output = serve_marketplace_with(&layout, ("VALORA_WEBHOOK_ALLOW_LOOPBACK", "true"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("VALORA_WEBHOOK_ALLOW_LOOPBACK"), "{stderr}");
}

#[tokio::test]
async fn bad_allowed_networks_stop_the_marketplace() {
    let layout = MeshLayout::new();
    valora_mesh::pki::write_dev_pki(&layout.certs_dir(), false).unwrap();
    for (list, entry) in [("10.20.0.0/16,10.0.0.0/33", "10.0.0.0/33"), ("0.0.0.0/0", "0.0.0.0/0")] {
        let output = serve_marketplace_with(&layout, ("VALORA_WEBHOOK_ALLOW_NETWORKS", list));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{list}: {stderr}");
        assert!(stderr.contains("VALORA_WEBHOOK_ALLOW_NETWORKS"), "{list}: {stderr}");
        assert!(stderr.contains(&format!("{entry:?}")), "{list}: {stderr}");
    }
}
