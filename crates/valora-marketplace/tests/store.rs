//! The marketplace's domain and persistence against real databases: SQLite
//! always, PostgreSQL when reachable (and always in CI).

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, Database};
use valora_marketplace::domain::{
    BillingInterval, ListingChanges, ListingFilter, ListingStatus, MarketplaceError, Money,
    NewListing, NewPlan, PlanStatus, Successor,
};
use valora_marketplace::events::EventHub;
use valora_marketplace::{Marketplace, PoolOptions, Store};
use valora_mesh::Principal;
use valora_mesh::principal::{SCOPE_MARKETPLACE_READ, SCOPE_MARKETPLACE_WRITE, UserPrincipal};
use valora_migrations::MigratorTrait;
use valora_migrations::marketplace::MarketplaceMigrator;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A migrated database: SQLite in a temporary folder, or a fresh
/// PostgreSQL database.
struct TestDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    cleanup: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.cleanup.take() {
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                runtime.block_on(async {
                    let db = Database::connect(&admin).await.ok()?;
                    db.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()
                })
            })
            .join();
        }
    }
}

async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    TestDb { url, _dir: Some(dir), cleanup: None }
}

async fn postgres() -> Option<TestDb> {
    let admin = std::env::var("VALORA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let db = match Database::connect(&admin).await {
        Ok(db) => db,
        Err(error) => {
            assert!(!in_ci(), "PostgreSQL at {admin} is required in CI: {error}");
            eprintln!("skipping the PostgreSQL run: {error}");
            return None;
        }
    };
    let name = format!("valora_store_{}", uuid::Uuid::new_v4().simple());
    db.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    Some(TestDb { url: format!("{base}/{name}"), _dir: None, cleanup: Some((admin, name)) })
}

async fn marketplace(db: &TestDb) -> Marketplace {
    let conn = Database::connect(&db.url).await.unwrap();
    MarketplaceMigrator::up(&conn, None).await.unwrap();
    let store = Store::connect(&db.url, &PoolOptions::default()).await.unwrap();
    Marketplace::new(store, EventHub::default())
}

fn key(id: &str) -> Principal {
    Principal {
        key_id: id.into(),
        key_owner: None,
        scopes: vec![SCOPE_MARKETPLACE_READ.into(), SCOPE_MARKETPLACE_WRITE.into()],
        user: None,
    }
}

fn user(id: &str, role: &str) -> Principal {
    Principal {
        key_id: "app".into(),
        key_owner: None,
        scopes: vec![SCOPE_MARKETPLACE_READ.into()],
        user: Some(UserPrincipal { id: id.into(), role: role.into() }),
    }
}

fn eur(amount_minor: i64) -> Money {
    Money { currency_code: "EUR".into(), amount_minor }
}

fn new_listing(title: &str, category: &str) -> NewListing {
    NewListing { title: title.into(), description: format!("About {title}"), category: category.into(), price: eur(100) }
}

fn new_plan() -> NewPlan {
    NewPlan { name: "Monthly".into(), price: eur(500), interval: BillingInterval::Month }
}

/// Runs `check` on SQLite and, when reachable, on PostgreSQL.
macro_rules! on_both {
    ($name:ident, $check:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let db = super::sqlite().await;
                super::$check(super::marketplace(&db).await).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(db) = super::postgres().await else { return };
                super::$check(super::marketplace(&db).await).await;
            }
        }
    };
}

on_both!(pagination_visits_every_row_once, pagination_check);
on_both!(filters_and_visibility, filters_check);
on_both!(updates_need_the_current_version, versions_check);
on_both!(publish_rules, publish_check);
on_both!(rotation_is_atomic_and_contiguous, rotation_check);
on_both!(concurrent_publish_has_one_winner, concurrent_publish_check);
on_both!(concurrent_rotation_keeps_one_active_plan, concurrent_rotation_check);
on_both!(concurrent_updates_have_one_winner, concurrent_update_check);
on_both!(mixed_concurrent_writes_keep_invariants, mixed_writes_check);

async fn pagination_check(m: Marketplace) {
    let seller = key("s1");
    let mut created = Vec::new();
    for n in 0..23 {
        created.push(m.create_listing(&seller, new_listing(&format!("L{n}"), "books")).await.unwrap().id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = m.list_listings(&seller, &ListingFilter::default(), 5, &token).await.unwrap();
        assert!(page.items.len() <= 5);
        seen.extend(page.items.into_iter().map(|l| l.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, created, "pages skipped, repeated or reordered rows");

    // A token is bound to its filters.
    let first = m.list_listings(&seller, &ListingFilter::default(), 5, "").await.unwrap();
    let other = ListingFilter { category: Some("books".into()), ..Default::default() };
    let error = m.list_listings(&seller, &other, 5, &first.next_page_token).await.unwrap_err();
    assert!(matches!(error, MarketplaceError::Invalid(_)), "{error:?}");
}

async fn filters_check(m: Marketplace) {
    let alice = key("alice");
    let bob = key("bob");
    let draft = m.create_listing(&alice, new_listing("Blue Guitar 100%", "music")).await.unwrap();
    let public = m.create_listing(&alice, new_listing("Red piano", "music")).await.unwrap();
    m.create_plan(&alice, &public.id, new_plan()).await.unwrap();
    m.publish_listing(&alice, &public.id).await.unwrap();
    m.create_listing(&bob, new_listing("Green drum", "music")).await.unwrap();

    let ids = |items: Vec<valora_marketplace::domain::Listing>| -> HashSet<String> {
        items.into_iter().map(|l| l.id).collect()
    };
    let all = ListingFilter::default();
    // Bob sees the published listing and his own draft, not Alice's draft.
    let bob_view = ids(m.list_listings(&bob, &all, 50, "").await.unwrap().items);
    assert!(bob_view.contains(&public.id));
    assert!(!bob_view.contains(&draft.id));
    assert_eq!(bob_view.len(), 2);
    // A draft of someone else reads as missing, exactly like a missing one.
    let hidden = m.get_listing(&bob, &draft.id).await.unwrap_err();
    assert!(matches!(hidden, MarketplaceError::NotFound(_)), "{hidden:?}");
    // Admins see everything.
    let admin = user("root", "ADMIN");
    assert_eq!(m.list_listings(&admin, &all, 50, "").await.unwrap().items.len(), 3);

    let by_query = |q: &str| ListingFilter { query: Some(q.into()), ..Default::default() };
    assert_eq!(ids(m.list_listings(&alice, &by_query("GUITAR"), 50, "").await.unwrap().items), HashSet::from([draft.id.clone()]));
    // LIKE wildcards in the query are literal.
    assert_eq!(ids(m.list_listings(&alice, &by_query("100%"), 50, "").await.unwrap().items), HashSet::from([draft.id.clone()]));
    assert!(m.list_listings(&alice, &by_query("_"), 50, "").await.unwrap().items.is_empty());
    let published = ListingFilter { status: Some(ListingStatus::Published), ..Default::default() };
    assert_eq!(ids(m.list_listings(&alice, &published, 50, "").await.unwrap().items), HashSet::from([public.id.clone()]));
    let by_seller = ListingFilter { seller_id: Some(alice.actor_id()), ..Default::default() };
    assert_eq!(m.list_listings(&alice, &by_seller, 50, "").await.unwrap().items.len(), 2);
}

async fn versions_check(m: Marketplace) {
    let seller = key("s");
    let listing = m.create_listing(&seller, new_listing("Lamp", "home")).await.unwrap();
    let changes = || ListingChanges { title: Some("Desk lamp".into()), ..Default::default() };
    let updated = m.update_listing(&seller, &listing.id, 1, changes()).await.unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.title, "Desk lamp");
    assert_eq!(updated.description, listing.description);
    let stale = m.update_listing(&seller, &listing.id, 1, changes()).await.unwrap_err();
    assert!(matches!(stale, MarketplaceError::Aborted(_)), "{stale:?}");
    let other = m.update_listing(&key("intruder"), &listing.id, 2, changes()).await.unwrap_err();
    assert!(matches!(other, MarketplaceError::NotFound(_)), "a draft leaked: {other:?}");
}

async fn publish_check(m: Marketplace) {
    let seller = key("s");
    let listing = m.create_listing(&seller, new_listing("Chair", "home")).await.unwrap();
    let no_plan = m.publish_listing(&seller, &listing.id).await.unwrap_err();
    assert!(matches!(no_plan, MarketplaceError::FailedPrecondition(_)), "{no_plan:?}");
    m.create_plan(&seller, &listing.id, new_plan()).await.unwrap();
    let second_plan = m.create_plan(&seller, &listing.id, new_plan()).await.unwrap_err();
    assert!(matches!(second_plan, MarketplaceError::FailedPrecondition(_)), "{second_plan:?}");
    let published = m.publish_listing(&seller, &listing.id).await.unwrap();
    assert_eq!(published.status, ListingStatus::Published);
    assert!(published.publish_time.is_some());
    let again = m.publish_listing(&seller, &listing.id).await.unwrap_err();
    assert!(matches!(again, MarketplaceError::FailedPrecondition(_)), "{again:?}");
    // Now visible, but still not changeable by others.
    let denied = m.archive_listing(&key("other"), &listing.id).await.unwrap_err();
    assert!(matches!(denied, MarketplaceError::PermissionDenied(_)), "{denied:?}");
    let archived = m.archive_listing(&seller, &listing.id).await.unwrap();
    assert_eq!(archived.status, ListingStatus::Archived);
    assert_audit_chain(&m, 2).await;
}

async fn rotation_check(m: Marketplace) {
    let seller = key("s");
    let listing = m.create_listing(&seller, new_listing("Course", "education")).await.unwrap();
    let mut current = m.create_plan(&seller, &listing.id, new_plan()).await.unwrap();
    for n in 0..3 {
        let successor = Successor { price: eur(600 + n), name: None, interval: Some(BillingInterval::Year) };
        let (retired, new) = m.rotate_plan(&seller, &current.id, successor).await.unwrap();
        assert_eq!(retired.id, current.id);
        assert_eq!(retired.status, PlanStatus::Retired);
        assert!(retired.retire_time.is_some());
        assert_eq!(new.status, PlanStatus::Active);
        assert_eq!(new.revision, current.revision + 1);
        assert_eq!(new.replaces_plan_id.as_deref(), Some(current.id.as_str()));
        assert_eq!(new.name, "Monthly");
        assert_eq!(new.interval, BillingInterval::Year);
        current = new;
    }
    let retired_again = m
        .rotate_plan(&seller, &listing.id, Successor { price: eur(1), name: None, interval: None })
        .await
        .unwrap_err();
    assert!(matches!(retired_again, MarketplaceError::NotFound(_)), "{retired_again:?}");
    let plans = m.list_plans(&seller, &listing.id, 2, "").await.unwrap();
    assert_eq!(plans.items.iter().map(|p| p.revision).collect::<Vec<_>>(), [1, 2]);
    let rest = m.list_plans(&seller, &listing.id, 2, &plans.next_page_token).await.unwrap();
    assert_eq!(rest.items.iter().map(|p| p.revision).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(rest.items.iter().filter(|p| p.status == PlanStatus::Active).count(), 1);
}

async fn concurrent_publish_check(m: Marketplace) {
    let seller = key("s");
    let listing = m.create_listing(&seller, new_listing("Hot item", "toys")).await.unwrap();
    m.create_plan(&seller, &listing.id, new_plan()).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (m, seller, id) = (m.clone(), seller.clone(), listing.id.clone());
            tokio::spawn(async move { m.publish_listing(&seller, &id).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => winners += 1,
            Err(MarketplaceError::FailedPrecondition(_) | MarketplaceError::Aborted(_)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners, 1);
    let final_state = m.get_listing(&seller, &listing.id).await.unwrap();
    assert_eq!(final_state.version, 2);
    assert_audit_chain(&m, 1).await;
}

/// The audit trail verifies and holds `rows` events.
async fn assert_audit_chain(m: &Marketplace, rows: i64) {
    let report = valora_audit::verify(m.store().connection(), "marketplace").await.unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.rows, rows);
}

async fn concurrent_rotation_check(m: Marketplace) {
    let seller = key("s");
    let listing = m.create_listing(&seller, new_listing("Plan race", "toys")).await.unwrap();
    let plan = m.create_plan(&seller, &listing.id, new_plan()).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let (m, seller, id) = (m.clone(), seller.clone(), plan.id.clone());
            tokio::spawn(async move {
                m.rotate_plan(&seller, &id, Successor { price: eur(n), name: None, interval: None }).await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => winners += 1,
            Err(MarketplaceError::FailedPrecondition(_) | MarketplaceError::Aborted(_)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners, 1);
    let plans = m.list_plans(&seller, &listing.id, 100, "").await.unwrap().items;
    assert_eq!(plans.len(), 2);
    assert_eq!(plans.iter().filter(|p| p.status == PlanStatus::Active).count(), 1);
    assert_eq!(plans.iter().map(|p| p.revision).collect::<Vec<_>>(), [1, 2]);
    assert_audit_chain(&m, 1).await;
}

async fn concurrent_update_check(m: Marketplace) {
    let seller = key("s");
    let listing = m.create_listing(&seller, new_listing("Contested", "toys")).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let (m, seller, id) = (m.clone(), seller.clone(), listing.id.clone());
            let changes = ListingChanges { title: Some(format!("Title {n}")), ..Default::default() };
            tokio::spawn(async move { m.update_listing(&seller, &id, 1, changes).await })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(updated) => winners.push(updated),
            Err(MarketplaceError::Aborted(_)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "several updates won version 1");
    let stored = m.get_listing(&seller, &listing.id).await.unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.title, winners[0].title, "the stored title is not the winner's");
}

/// Publishes, rotations and updates race on one listing. Each write reads
/// the state it builds on first, as a client would, so several may win in
/// turn, but never two on the same version or the same plan.
async fn mixed_writes_check(m: Marketplace) {
    let seller = key("s");
    let listing = m.create_listing(&seller, new_listing("Busy item", "toys")).await.unwrap();
    m.create_plan(&seller, &listing.id, new_plan()).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let (m, seller, id) = (m.clone(), seller.clone(), listing.id.clone());
            tokio::spawn(async move {
                match n % 3 {
                    0 => m.publish_listing(&seller, &id).await.map(|l| ("publish", l.version)),
                    1 => {
                        let plans = m.list_plans(&seller, &id, 100, "").await?.items;
                        let active = plans.into_iter().find(|p| p.status == PlanStatus::Active).expect("an active plan");
                        let successor = Successor { price: eur(100 + n), name: None, interval: None };
                        m.rotate_plan(&seller, &active.id, successor).await.map(|_| ("rotate", 0))
                    }
                    _ => {
                        let current = m.get_listing(&seller, &id).await?;
                        let changes = ListingChanges { title: Some(format!("Busy item {n}")), ..Default::default() };
                        m.update_listing(&seller, &id, current.version, changes).await.map(|l| ("update", l.version))
                    }
                }
            })
        })
        .collect();
    let mut publishes = 0;
    let mut rotations = 0;
    let mut versions = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok((kind, version)) => {
                if kind == "publish" {
                    publishes += 1;
                }
                if kind == "rotate" {
                    rotations += 1;
                } else {
                    versions.push(version);
                }
            }
            Err(MarketplaceError::FailedPrecondition(_) | MarketplaceError::Aborted(_)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(publishes <= 1, "{publishes} publishes won");
    assert!(rotations >= 1, "no rotation won");
    let distinct: HashSet<i64> = versions.iter().copied().collect();
    assert_eq!(distinct.len(), versions.len(), "two writes won the same version: {versions:?}");
    let stored = m.get_listing(&seller, &listing.id).await.unwrap();
    assert_eq!(Some(stored.version), versions.iter().copied().max().or(Some(1)), "the stored version is not the last winner's");

    let plans = m.list_plans(&seller, &listing.id, 100, "").await.unwrap().items;
    assert_eq!(plans.iter().filter(|p| p.status == PlanStatus::Active).count(), 1, "not exactly one ACTIVE plan");
    let mut revisions: Vec<i64> = plans.iter().map(|p| p.revision).collect();
    revisions.sort_unstable();
    let expected: Vec<i64> = (1..=revisions.len() as i64).collect();
    assert_eq!(revisions, expected, "revisions are not contiguous");
    assert_eq!(plans.len(), rotations + 1, "a plan per won rotation, plus the first");
}
