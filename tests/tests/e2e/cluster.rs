//! Scale-out on one machine: two edges, two marketplace and two auth
//! replicas sharing one PostgreSQL and one Redis. A client spread over both
//! edges sees one set of data and one rate limit, and each webhook event
//! reaches its receiver exactly once. Killing one replica of each service
//! mid-run loses no acknowledged write and fails no call through the
//! surviving edge that started after the kills. An event in delivery when
//! its marketplace dies may then arrive twice, never more.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use valora_proto::auth::v1::auth_service_client::AuthServiceClient;
use valora_proto::auth::v1::{LoginRequest, RegisterRequest};
use valora_proto::marketplace::v1::marketplace_service_client::MarketplaceServiceClient;
use valora_proto::marketplace::v1::webhook_service_client::WebhookServiceClient;
use valora_proto::marketplace::v1::{
    CreateListingRequest, CreateWebhookEndpointRequest, GetListingRequest, ListListingsRequest,
    ListPlansRequest, Money,
};

use crate::support::{KEY, KeyInterceptor, PgDatabase, Served, WEBHOOK_KEY, free_port, http_get, in_ci, run_valora};
use crate::webhooks::{Receiver, body, python_ready};

type Market = MarketplaceServiceClient<InterceptedService<Channel, KeyInterceptor>>;
type Auth = AuthServiceClient<InterceptedService<Channel, KeyInterceptor>>;

const PEPPER: &str = "cluster-test-pepper-0123456789abcdef0123456789";
const PASSWORD: &str = "correct horse battery staple cluster";
/// ListPlans calls allowed per client address and minute, across edges.
const PLANS_PER_MINUTE: usize = 25;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// One replica: its gRPC and admin addresses and its process.
struct Replica {
    addr: SocketAddr,
    admin: SocketAddr,
    process: Served,
}

impl Replica {
    /// Calls this replica answered for `service`, from its own metrics.
    async fn calls(&self, service: &str) -> u64 {
        let text = http_get(&format!("http://{}/metrics", self.admin)).await;
        let label = format!("service=\"{service}\"");
        text.lines()
            .filter(|l| l.starts_with("valora_calls_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    certs: String,
    market_db: PgDatabase,
    auth_db: PgDatabase,
    redis_prefix: String,
    auth: Vec<Replica>,
    markets: Vec<Replica>,
    edges: Vec<Replica>,
}

impl Cluster {
    /// Migrates two fresh databases and starts every replica; `None` when
    /// PostgreSQL, Redis or Python are missing outside CI.
    async fn start() -> Option<Self> {
        if !python_ready() || !redis_ready() {
            return None;
        }
        let market_db = PgDatabase::create().await?;
        let auth_db = PgDatabase::create().await?;
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        valora_mesh::pki::write_dev_pki(&certs, false).unwrap();
        for (service, url) in [("marketplace", &market_db.url), ("auth", &auth_db.url)] {
            let output = run_valora(&["migrate", service, "--database-url", url], &[], dir.path());
            assert!(output.status.success(), "migrate {service}: {}", String::from_utf8_lossy(&output.stderr));
        }
        let keys = dir.path().join("signing-keys").display().to_string();
        let output = run_valora(&["auth", "new-signing-key", "--dir", &keys], &[], dir.path());
        assert!(output.status.success(), "new-signing-key: {}", String::from_utf8_lossy(&output.stderr));
        let mut cluster = Self {
            certs: certs.display().to_string(),
            dir,
            market_db,
            auth_db,
            redis_prefix: format!("valora-cluster-{}:", uuid::Uuid::new_v4().simple()),
            auth: Vec::new(),
            markets: Vec::new(),
            edges: Vec::new(),
        };
        for n in 0..2 {
            let replica = cluster.start_auth(n, loopback(), &keys);
            cluster.auth.push(replica);
        }
        for n in 0..2 {
            let replica = cluster.start_marketplace(n, loopback());
            cluster.markets.push(replica);
        }
        for n in 0..2 {
            let replica = cluster.start_edge(n);
            cluster.edges.push(replica);
        }
        for replica in cluster.auth.iter_mut().chain(&mut cluster.markets).chain(&mut cluster.edges) {
            replica.process.wait_listening(replica.addr, Duration::from_secs(60)).await;
        }
        Some(cluster)
    }

    /// Lists the auth replicas as edges and marketplaces see them. The first
    /// is given by name, so that discovery through DNS is part of the run.
    fn auth_targets(&self) -> String {
        format!("localhost:{},{}", self.auth[0].addr.port(), self.auth[1].addr)
    }

    fn common_args<'a>(&'a self, admin: &'a str) -> Vec<&'a str> {
        vec!["--certs-dir", &self.certs, "--admin-addr", admin, "--drain-seconds", "1"]
    }

    fn start_auth(&self, n: usize, addr: SocketAddr, keys: &str) -> Replica {
        let admin = loopback();
        let (addr_arg, admin_arg) = (addr.to_string(), admin.to_string());
        let mut args = vec!["serve", "auth", "--auth-addr", &addr_arg];
        args.extend(self.common_args(&admin_arg));
        let env = [
            ("AUTH_DATABASE_URL", self.auth_db.url.as_str()),
            ("VALORA_DATABASE_ALLOW_PLAINTEXT", "true"),
            ("AUTH_API_KEY_PEPPER", PEPPER),
            ("AUTH_SIGNING_KEYS_DIR", keys),
            ("AUTH_ARGON2_MEMORY_KIB", "1024"),
            ("AUTH_ARGON2_ITERATIONS", "1"),
            ("MARKETPLACE_API_KEY", KEY),
        ];
        let process = Served::start(self.dir.path(), &format!("auth-{n}"), &args, &env);
        Replica { addr, admin, process }
    }

    fn start_marketplace(&self, n: usize, addr: SocketAddr) -> Replica {
        let admin = loopback();
        let (addr_arg, admin_arg, auth) = (addr.to_string(), admin.to_string(), self.auth_targets());
        let mut args = vec!["serve", "marketplace", "--marketplace-addr", &addr_arg, "--auth-addr", &auth];
        args.extend(self.common_args(&admin_arg));
        let env = [
            ("MARKETPLACE_DATABASE_URL", self.market_db.url.as_str()),
            ("VALORA_DATABASE_ALLOW_PLAINTEXT", "true"),
            ("MARKETPLACE_API_KEY", KEY),
            ("MARKETPLACE_WEBHOOK_KEY", WEBHOOK_KEY),
            ("MARKETPLACE_WEBHOOK_RETRY_BASE_MS", "200"),
            ("MARKETPLACE_WEBHOOK_TIMEOUT_MS", "2000"),
            ("VALORA_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/32"),
        ];
        let process = Served::start(self.dir.path(), &format!("marketplace-{n}"), &args, &env);
        Replica { addr, admin, process }
    }

    fn start_edge(&self, n: usize) -> Replica {
        let (addr, admin) = (loopback(), loopback());
        let (addr_arg, admin_arg, auth) = (addr.to_string(), admin.to_string(), self.auth_targets());
        let markets = format!("{},{}", self.markets[0].addr, self.markets[1].addr);
        let mut args = vec!["serve", "edge", "--edge-addr", &addr_arg, "--marketplace-addr", &markets, "--auth-addr", &auth];
        args.extend(self.common_args(&admin_arg));
        let methods = format!("valora.marketplace.v1.MarketplaceService/ListPlans={PLANS_PER_MINUTE}/minute");
        let redis = redis_url();
        let env = [
            ("MARKETPLACE_API_KEY", KEY),
            ("VALORA_REDIS_URL", redis.as_str()),
            ("VALORA_REDIS_PREFIX", &self.redis_prefix),
            ("VALORA_RATE_LIMIT_PER_KEY", "off"),
            ("VALORA_RATE_LIMIT_PER_USER", "off"),
            ("VALORA_RATE_LIMIT_FAILURES_PER_ADDRESS", "off"),
            ("VALORA_RATE_LIMIT_METHODS", &methods),
        ];
        let process = Served::start(self.dir.path(), &format!("edge-{n}"), &args, &env);
        Replica { addr, admin, process }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, replicas) in [("auth", &self.auth), ("marketplace", &self.markets), ("edge", &self.edges)] {
            for (n, replica) in replicas.iter().enumerate() {
                out.push_str(&format!("----- {name}-{n}\n{}\n", replica.process.logs()));
            }
        }
        out
    }
}

fn redis_url() -> String {
    std::env::var("VALORA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn redis_ready() -> bool {
    let url = redis_url();
    let port = url.rsplit(':').next().unwrap_or("6379").trim_end_matches('/').to_owned();
    let ok = std::process::Command::new("redis-cli")
        .args(["-p", &port, "ping"])
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"PONG"));
    if !ok {
        assert!(!in_ci(), "Redis at {url} is required in CI");
        eprintln!("skipping: no Redis at {url}");
    }
    ok
}

async fn channel(edge: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{edge}")).unwrap().connect().await.expect("connect to an edge")
}

async fn market(edge: SocketAddr) -> Market {
    MarketplaceServiceClient::with_interceptor(channel(edge).await, KeyInterceptor::new(KEY))
}

async fn auth(edge: SocketAddr) -> Auth {
    AuthServiceClient::with_interceptor(channel(edge).await, KeyInterceptor::new(KEY))
}

fn listing(title: String) -> CreateListingRequest {
    CreateListingRequest {
        title,
        description: String::new(),
        category: "cluster".into(),
        price: Some(Money { currency_code: "EUR".into(), amount_minor: 900 }),
    }
}

/// Retries a listing read through an edge until the marketplace answers,
/// for the moments right after start-up.
async fn until_serving(edge: SocketAddr, cluster: &Cluster) {
    let started = Instant::now();
    let mut client = market(edge).await;
    while let Err(status) = client.list_listings(ListListingsRequest::default()).await {
        assert!(started.elapsed() < Duration::from_secs(60), "edge {edge} never served: {status:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the edge with admin address `admin` counts `count` healthy
/// replicas of each upstream, so that calls go round-robin over all of them.
async fn until_replicas_healthy(admin: SocketAddr, count: usize, cluster: &Cluster) {
    let started = Instant::now();
    loop {
        let text = http_get(&format!("http://{admin}/metrics")).await;
        let healthy = |upstream: &str| {
            text.lines().any(|line| {
                line.starts_with("valora_upstream_replicas{")
                    && line.contains(&format!("upstream=\"{upstream}\""))
                    && line.contains("state=\"healthy\"")
                    && line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(count as f64)
            })
        };
        if healthy("marketplace") && healthy("auth") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the edge at {admin} never saw {count} healthy replicas of each service\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Webhook ids seen by `receiver` for listing.created events, with how
/// often each arrived, keyed by listing id.
fn created_deliveries(receiver: &Receiver) -> (HashMap<String, usize>, HashSet<String>) {
    let mut per_id: HashMap<String, usize> = HashMap::new();
    let mut listings = HashSet::new();
    for request in receiver.requests() {
        let event = body(&request);
        if event["type"] == "listing.created" {
            *per_id.entry(request["id"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
            listings.insert(event["data"]["listing"]["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    (per_id, listings)
}

/// Waits until each receiver has a listing.created delivery for every id
/// in `listings`.
async fn wait_delivered(receivers: &[Receiver], listings: &HashSet<String>, cluster: &Cluster) {
    let started = Instant::now();
    for receiver in receivers {
        loop {
            let (_, seen) = created_deliveries(receiver);
            let missing = listings.difference(&seen).count();
            if missing == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "{missing} of {} listing.created events never reached {}\n{}",
                listings.len(),
                receiver.url(),
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One call made during the run.
struct Call {
    edge: usize,
    started: Instant,
    ended: Instant,
    outcome: Result<Option<String>, (Code, String)>,
}

/// Creates listings until `stop`, alternating edges call by call, as a
/// client spread over both would. Calls keep going to a killed edge, and
/// the checks count only those through the surviving one.
async fn writer(edges: Vec<SocketAddr>, prefix: String, stop: Arc<AtomicBool>, calls: Arc<Mutex<Vec<Call>>>) {
    let mut clients = Vec::new();
    for edge in &edges {
        clients.push(market(*edge).await);
    }
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let edge = n % clients.len();
        n += 1;
        let started = Instant::now();
        let result = clients[edge].create_listing(listing(format!("{prefix} {n}"))).await;
        let outcome = match result {
            Ok(response) => Ok(response.into_inner().listing.map(|l| l.id)),
            Err(status) => Err((status.code(), status.message().to_owned())),
        };
        calls.lock().unwrap().push(Call { edge, started, ended: Instant::now(), outcome });
    }
}

/// Signs in until `stop`, alternating edges, so both auth replicas work.
async fn signer(edges: Vec<SocketAddr>, email: String, stop: Arc<AtomicBool>, calls: Arc<Mutex<Vec<Call>>>) {
    let mut clients = Vec::new();
    for edge in &edges {
        clients.push(auth(*edge).await);
    }
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let edge = n % clients.len();
        n += 1;
        let started = Instant::now();
        let result = clients[edge].login(LoginRequest { email: email.clone(), password: PASSWORD.into() }).await;
        let outcome = result.map(|_| None).map_err(|status| (status.code(), status.message().to_owned()));
        calls.lock().unwrap().push(Call { edge, started, ended: Instant::now(), outcome });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_state_and_survive_kills() {
    let Some(mut cluster) = Cluster::start().await else { return };
    let edges: Vec<SocketAddr> = cluster.edges.iter().map(|e| e.addr).collect();
    for edge in &edges {
        until_serving(*edge, &cluster).await;
    }
    for edge in &cluster.edges {
        until_replicas_healthy(edge.admin, 2, &cluster).await;
    }

    // Two receivers, registered through the first edge.
    let receivers = [Receiver::start(0, 0.0), Receiver::start(0, 0.0)];
    let mut hooks = WebhookServiceClient::with_interceptor(channel(edges[0]).await, KeyInterceptor::new(KEY));
    for receiver in &receivers {
        let created = hooks
            .create_webhook_endpoint(CreateWebhookEndpointRequest { url: receiver.url(), event_types: vec!["listing.created".into()] })
            .await
            .unwrap_or_else(|status| panic!("register {}: {status:?}\n{}", receiver.url(), cluster.logs()))
            .into_inner();
        receiver.set_secrets(&[&created.secret]);
    }

    // Consistent data: what one edge writes, the other reads at once.
    let mut clients = [market(edges[0]).await, market(edges[1]).await];
    let mut written = HashSet::new();
    for n in 0..20 {
        let (writer, reader) = (n % 2, (n + 1) % 2);
        let created = clients[writer].create_listing(listing(format!("shared {n}"))).await.unwrap().into_inner().listing.unwrap();
        let read = clients[reader].get_listing(GetListingRequest { id: created.id.clone() }).await.unwrap().into_inner().listing.unwrap();
        assert_eq!((read.title.as_str(), read.version), (created.title.as_str(), created.version));
        written.insert(created.id);
    }
    for client in &mut clients {
        let page = client
            .list_listings(ListListingsRequest { query: "shared".into(), page_size: 100, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let listed: HashSet<String> = page.listings.into_iter().map(|l| l.id).collect();
        assert_eq!(listed, written, "both edges list the same listings");
    }

    // Calls spread over both marketplace replicas.
    let service = "valora.marketplace.v1.MarketplaceService";
    let served = [cluster.markets[0].calls(service).await, cluster.markets[1].calls(service).await];
    eprintln!("marketplace calls per replica: {served:?}");
    assert!(served.iter().all(|&n| n >= 10), "calls were not spread over the replicas: {served:?}");

    // Users: registered through one edge, signed in through the other,
    // and the token holds at both.
    let mut auth_clients = [auth(edges[0]).await, auth(edges[1]).await];
    let email = "ada.replica@example.com".to_owned();
    auth_clients[0]
        .register(RegisterRequest { email: email.clone(), password: PASSWORD.into(), display_name: String::new() })
        .await
        .unwrap();
    for client in &mut auth_clients {
        client.login(LoginRequest { email: email.clone(), password: PASSWORD.into() }).await.unwrap();
    }

    // One rate limit: ListPlans allows PLANS_PER_MINUTE per address in
    // total, whichever edge takes each call.
    let some_listing = written.iter().next().unwrap().clone();
    let (mut allowed, mut limited) = (0, 0);
    for n in 0..PLANS_PER_MINUTE + 15 {
        match clients[n % 2].list_plans(ListPlansRequest { listing_id: some_listing.clone(), ..Default::default() }).await {
            Ok(_) => allowed += 1,
            Err(status) if status.code() == Code::ResourceExhausted => limited += 1,
            Err(status) => panic!("ListPlans: {status:?}"),
        }
    }
    assert_eq!((allowed, limited), (PLANS_PER_MINUTE, 15), "the edges did not share one limit");

    // Each event reached each receiver exactly once, though both
    // marketplace replicas dispatch.
    wait_delivered(&receivers, &written, &cluster).await;
    for receiver in &receivers {
        let (per_id, _) = created_deliveries(receiver);
        let repeated: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "events delivered more than once: {repeated:?}");
        assert_eq!(per_id.len(), written.len());
    }

    // Load through both edges, then one replica of each service dies.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Vec::new()));
    let logins = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..4 {
        tasks.push(tokio::spawn(writer(edges.clone(), format!("load {worker}"), stop.clone(), writes.clone())));
    }
    for _ in 0..2 {
        tasks.push(tokio::spawn(signer(edges.clone(), email.clone(), stop.clone(), logins.clone())));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kill_started = Instant::now();
    cluster.markets[0].process.kill();
    cluster.auth[0].process.kill();
    cluster.edges[0].process.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    // Through the surviving edge, only calls in flight during the kills
    // may fail; every call that started after them succeeded.
    for (kind, calls) in [("CreateListing", &writes), ("Login", &logins)] {
        let calls = calls.lock().unwrap();
        let survivor: Vec<&Call> = calls.iter().filter(|c| c.edge == 1).collect();
        let after = survivor.iter().filter(|c| c.started >= killed).count();
        let failures: Vec<_> = survivor.iter().filter(|c| c.outcome.is_err()).collect();
        let in_flight = failures.iter().filter(|c| c.started < killed && c.ended >= kill_started).count();
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        for failure in &failures {
            *codes.entry(format!("{:?}", failure.outcome.as_ref().unwrap_err())).or_default() += 1;
        }
        eprintln!("{kind} through the surviving edge: {} calls, {after} after the kills, failures {codes:?}", survivor.len());
        assert!(after >= 10, "too few {kind} calls after the kills to judge: {after}");
        assert_eq!(failures.len(), in_flight, "{kind} calls that were not in flight failed: {codes:?}\n{}", cluster.logs());
    }

    // No acknowledged write was lost, and the survivors serve them all.
    let acknowledged: HashSet<String> = writes
        .lock()
        .unwrap()
        .iter()
        .filter_map(|c| c.outcome.as_ref().ok().cloned().flatten())
        .collect();
    eprintln!("acknowledged writes under load: {}", acknowledged.len());
    let mut survivor = market(edges[1]).await;
    for id in &acknowledged {
        survivor
            .get_listing(GetListingRequest { id: id.clone() })
            .await
            .unwrap_or_else(|status| panic!("acknowledged listing {id} is gone: {status:?}"));
    }

    // Every acknowledged listing's event arrives; a marketplace killed
    // mid-delivery may cause one repeat per endpoint (its lease expires
    // and the other replica sends it again), never more.
    let all: HashSet<String> = written.union(&acknowledged).cloned().collect();
    wait_delivered(&receivers, &all, &cluster).await;
    for receiver in &receivers {
        let (per_id, _) = created_deliveries(receiver);
        let repeats: usize = per_id.values().map(|n| n - 1).sum();
        assert!(repeats <= 1, "{repeats} repeated deliveries at {}", receiver.url());
    }

    // The killed marketplace comes back at the same address and gets
    // calls again.
    let addr = cluster.markets[0].addr;
    let mut returned = cluster.start_marketplace(2, addr);
    returned.process.wait_listening(addr, Duration::from_secs(60)).await;
    cluster.markets[0] = returned;
    let started = Instant::now();
    loop {
        survivor.list_listings(ListListingsRequest::default()).await.unwrap();
        if cluster.markets[0].calls(service).await > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the restarted replica got no calls\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
