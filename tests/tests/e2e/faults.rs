//! Fault injection against real processes: PostgreSQL killed under a write
//! load, the `valora dev` process killed under load, SIGTERM while streams
//! are open, and a slow, stalled or cut network between the edge and the
//! marketplace.
//!
//! The tests take [`SERIAL`] so that they run one at a time: on a machine
//! with two cores, one test's load would otherwise distort the timings of
//! another.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use valora_proto::marketplace::v1::marketplace_service_client::MarketplaceServiceClient;
use valora_proto::marketplace::v1::{
    BillingInterval, CreateListingRequest, CreatePlanRequest, ListListingsRequest, Money,
    PublishListingRequest, RotatePlanRequest, WatchListingEventsRequest,
};

use crate::faultproxy::{Fault, FaultProxy};
use crate::postgres::{PgOptions, PrivatePostgres};
use crate::support::{DevMesh, KEY, KeyInterceptor, MeshOptions, Served, free_port, run_valora};

/// Held by every test of this module for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A call that has not ended after this long counts as hung.
const HANG: Duration = Duration::from_secs(20);

type Client = MarketplaceServiceClient<InterceptedService<Channel, KeyInterceptor>>;

// ---------------------------------------------------------------------------
// Calls and their outcomes

/// Why a call did not succeed.
#[derive(Clone, Debug)]
enum Failure {
    /// A status. `transport` is true when the client created the status
    /// from a connection error, so the server never responded.
    Status { code: Code, message: String, transport: bool },
    /// No response within [`HANG`].
    Hung,
}

impl Failure {
    fn label(&self) -> String {
        match self {
            Self::Status { code, transport: true, .. } => format!("{code:?} (transport)"),
            Self::Status { code, .. } => format!("{code:?}"),
            Self::Hung => "hung".to_owned(),
        }
    }
}

/// Awaits a call, at most [`HANG`].
async fn guarded<T>(call: impl Future<Output = Result<tonic::Response<T>, Status>>) -> Result<T, Failure> {
    match tokio::time::timeout(HANG, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Failure::Status {
            code: status.code(),
            message: status.message().to_owned(),
            transport: std::error::Error::source(&status).is_some(),
        }),
        Err(_) => Err(Failure::Hung),
    }
}

fn money(amount_minor: i64) -> Option<Money> {
    Some(Money { currency_code: "EUR".to_owned(), amount_minor })
}

fn listing_request(title: &str) -> CreateListingRequest {
    CreateListingRequest {
        title: title.to_owned(),
        description: "written under fault injection".to_owned(),
        category: "books".to_owned(),
        price: money(1500),
    }
}

/// Counts each label, for printing.
fn histogram<'a>(labels: impl Iterator<Item = String> + 'a) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for label in labels {
        *counts.entry(label).or_insert(0) += 1;
    }
    counts
}

// ---------------------------------------------------------------------------
// PostgreSQL killed under a write load

/// One CreateListing call of a write load.
#[derive(Debug)]
struct Write {
    title: String,
    began: Instant,
    ended: Instant,
    /// The id of the listing when acknowledged.
    result: Result<String, Failure>,
}

/// Creates listings titled `PREFIX-N` until `stop`, logging every call.
async fn create_loop(mut client: Client, prefix: String, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Write>>>) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let title = format!("{prefix}-{n}");
        let began = Instant::now();
        let result = guarded(client.create_listing(listing_request(&title)))
            .await
            .map(|response| response.listing.map(|l| l.id).unwrap_or_default());
        let failed = result.is_err();
        log.lock().unwrap_or_else(|p| p.into_inner()).push(Write { title, began, ended: Instant::now(), result });
        if failed {
            // Failures during an outage can return at once, so a short pause
            // keeps the writers from spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads the id and title of every listing through psql, grouping ids by
/// title.
fn listing_rows(postgres: &PrivatePostgres) -> HashMap<String, Vec<String>> {
    let mut by_title: HashMap<String, Vec<String>> = HashMap::new();
    let rows = postgres.sql("SELECT id, title FROM marketplace_listings");
    for line in rows.lines().filter(|line| !line.is_empty()) {
        let (id, title) = line.split_once('|').expect("id|title");
        by_title.entry(title.to_owned()).or_default().push(id.to_owned());
    }
    by_title
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_write_load() {
    const WRITERS: usize = 4;
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let Some(postgres) = PrivatePostgres::create(PgOptions::default()) else { return };
    let url = postgres.url("127.0.0.1", &[("sslmode", "disable")]);
    let mesh = DevMesh::start(MeshOptions { database_url: Some(url), ..Default::default() }).await;

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for worker in 0..WRITERS {
        let client = mesh.client(KEY).await;
        writers.push(tokio::spawn(create_loop(client, format!("pgkill-{worker}"), stop.clone(), log.clone())));
    }
    let load_began = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let killed = Instant::now();
    tokio::task::block_in_place(|| postgres.kill());
    // Backends outlive the postmaster for a moment and may still commit, so
    // the outage counts from when every PostgreSQL process has exited.
    let all_exited = Instant::now();
    // Each call waits up to the 3-second database acquire timeout before it
    // fails, so the outage lasts long enough for whole calls to fit in it.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let restarting = Instant::now();
    tokio::task::block_in_place(|| postgres.start());
    let back = Instant::now();

    // The load goes on until a write that began after PostgreSQL came back
    // succeeds, then for one more second.
    let recovered = loop {
        let first = log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|w| w.began >= back && w.result.is_ok())
            .map(|w| w.ended)
            .min();
        if let Some(first) = first {
            break Some(first);
        }
        if back.elapsed() > Duration::from_secs(30) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer task");
    }
    let writes = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));

    // The same process serves without a restart.
    let mut client = mesh.client(KEY).await;
    let after = guarded(client.create_listing(listing_request("pgkill-after"))).await;

    let acknowledged: Vec<&Write> = writes.iter().filter(|w| w.result.is_ok()).collect();
    let failed: Vec<&Write> = writes.iter().filter(|w| w.result.is_err()).collect();
    let codes = histogram(writes.iter().map(|w| match &w.result {
        Ok(_) => "OK".to_owned(),
        Err(failure) => failure.label(),
    }));
    let unexpected: Vec<(&str, &Failure)> = failed
        .iter()
        .filter_map(|w| w.result.as_ref().err().map(|f| (w.title.as_str(), f)))
        .filter(|(_, f)| !matches!(f, Failure::Status { code: Code::Unavailable, transport: false, .. }))
        .collect();
    // PostgreSQL accepts connections before `pg_ctl start` returns, so the
    // outage ends when the restart begins, not when it is confirmed.
    let during: Vec<&Write> = writes.iter().filter(|w| w.began >= all_exited && w.ended <= restarting).collect();
    let first_failure = failed.iter().filter(|w| w.ended >= killed).map(|w| w.ended - killed).min();
    let sample = failed.iter().find_map(|w| match &w.result {
        Err(Failure::Status { message, .. }) => Some(message.clone()),
        _ => None,
    });

    let rows = tokio::task::block_in_place(|| listing_rows(&postgres));
    let missing: Vec<(&str, &str)> = acknowledged
        .iter()
        .filter_map(|w| {
            let id = w.result.as_ref().ok()?;
            let present = rows.get(&w.title).is_some_and(|ids| ids.contains(id));
            (!present).then_some((w.title.as_str(), id.as_str()))
        })
        .collect();
    let attempted: HashSet<&str> = writes.iter().map(|w| w.title.as_str()).collect();
    let duplicated: Vec<&String> = rows.iter().filter(|(_, ids)| ids.len() > 1).map(|(title, _)| title).collect();
    let unattempted: Vec<&String> = rows
        .keys()
        .filter(|title| title.starts_with("pgkill-") && *title != "pgkill-after" && !attempted.contains(title.as_str()))
        .collect();
    let committed_anyway = failed.iter().filter(|w| rows.contains_key(&w.title)).count();

    eprintln!(
        "postgres_killed_mid_write_load: {} writers, {} calls: {} acknowledged, {} failed; codes {codes:?}",
        WRITERS,
        writes.len(),
        acknowledged.len(),
        failed.len()
    );
    eprintln!(
        "  PostgreSQL killed {:.2?} into the load, every process exited {:.2?} later, down {:.2?} in all, \
         pg_ctl start took {:.2?}; first failure {:?} after the kill; {} calls began and ended while it was down",
        killed - load_began,
        all_exited - killed,
        restarting - killed,
        back - restarting,
        first_failure,
        during.len()
    );
    if let Some(recovered) = recovered {
        eprintln!(
            "  first acknowledged write after the restart {:.2?} after PostgreSQL accepted connections; \
             outage seen by clients {:.2?} (kill to that write)",
            recovered - back,
            recovered - killed
        );
    }
    eprintln!(
        "  {} rows in the database; {} failed calls committed anyway (indeterminate, allowed); sample failure: {sample:?}",
        rows.values().map(Vec::len).sum::<usize>(),
        committed_anyway
    );
    eprintln!("postgres_killed_mid_write_load took {:.2?}", started.elapsed());

    assert!(acknowledged.len() >= 20, "too few acknowledged writes to mean anything: {}", acknowledged.len());
    assert!(missing.is_empty(), "acknowledged writes missing from the database: {missing:?}");
    assert!(duplicated.is_empty(), "titles written more than once: {duplicated:?}");
    assert!(unattempted.is_empty(), "rows that no call wrote: {unattempted:?}");
    assert!(!during.is_empty(), "no call ran while PostgreSQL was down");
    assert!(during.iter().all(|w| w.result.is_err()), "a call succeeded while PostgreSQL was down");
    assert!(unexpected.is_empty(), "calls failed with something other than UNAVAILABLE: {unexpected:?}");
    let recovered = recovered.expect("no write succeeded within 30 s of PostgreSQL's restart");
    let recovery = recovered - back;
    assert!(recovery <= Duration::from_secs(10), "writes succeeded again only {recovery:?} after the restart");
    assert!(after.is_ok(), "a write after the load failed: {after:?}");
}

// ---------------------------------------------------------------------------
// The `valora dev` process killed under load

/// What the server acknowledged to one worker.
#[derive(Debug, Default)]
struct Acks {
    listings: Vec<String>,
    /// Plan id, listing id, revision.
    plans: Vec<(String, String, i64)>,
    retired: Vec<String>,
    published: Vec<String>,
    /// Method and failure.
    failures: Vec<(&'static str, Failure)>,
}

/// Runs listing lifecycles until `stop`: create a listing, give it a plan,
/// rotate the plan twice, publish, rotate once more. A failed step ends
/// its lifecycle, and the next one starts from a new listing.
async fn lifecycle_loop(mut client: Client, prefix: String, stop: Arc<AtomicBool>) -> Acks {
    let mut acks = Acks::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        if let Err(failure) = lifecycle(&mut client, &format!("{prefix}-{n}"), &mut acks).await {
            acks.failures.push(failure);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    acks
}

async fn lifecycle(client: &mut Client, title: &str, acks: &mut Acks) -> Result<(), (&'static str, Failure)> {
    let listing = guarded(client.create_listing(listing_request(title)))
        .await
        .map_err(|f| ("CreateListing", f))?
        .listing
        .expect("CreateListing returns the listing");
    acks.listings.push(listing.id.clone());
    let request = CreatePlanRequest {
        listing_id: listing.id.clone(),
        name: "Monthly".to_owned(),
        price: money(900),
        interval: BillingInterval::Month as i32,
    };
    let plan = guarded(client.create_plan(request))
        .await
        .map_err(|f| ("CreatePlan", f))?
        .plan
        .expect("CreatePlan returns the plan");
    acks.plans.push((plan.id.clone(), listing.id.clone(), plan.revision));
    let mut active = plan.id;
    for step in 0..3 {
        if step == 2 {
            guarded(client.publish_listing(PublishListingRequest { id: listing.id.clone() }))
                .await
                .map_err(|f| ("PublishListing", f))?;
            acks.published.push(listing.id.clone());
        }
        let request = RotatePlanRequest { plan_id: active.clone(), price: money(1000 + step), ..Default::default() };
        let rotated = guarded(client.rotate_plan(request)).await.map_err(|f| ("RotatePlan", f))?;
        let new = rotated.new_plan.expect("RotatePlan returns the new plan");
        acks.retired.push(active);
        acks.plans.push((new.id.clone(), listing.id.clone(), new.revision));
        active = new.id;
    }
    Ok(())
}

/// Starts `workers` lifecycle loops against `mesh`.
async fn start_lifecycles(
    mesh: &DevMesh,
    workers: usize,
    phase: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Acks>> {
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let client = mesh.client(KEY).await;
        tasks.push(tokio::spawn(lifecycle_loop(client, format!("svckill-{phase}-{worker}"), stop.clone())));
    }
    tasks
}

async fn join_lifecycles(tasks: Vec<tokio::task::JoinHandle<Acks>>, into: &mut Acks) {
    for task in tasks {
        let acks = task.await.expect("lifecycle task");
        into.listings.extend(acks.listings);
        into.plans.extend(acks.plans);
        into.retired.extend(acks.retired);
        into.published.extend(acks.published);
        into.failures.extend(acks.failures);
    }
}

/// Runs a query through psql and returns one string per row.
fn rows(postgres: &PrivatePostgres, query: &str) -> Vec<String> {
    postgres.sql(query).lines().filter(|line| !line.is_empty()).map(str::to_owned).collect()
}

/// Invariants of the marketplace tables, each a query returning the rows
/// that break it. The load never archives, so every RETIRED plan was
/// retired by a rotation.
const INVARIANTS: &[(&str, &str)] = &[
    (
        "every plan's listing exists",
        "SELECT p.id FROM marketplace_plans p \
         WHERE NOT EXISTS (SELECT 1 FROM marketplace_listings l WHERE l.id = p.listing_id)",
    ),
    (
        "at most one ACTIVE plan per listing",
        "SELECT listing_id FROM marketplace_plans WHERE status = 'ACTIVE' GROUP BY listing_id HAVING count(*) > 1",
    ),
    (
        "plan revisions run 1..n per listing",
        "SELECT listing_id FROM marketplace_plans GROUP BY listing_id \
         HAVING min(revision) <> 1 OR max(revision) <> count(*) OR count(DISTINCT revision) <> count(*)",
    ),
    (
        "each later revision replaces the RETIRED one before it",
        "SELECT p.id FROM marketplace_plans p WHERE p.revision > 1 AND NOT EXISTS (\
         SELECT 1 FROM marketplace_plans q WHERE q.id = p.replaces_plan_id AND q.listing_id = p.listing_id \
         AND q.revision = p.revision - 1 AND q.status = 'RETIRED')",
    ),
    (
        "every RETIRED plan has a successor and a retire time",
        "SELECT p.id FROM marketplace_plans p WHERE p.status = 'RETIRED' AND (p.retire_time IS NULL OR NOT EXISTS (\
         SELECT 1 FROM marketplace_plans s WHERE s.replaces_plan_id = p.id))",
    ),
    (
        "the newest revision of a listing is its ACTIVE plan",
        "SELECT p.id FROM marketplace_plans p WHERE (p.status = 'ACTIVE') <> (p.revision = \
         (SELECT max(q.revision) FROM marketplace_plans q WHERE q.listing_id = p.listing_id))",
    ),
    (
        "every PUBLISHED listing has an ACTIVE plan",
        "SELECT l.id FROM marketplace_listings l WHERE l.status = 'PUBLISHED' AND NOT EXISTS (\
         SELECT 1 FROM marketplace_plans p WHERE p.listing_id = l.id AND p.status = 'ACTIVE')",
    ),
    (
        "a listing is PUBLISHED exactly when one listing.publish audit event names it",
        "SELECT l.id FROM marketplace_listings l WHERE (l.status = 'PUBLISHED') <> (1 = (\
         SELECT count(*) FROM marketplace_audit_events a WHERE a.action = 'listing.publish' AND a.target = l.id))",
    ),
    (
        "a plan is RETIRED exactly when one plan.rotate audit event names it",
        "SELECT p.id FROM marketplace_plans p WHERE (p.status = 'RETIRED') <> (1 = (\
         SELECT count(*) FROM marketplace_audit_events a WHERE a.action = 'plan.rotate' AND a.target = p.id))",
    ),
    (
        "every audit event names a row that exists",
        "SELECT a.seq::text FROM marketplace_audit_events a WHERE \
         (a.action = 'listing.publish' AND NOT EXISTS (SELECT 1 FROM marketplace_listings l WHERE l.id = a.target)) \
         OR (a.action = 'plan.rotate' AND NOT EXISTS (SELECT 1 FROM marketplace_plans p WHERE p.id = a.target))",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_killed_under_load() {
    const WORKERS: usize = 4;
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let Some(postgres) = PrivatePostgres::create(PgOptions::default()) else { return };
    let url = postgres.url("127.0.0.1", &[("sslmode", "disable")]);
    let options = MeshOptions { database_url: Some(url.clone()), ..Default::default() };
    let mesh = DevMesh::start(options.clone()).await;

    let mut acks = Acks::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = start_lifecycles(&mesh, WORKERS, "a", &stop).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let killed = Instant::now();
    let layout = tokio::task::block_in_place(|| mesh.kill());
    let kill_took = killed.elapsed();
    // The load runs on against the dead process for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    join_lifecycles(tasks, &mut acks).await;
    let before_restart = format!(
        "{} listings, {} plans, {} rotations, {} publishes",
        acks.listings.len(),
        acks.plans.len(),
        acks.retired.len(),
        acks.published.len()
    );
    let published_before_restart = acks.published.len();

    let restarting = Instant::now();
    let mesh = DevMesh::start_in(layout, options).await;
    let restart_took = restarting.elapsed();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = start_lifecycles(&mesh, WORKERS, "b", &stop).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    join_lifecycles(tasks, &mut acks).await;
    let layout = tokio::task::block_in_place(|| mesh.stop());

    let listings: HashMap<String, String> = rows(&postgres, "SELECT id, status FROM marketplace_listings")
        .into_iter()
        .filter_map(|row| row.split_once('|').map(|(id, status)| (id.to_owned(), status.to_owned())))
        .collect();
    let plans: HashMap<String, (String, i64, String)> =
        rows(&postgres, "SELECT id, listing_id, revision, status FROM marketplace_plans")
            .into_iter()
            .filter_map(|row| {
                let mut fields = row.split('|');
                let id = fields.next()?.to_owned();
                let listing = fields.next()?.to_owned();
                let revision = fields.next()?.parse().ok()?;
                Some((id, (listing, revision, fields.next()?.to_owned())))
            })
            .collect();
    let missing_listings: Vec<&String> = acks.listings.iter().filter(|id| !listings.contains_key(*id)).collect();
    let missing_plans: Vec<&(String, String, i64)> = acks
        .plans
        .iter()
        .filter(|(id, listing, revision)| plans.get(id).is_none_or(|(l, r, _)| l != listing || r != revision))
        .collect();
    let not_retired: Vec<&String> =
        acks.retired.iter().filter(|id| plans.get(*id).is_none_or(|(_, _, status)| status != "RETIRED")).collect();
    let not_published: Vec<&String> =
        acks.published.iter().filter(|id| listings.get(*id).is_none_or(|status| status != "PUBLISHED")).collect();
    let breaking: Vec<(&str, Vec<String>)> =
        INVARIANTS.iter().map(|(name, query)| (*name, rows(&postgres, query))).collect();
    let verify = tokio::task::block_in_place(|| {
        run_valora(&["audit", "verify", "marketplace", "--database-url", &url], &[], layout.dir.path())
    });
    let verify_out = format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    let audit_events = postgres.sql("SELECT count(*) FROM marketplace_audit_events");

    let codes = histogram(acks.failures.iter().map(|(method, failure)| format!("{method} {}", failure.label())));
    let unexpected: Vec<&(&str, Failure)> = acks
        .failures
        .iter()
        .filter(|(_, f)| match f {
            Failure::Status { transport: true, .. } => false,
            Failure::Status { code, .. } => *code != Code::Unavailable,
            Failure::Hung => true,
        })
        .collect();
    let published_rows = listings.values().filter(|s| *s == "PUBLISHED").count();
    let retired_rows = plans.values().filter(|(_, _, s)| s == "RETIRED").count();
    eprintln!(
        "service_killed_under_load: acknowledged {} listings, {} plans, {} rotations, {} publishes \
         (before the restart: {before_restart}); failures {codes:?}",
        acks.listings.len(),
        acks.plans.len(),
        acks.retired.len(),
        acks.published.len()
    );
    eprintln!(
        "  SIGKILL took {kill_took:.2?}; the restarted mesh served after {restart_took:.2?}; \
         database: {} listings ({published_rows} PUBLISHED), {} plans ({retired_rows} RETIRED), {} audit events",
        listings.len(),
        plans.len(),
        audit_events
    );
    eprintln!("  valora audit verify: {} {}", verify.status, verify_out.trim());
    eprintln!("service_killed_under_load took {:.2?}", started.elapsed());

    assert!(published_before_restart >= 5, "too few publishes before the kill to mean anything: {before_restart}");
    assert!(acks.published.len() > published_before_restart, "nothing was published after the restart");
    assert!(missing_listings.is_empty(), "acknowledged listings missing: {missing_listings:?}");
    assert!(missing_plans.is_empty(), "acknowledged plans missing or changed: {missing_plans:?}");
    assert!(not_retired.is_empty(), "acknowledged rotations whose old plan is not RETIRED: {not_retired:?}");
    assert!(not_published.is_empty(), "acknowledged publishes whose listing is not PUBLISHED: {not_published:?}");
    for (invariant, rows) in &breaking {
        assert!(rows.is_empty(), "broken invariant, {invariant}: {rows:?}");
    }
    assert!(unexpected.is_empty(), "statuses other than UNAVAILABLE from the server, or hung calls: {unexpected:?}");
    assert!(verify.status.success(), "valora audit verify marketplace failed: {verify_out}");
}

// ---------------------------------------------------------------------------
// SIGTERM while unary calls and streams run

/// How a watcher's stream went.
#[derive(Debug)]
struct Watched {
    events_before_signal: usize,
    events: usize,
    end: Result<(), Failure>,
    ended: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_streams() {
    const STREAMS: usize = 4;
    const CALLERS: usize = 3;
    const DELAY: Duration = Duration::from_secs(2);
    const DRAIN: Duration = Duration::from_secs(5);
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let options = MeshOptions {
        env: vec![
            ("VALORA_SHUTDOWN_DELAY_SECONDS".into(), DELAY.as_secs().to_string()),
            ("VALORA_DRAIN_SECONDS".into(), DRAIN.as_secs().to_string()),
        ],
        ..Default::default()
    };
    let mut mesh = DevMesh::start(options).await;
    let signalled: Arc<Mutex<Option<Instant>>> = Arc::default();

    let mut watchers = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..STREAMS {
        let mut client = mesh.client(KEY).await;
        let mut stream = client
            .watch_listing_events(WatchListingEventsRequest::default())
            .await
            .expect("WatchListingEvents")
            .into_inner();
        let signalled = signalled.clone();
        let counter = Arc::new(AtomicUsize::new(0));
        seen.push(counter.clone());
        watchers.push(tokio::spawn(async move {
            let (mut events, mut before) = (0, 0);
            let end = loop {
                match tokio::time::timeout(HANG, stream.message()).await {
                    Ok(Ok(Some(_))) => {
                        events += 1;
                        counter.fetch_add(1, Ordering::SeqCst);
                        if signalled.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
                            before += 1;
                        }
                    }
                    Ok(Ok(None)) => break Ok(()),
                    Ok(Err(status)) => {
                        break Err(Failure::Status {
                            code: status.code(),
                            message: status.message().to_owned(),
                            transport: std::error::Error::source(&status).is_some(),
                        });
                    }
                    Err(_) => break Err(Failure::Hung),
                }
            };
            drop(client);
            Watched { events_before_signal: before, events, end, ended: Instant::now() }
        }));
    }

    // Unary callers: CreateListing (which the watchers see) and
    // ListListings in turn, until the server stops accepting calls.
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let mut client = mesh.client(KEY).await;
        callers.push(tokio::spawn(async move {
            let mut ok: Vec<Instant> = Vec::new();
            let mut failed: Vec<(&'static str, Failure)> = Vec::new();
            let began = Instant::now();
            let mut n = 0;
            let rejected = loop {
                n += 1;
                let (method, result) = if n % 2 == 0 {
                    ("ListListings", guarded(client.list_listings(ListListingsRequest::default())).await.map(|_| ()))
                } else {
                    let title = format!("sigterm-{caller}-{n}");
                    ("CreateListing", guarded(client.create_listing(listing_request(&title))).await.map(|_| ()))
                };
                match result {
                    Ok(()) => ok.push(Instant::now()),
                    // A call that failed in transport never reached the
                    // server, which means the listener is closed.
                    Err(Failure::Status { transport: true, .. }) => break Some(Instant::now()),
                    Err(failure) => failed.push((method, failure)),
                }
                if began.elapsed() > Duration::from_secs(20) {
                    break None;
                }
            };
            (ok, failed, rejected)
        }));
    }

    // Waits until every watcher has received events, before the signal.
    let waiting = Instant::now();
    while seen.iter().any(|count| count.load(Ordering::SeqCst) < 3) && waiting.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signal = Instant::now();
    *signalled.lock().unwrap_or_else(|p| p.into_inner()) = Some(signal);
    mesh.signal_term();

    let mut not_serving = None;
    while signal.elapsed() < DELAY {
        if mesh.edge_health("").await == Some(2) {
            not_serving = Some(signal.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, mesh) = tokio::task::spawn_blocking(move || {
        let status = mesh.wait_exit(Duration::from_secs(20));
        (status, mesh)
    })
    .await
    .expect("wait for the exit");
    let exited_after = signal.elapsed();

    let mut watched = Vec::new();
    for watcher in watchers {
        watched.push(watcher.await.expect("watcher task"));
    }
    let (mut ok_total, mut ok_after_signal, mut failed, mut rejections) = (0, 0, Vec::new(), Vec::new());
    for caller in callers {
        let (ok, failures, rejected) = caller.await.expect("caller task");
        ok_total += ok.len();
        ok_after_signal += ok.iter().filter(|at| **at > signal).count();
        failed.extend(failures);
        rejections.push(rejected);
    }
    let first_rejection = rejections.iter().flatten().min().map(|at| at.saturating_duration_since(signal));

    eprintln!(
        "sigterm_under_load_finishes_streams: NOT_SERVING {not_serving:?} after SIGTERM; \
         first rejected call {first_rejection:?} after it; exit {status:?} {exited_after:.2?} after it (bound: delay {DELAY:?} + drain {DRAIN:?})"
    );
    eprintln!("  unary calls: {ok_total} OK ({ok_after_signal} after SIGTERM), accepted calls that failed: {failed:?}");
    for (n, w) in watched.iter().enumerate() {
        eprintln!(
            "  stream {n}: {} events ({} before SIGTERM), ended {:.2?} after SIGTERM with {:?}",
            w.events,
            w.events_before_signal,
            w.ended.saturating_duration_since(signal),
            w.end
        );
    }
    eprintln!("sigterm_under_load_finishes_streams took {:.2?}", started.elapsed());

    let not_serving = not_serving.expect("health never turned NOT_SERVING during the shutdown delay");
    assert!(rejections.iter().all(Option::is_some), "a caller's calls were never rejected, so the listener stayed open");
    let first_rejection = first_rejection.expect("no call was rejected");
    assert!(
        not_serving < first_rejection,
        "health turned NOT_SERVING ({not_serving:?}) after calls were rejected ({first_rejection:?})"
    );
    assert!(ok_after_signal > 0, "no call succeeded between SIGTERM and the listener closing");
    assert!(failed.is_empty(), "accepted unary calls failed: {failed:?}");
    for (n, w) in watched.iter().enumerate() {
        assert!(w.events_before_signal > 0, "stream {n} saw no event before SIGTERM");
        match &w.end {
            Err(Failure::Status { code, message, transport }) => {
                assert_eq!(*code, Code::Unavailable, "stream {n} ended with {code:?}: {message}");
                assert!(!transport, "stream {n} ended with a transport error: {message}");
                assert!(message.contains("shutting down"), "stream {n} ended without saying why: {message}");
            }
            other => panic!("stream {n} ended with {other:?} instead of UNAVAILABLE"),
        }
    }
    let status = status.expect("the process did not exit within 20 s of SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", mesh.logs());
    assert!(exited_after <= DELAY + DRAIN + Duration::from_secs(1), "the process exited {exited_after:?} after SIGTERM");
}

// ---------------------------------------------------------------------------
// A slow, stalled or cut network between the edge and the marketplace

/// A gRPC client on one HTTP/2 connection, written against hyper so that
/// only the edge enforces `grpc-timeout` (tonic would enforce it in the
/// client too, and end the call with CANCELLED itself).
#[derive(Clone)]
struct RawGrpc {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: String,
}

/// How one raw call ended.
#[derive(Clone, Copy, Debug)]
struct Answer {
    /// The grpc-status, or `None` when no status arrived within the
    /// deadline plus [`HANG`].
    code: Option<Code>,
    took: Duration,
}

impl RawGrpc {
    async fn connect(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to the edge");
        let _ = tcp.set_nodelay(true);
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tcp))
            .await
            .expect("HTTP/2 handshake with the edge");
        tokio::spawn(connection);
        Self { send, authority: addr.to_string() }
    }

    /// Calls ListListings with `grpc-timeout` set to `deadline` (no header
    /// when `None`).
    async fn list(&self, deadline: Option<Duration>) -> Answer {
        let began = Instant::now();
        let limit = deadline.unwrap_or_default() + HANG;
        let code = tokio::time::timeout(limit, self.call(deadline)).await.ok().flatten();
        Answer { code, took: began.elapsed() }
    }

    async fn call(&self, deadline: Option<Duration>) -> Option<Code> {
        let message = ListListingsRequest { page_size: 1, ..Default::default() }.encode_to_vec();
        let mut frame = Vec::with_capacity(5 + message.len());
        frame.push(0);
        frame.extend_from_slice(&u32::try_from(message.len()).expect("small message").to_be_bytes());
        frame.extend_from_slice(&message);
        let mut request = http::Request::post(format!(
            "http://{}/valora.marketplace.v1.MarketplaceService/ListListings",
            self.authority
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", KEY);
        if let Some(deadline) = deadline {
            request = request.header("grpc-timeout", format!("{}m", deadline.as_millis()));
        }
        let request = request.body(Full::new(Bytes::from(frame))).expect("request");
        let mut send = self.send.clone();
        send.ready().await.ok()?;
        let response = send.send_request(request).await.ok()?;
        if let Some(status) = response.headers().get("grpc-status") {
            return Some(Code::from_bytes(status.as_bytes()));
        }
        let collected = response.into_body().collect().await.ok()?;
        let trailers = collected.trailers()?;
        Some(Code::from_bytes(trailers.get("grpc-status")?.as_bytes()))
    }

    /// Sends `calls` calls with `deadline`, `concurrency` at a time.
    async fn burst(&self, calls: usize, concurrency: usize, deadline: Duration) -> Vec<Answer> {
        let mut tasks = Vec::new();
        for task in 0..concurrency {
            let per_task = calls / concurrency + usize::from(task < calls % concurrency);
            let client = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    answers.push(client.list(Some(deadline)).await);
                }
                answers
            }));
        }
        let mut answers = Vec::new();
        for task in tasks {
            answers.extend(task.await.expect("burst task"));
        }
        answers
    }
}

fn code_counts(answers: &[Answer]) -> BTreeMap<String, usize> {
    histogram(answers.iter().map(|a| a.code.map_or_else(|| "no answer".to_owned(), |c| format!("{c:?}"))))
}

/// Returns the time within which `percent` of `answers` arrived.
fn percentile(answers: &[Answer], percent: usize) -> Duration {
    let mut took: Vec<Duration> = answers.iter().map(|a| a.took).collect();
    took.sort();
    took.get((took.len() * percent / 100).min(took.len().saturating_sub(1))).copied().unwrap_or_default()
}

fn max_took(answers: &[Answer]) -> Duration {
    answers.iter().map(|a| a.took).max().unwrap_or_default()
}

/// Open file descriptors, resident memory in KiB, and established TCP
/// connections to `port` of process `pid`.
#[derive(Clone, Copy, Debug)]
struct Usage {
    fds: usize,
    rss_kib: u64,
    connections: usize,
}

/// Reads the usage of process `pid` from /proc.
fn usage(pid: u32, port: u16) -> Usage {
    let fd_dir = format!("/proc/{pid}/fd");
    let links: Vec<String> = std::fs::read_dir(&fd_dir)
        .expect("read /proc/PID/fd")
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.display().to_string())
        .collect();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    // /proc/net/tcp: local and remote address as hex IP:PORT, state 01 is
    // ESTABLISHED, the tenth field is the socket's inode.
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let inodes: HashSet<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = u16::from_str_radix(fields.get(2)?.rsplit(':').next()?, 16).ok()?;
            let inode = fields.get(9)?;
            (remote_port == port && *fields.get(3)? == "01").then(|| format!("socket:[{inode}]"))
        })
        .collect();
    let connections = links.iter().filter(|link| inodes.contains(*link)).count();
    Usage { fds: links.len(), rss_kib, connections }
}

/// Repeats a call until it succeeds and returns how long that took, or
/// `None` after `limit`.
async fn until_ok(client: &RawGrpc, limit: Duration) -> Option<Duration> {
    let began = Instant::now();
    while began.elapsed() < limit {
        if client.list(Some(Duration::from_secs(2))).await.code == Some(Code::Ok) {
            return Some(began.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The key that seals webhook secrets. The marketplace does not start
/// without one, and no webhook is registered here.
const WEBHOOK_KEY: &str = "5e1f0c3a9b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f0a1c3e5b7d9f1a3c5e7b9d0f";

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_cut_network_between_services() {
    /// Time allowed past a deadline for the edge to respond and for the
    /// response to arrive, on a loaded debug build.
    const MARGIN: Duration = Duration::from_millis(150);
    /// Deadline of the calls cancelled in bulk.
    const CANCEL_DEADLINE: Duration = Duration::from_millis(20);
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temporary folder");
    let certs = dir.path().join("certs").display().to_string();
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("marketplace.db").display());
    let (certified, migrated) = tokio::task::block_in_place(|| {
        (
            run_valora(&["certs", "dev", "--certs-dir", &certs], &[], dir.path()),
            run_valora(&["migrate", "marketplace", "--database-url", &database], &[], dir.path()),
        )
    });
    assert!(certified.status.success(), "valora certs dev: {}", String::from_utf8_lossy(&certified.stderr));
    assert!(migrated.status.success(), "valora migrate marketplace: {}", String::from_utf8_lossy(&migrated.stderr));

    // Nothing listens on the auth address: the edge checks the static key
    // itself, and the marketplace never needs the auth service here.
    let (marketplace_addr, auth_addr, edge_addr) = (addr(), addr(), addr());
    let mut marketplace = Served::start(
        dir.path(),
        "marketplace",
        &strings(&[
            "serve", "marketplace", "--certs-dir", &certs,
            "--marketplace-addr", &marketplace_addr.to_string(),
            "--auth-addr", &auth_addr.to_string(),
            "--admin-addr", &addr().to_string(),
            "--drain-seconds", "1",
        ]),
        &[
            ("MARKETPLACE_API_KEY", KEY),
            ("MARKETPLACE_DATABASE_URL", &database),
            ("MARKETPLACE_WEBHOOK_KEY", WEBHOOK_KEY),
        ],
    );
    let proxy = FaultProxy::start(marketplace_addr).await;
    let mut edge = Served::start(
        dir.path(),
        "edge",
        &strings(&[
            "serve", "edge", "--certs-dir", &certs,
            "--edge-addr", &edge_addr.to_string(),
            "--marketplace-addr", &proxy.addr.to_string(),
            "--auth-addr", &auth_addr.to_string(),
            "--admin-addr", &addr().to_string(),
            "--drain-seconds", "1",
        ]),
        &[
            ("MARKETPLACE_API_KEY", KEY),
            ("VALORA_RATE_LIMIT_PER_KEY", "off"),
            ("VALORA_RATE_LIMIT_PER_USER", "off"),
            ("VALORA_RATE_LIMIT_FAILURES_PER_ADDRESS", "off"),
            ("VALORA_RATE_LIMIT_METHODS", "off"),
        ],
    );
    let waiting = Instant::now();
    while tokio::net::TcpStream::connect(edge_addr).await.is_err() {
        assert!(!edge.exited(), "valora serve edge exited:\n{}", edge.logs());
        assert!(!marketplace.exited(), "valora serve marketplace exited:\n{}", marketplace.logs());
        assert!(waiting.elapsed() < Duration::from_secs(60), "the edge did not listen in 60 s:\n{}", edge.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = RawGrpc::connect(edge_addr).await;
    let first_ok = until_ok(&client, Duration::from_secs(60)).await;
    assert!(
        first_ok.is_some(),
        "no call succeeded through the proxy:\nedge:\n{}\nmarketplace:\n{}",
        edge.logs(),
        marketplace.logs()
    );
    let pid = edge.pid();
    let port = proxy.addr.port();
    let warm = client.burst(400, 16, Duration::from_secs(5)).await;
    assert!(warm.iter().all(|a| a.code == Some(Code::Ok)), "warm-up calls failed: {:?}", code_counts(&warm));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = usage(pid, port);
    let accepted_before = proxy.accepted();
    eprintln!(
        "slow_and_cut_network_between_services: ready {:.2?} after start; baseline {baseline:?}; \
         proxy accepted {accepted_before}",
        started.elapsed()
    );

    // Latency: 250 ms each way. A deadline below it ends with
    // DEADLINE_EXCEEDED at the deadline, and one above it succeeds late.
    let latency = Duration::from_millis(250);
    let short = Duration::from_millis(100);
    proxy.set(Fault::Latency(latency));
    let mut slow = Vec::new();
    for _ in 0..5 {
        slow.push(client.list(Some(short)).await);
    }
    let patient = client.list(Some(Duration::from_secs(3))).await;
    proxy.set(Fault::None);
    eprintln!(
        "  latency {latency:?} each way: {short:?} deadline gave {:?}, slowest answer {:.2?}; 3 s deadline: {:?} in {:.2?}",
        code_counts(&slow),
        max_took(&slow),
        patient.code,
        patient.took
    );

    // Stall: calls end with DEADLINE_EXCEEDED at their deadline.
    let stall_deadline = Duration::from_millis(300);
    proxy.set(Fault::Stall);
    let mut stalled = Vec::new();
    for _ in 0..5 {
        stalled.push(client.list(Some(stall_deadline)).await);
    }
    eprintln!(
        "  stall: {stall_deadline:?} deadline gave {:?}, slowest answer {:.2?}",
        code_counts(&stalled),
        max_took(&stalled)
    );

    // Thousands of calls cancelled at a short deadline against the stalled
    // upstream, in rounds. After each round forwarding resumes and the edge
    // settles. In runs of this test resident memory grew over the first
    // rounds and then levelled off, which fits an allocator keeping freed
    // memory, so the leak check compares the last two rounds.
    const ROUNDS: usize = 5;
    const ROUND: usize = 2500;
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        proxy.set(Fault::Stall);
        let began = Instant::now();
        let answers = client.burst(ROUND, 32, CANCEL_DEADLINE).await;
        let took = began.elapsed();
        let during = usage(pid, port);
        proxy.set(Fault::None);
        let resumed = until_ok(&client, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let settled = usage(pid, port);
        eprintln!(
            "  round {round}: {ROUND} calls with a {CANCEL_DEADLINE:?} deadline in {took:.2?}: {:?}, answered within \
             {:.2?} (median) {:.2?} (99th percentile) {:.2?} (slowest); at the end of the stall {during:?}; \
             first success {resumed:?} after forwarding resumed; 1 s later {settled:?}; \
             proxy accepted {} connections, {} open",
            code_counts(&answers),
            percentile(&answers, 50),
            percentile(&answers, 99),
            max_took(&answers),
            proxy.accepted(),
            proxy.open()
        );
        rounds.push((answers, during, resumed, settled));
    }
    let accepted_cancelled = proxy.accepted() - accepted_before;

    // Cut: calls get UNAVAILABLE, and when forwarding resumes the edge
    // reconnects by itself.
    let accepted_before_cut = proxy.accepted();
    proxy.set(Fault::Cut);
    let mut cut = Vec::new();
    for _ in 0..5 {
        cut.push(client.list(Some(Duration::from_secs(2))).await);
    }
    let cut_connections = usage(pid, port).connections;
    proxy.set(Fault::None);
    let reconnected = until_ok(&client, Duration::from_secs(30)).await;
    eprintln!(
        "  cut: {:?}, slowest {:.2?}; edge connections to the proxy while cut: {cut_connections}; \
         first success {reconnected:?} after forwarding resumed; proxy accepted {} connections during the cut",
        code_counts(&cut),
        max_took(&cut),
        proxy.accepted() - accepted_before_cut
    );
    eprintln!("slow_and_cut_network_between_services took {:.2?}", started.elapsed());
    let edge_log = edge.logs();
    let unreachable: Vec<&str> =
        edge_log.lines().filter(|line| line.contains("internal service unreachable")).take(2).collect();
    eprintln!("  the edge's first log lines about an unreachable upstream: {unreachable:#?}");
    let resets = marketplace.logs().lines().filter(|line| line.contains("pending-accept streams reached limit")).count();
    eprintln!(
        "  the marketplace's HTTP/2 server logged {resets} times that a client reset too many streams before they were accepted"
    );

    // Checks come last, so that a failing run still prints every figure,
    // and the status codes last of all, so that the other checks run even
    // while the edge returns the wrong code.
    assert!(max_took(&slow) <= short + MARGIN, "a call under latency ended {:?} after a {short:?} deadline", max_took(&slow));
    assert_eq!(patient.code, Some(Code::Ok), "a call with a deadline above the latency failed");
    assert!(patient.took >= 2 * latency, "the proxy added no latency: {:?}", patient.took);
    assert!(
        max_took(&stalled) <= stall_deadline + MARGIN,
        "a stalled call ended {:?} after a {stall_deadline:?} deadline",
        max_took(&stalled)
    );
    for (round, (answers, during, resumed, settled)) in rounds.iter().enumerate() {
        assert!(
            max_took(answers) <= CANCEL_DEADLINE + Duration::from_secs(1),
            "round {round}: a call with a {CANCEL_DEADLINE:?} deadline ended after {:?}",
            max_took(answers)
        );
        assert!(resumed.is_some(), "round {round}: no success within 30 s of forwarding again");
        let (fds, connections) = (during.fds, during.connections);
        assert!(fds <= baseline.fds + 8, "round {round}: {fds} file descriptors during the stall (baseline {})", baseline.fds);
        assert!(connections <= 2, "round {round}: {connections} edge connections to the proxy during the stall");
        let (fds, connections) = (settled.fds, settled.connections);
        assert!(fds <= baseline.fds + 4, "round {round}: {fds} file descriptors after it (baseline {})", baseline.fds);
        assert!(connections <= 2, "round {round}: {connections} edge connections to the proxy after it");
    }
    let last = rounds[ROUNDS - 1].3;
    let before_last_two = rounds[ROUNDS - 3].3;
    assert!(
        last.rss_kib <= baseline.rss_kib + 16 * 1024,
        "resident memory grew from {} KiB to {} KiB",
        baseline.rss_kib,
        last.rss_kib
    );
    assert!(
        last.rss_kib <= before_last_two.rss_kib + 3 * 1024,
        "resident memory grew by {} KiB over the last two rounds",
        last.rss_kib.saturating_sub(before_last_two.rss_kib)
    );
    // The marketplace's HTTP/2 server closed the connection once per round
    // in runs of this test, when the backlog of reset streams arrived.
    assert!(
        accepted_cancelled <= ROUNDS + 2,
        "the proxy accepted {accepted_cancelled} connections during {} cancelled calls",
        ROUNDS * ROUND
    );
    assert!(max_took(&cut) < Duration::from_secs(2), "UNAVAILABLE took {:?} while cut", max_took(&cut));
    let reconnected = reconnected.expect("the edge did not reconnect within 30 s");
    assert!(reconnected <= Duration::from_secs(5), "the edge reconnected only after {reconnected:?}");
    assert!(cut.iter().all(|a| a.code == Some(Code::Unavailable)), "while cut: {:?}", code_counts(&cut));
    assert!(slow.iter().all(|a| a.code == Some(Code::DeadlineExceeded)), "under latency: {:?}", code_counts(&slow));
    assert!(stalled.iter().all(|a| a.code == Some(Code::DeadlineExceeded)), "under a stall: {:?}", code_counts(&stalled));
    for (round, (answers, _, _, _)) in rounds.iter().enumerate() {
        assert!(
            answers.iter().all(|a| a.code == Some(Code::DeadlineExceeded)),
            "round {round}: calls against a stalled upstream: {:?}",
            code_counts(answers)
        );
    }
    assert!(!edge.exited(), "the edge exited:\n{}", edge.logs());
}

// ---------------------------------------------------------------------------
// The proxy itself

/// Writes four bytes and waits up to 600 ms for four bytes back. Returns
/// what was read and how long it took.
async fn round_trip(socket: &mut tokio::net::TcpStream, buffer: &mut [u8; 4]) -> (Option<usize>, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let began = Instant::now();
    socket.write_all(b"ping").await.expect("write");
    let read = tokio::time::timeout(Duration::from_millis(600), socket.read_exact(buffer)).await;
    (read.ok().and_then(Result::ok), began.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_delays_stalls_and_cuts() {
    use tokio::io::AsyncReadExt;
    let echo = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind the echo server");
    let target = echo.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let proxy = FaultProxy::start(target).await;
    let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.expect("connect to the proxy");
    let mut buffer = [0_u8; 4];

    let (read, plain) = round_trip(&mut socket, &mut buffer).await;
    assert_eq!(read, Some(4), "no echo through the proxy");
    proxy.set(Fault::Latency(Duration::from_millis(100)));
    let (read, slow) = round_trip(&mut socket, &mut buffer).await;
    assert_eq!(read, Some(4), "no echo under latency");
    assert!(slow >= Duration::from_millis(200), "a round trip under 100 ms latency each way took {slow:?}");

    proxy.set(Fault::Stall);
    let (read, _) = round_trip(&mut socket, &mut buffer).await;
    assert_eq!(read, None, "bytes went through a stall");
    proxy.set(Fault::None);
    let released = tokio::time::timeout(Duration::from_secs(2), socket.read_exact(&mut buffer)).await;
    assert!(matches!(released, Ok(Ok(4))), "held bytes did not arrive after the stall: {released:?}");

    proxy.set(Fault::Cut);
    let closed = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buffer)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "an open connection survived a cut: {closed:?}");
    let mut fresh = tokio::net::TcpStream::connect(proxy.addr).await.expect("connect during a cut");
    let fresh_read = tokio::time::timeout(Duration::from_secs(2), fresh.read(&mut buffer)).await;
    assert!(matches!(fresh_read, Ok(Ok(0) | Err(_))), "a new connection stayed open during a cut: {fresh_read:?}");
    let waiting = Instant::now();
    while proxy.open() > 0 && waiting.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.open(), 0, "connections open after a cut");
    eprintln!(
        "proxy: round trip {plain:.2?} plain, {slow:.2?} with 100 ms each way; {} connections accepted",
        proxy.accepted()
    );
}
