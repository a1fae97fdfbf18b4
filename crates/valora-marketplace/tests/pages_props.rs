//! Property tests of page tokens and of listing pagination on SQLite.
//!
//! - A token decodes to the position it was made with, under the scope it
//!   was made for, and under no other scope.
//! - Paging through `list_listings` with any page size returns exactly
//!   the listings the caller may see that match the filter, in id order,
//!   each once, in full pages except the last; listings created between
//!   two pages neither push an earlier listing out nor repeat one.
//! - A token of one request is refused by a request with other filters or
//!   another caller.
//!
//! The number of cases follows `PROPTEST_CASES` (default 256 for the token
//! properties, 24 for the database ones, each of which creates and
//! migrates a fresh SQLite database).

use proptest::prelude::*;
use sea_orm::Database;
use valora_marketplace::domain::{
    BillingInterval, Listing, ListingFilter, ListingStatus, MarketplaceError, Money, NewListing, NewPlan,
};
use valora_marketplace::events::EventHub;
use valora_marketplace::{Marketplace, PoolOptions, Store, page};
use valora_mesh::Principal;
use valora_mesh::principal::{SCOPE_MARKETPLACE_READ, SCOPE_MARKETPLACE_WRITE, UserPrincipal};
use valora_migrations::MigratorTrait;
use valora_migrations::marketplace::MarketplaceMigrator;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn tokens_round_trip_under_their_own_scope(
        after in "\\PC{0,40}",
        parts in prop::collection::vec("\\PC{0,8}", 0..6),
    ) {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let scope = page::scope(&refs);
        let token = page::encode(&after, &scope);
        prop_assert!(!token.is_empty());
        prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        prop_assert_eq!(page::decode(&token, &scope).ok().flatten(), Some(after));
    }

    #[test]
    fn tokens_never_decode_under_another_scope(
        after in "\\PC{0,40}",
        a in prop::collection::vec("[ab]{0,3}", 0..5),
        b in prop::collection::vec("[ab]{0,3}", 0..5),
    ) {
        // Short parts over two letters make lists that differ only in
        // where one part ends and the next begins, such as ["ab", ""]
        // and ["a", "b"].
        prop_assume!(a != b);
        let a_refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let b_refs: Vec<&str> = b.iter().map(String::as_str).collect();
        let (scope_a, scope_b) = (page::scope(&a_refs), page::scope(&b_refs));
        prop_assert_ne!(&scope_a, &scope_b);
        let token = page::encode(&after, &scope_a);
        prop_assert!(page::decode(&token, &scope_b).is_err());
    }

    #[test]
    fn arbitrary_text_is_no_token(text in "\\PC{1,80}", parts in prop::collection::vec("\\PC{0,8}", 0..4)) {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        prop_assert!(page::decode(&text, &page::scope(&refs)).is_err());
    }
}

/// Who lists: two sellers, an administrator and a key without an owner.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Seller(usize),
    Admin,
    Key,
}

const SELLERS: [&str; 2] = ["seller-1", "seller-2"];
const CATEGORIES: [&str; 3] = ["cameras", "lenses", "tripods"];
const WORDS: [&str; 4] = ["Vintage", "vintage camera", "Rangefinder", "Zoom lens"];

fn principal(caller: Caller) -> Principal {
    let user = |id: &str, role: &str| Principal {
        key_id: "app".into(),
        key_owner: None,
        scopes: vec![SCOPE_MARKETPLACE_READ.into()],
        user: Some(UserPrincipal { id: id.into(), role: role.into() }),
    };
    match caller {
        Caller::Seller(i) => user(SELLERS[i], "USER"),
        Caller::Admin => user("admin-1", "ADMIN"),
        Caller::Key => Principal {
            key_id: "partner".into(),
            key_owner: None,
            scopes: vec![SCOPE_MARKETPLACE_READ.into(), SCOPE_MARKETPLACE_WRITE.into()],
            user: None,
        },
    }
}

/// One listing to create: its seller, category, title, and what happens
/// to it after creation.
#[derive(Clone, Debug)]
struct Spec {
    seller: usize,
    category: usize,
    title: usize,
    /// 0: stays a draft; 1: published; 2: published then archived.
    fate: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0..SELLERS.len(), 0..CATEGORIES.len(), 0..WORDS.len(), 0u8..3)
        .prop_map(|(seller, category, title, fate)| Spec { seller, category, title, fate })
}

fn caller() -> impl Strategy<Value = Caller> {
    prop_oneof![Just(Caller::Seller(0)), Just(Caller::Seller(1)), Just(Caller::Admin), Just(Caller::Key)]
}

fn filter() -> impl Strategy<Value = ListingFilter> {
    (
        prop::option::of(prop_oneof![
            Just(ListingStatus::Draft),
            Just(ListingStatus::Published),
            Just(ListingStatus::Archived)
        ]),
        prop::option::weighted(0.3, 0..SELLERS.len()),
        prop::option::weighted(0.4, 0..CATEGORIES.len()),
        prop::option::weighted(0.3, prop_oneof![Just("vintage"), Just("LENS"), Just("about"), Just("%")]),
    )
        .prop_map(|(status, seller, category, query)| ListingFilter {
            status,
            seller_id: seller.map(|i| SELLERS[i].to_owned()),
            category: category.map(|i| CATEGORIES[i].to_owned()),
            query: query.map(str::to_owned),
        })
}

fn eur(amount_minor: i64) -> Money {
    Money { currency_code: "EUR".into(), amount_minor }
}

async fn marketplace(dir: &tempfile::TempDir) -> Marketplace {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let conn = Database::connect(&url).await.unwrap();
    MarketplaceMigrator::up(&conn, None).await.unwrap();
    let store = Store::connect(&url, &PoolOptions::default()).await.unwrap();
    Marketplace::new(store, EventHub::default())
}

async fn create(m: &Marketplace, spec: &Spec) -> Listing {
    let seller = principal(Caller::Seller(spec.seller));
    let title = WORDS[spec.title];
    let new = NewListing {
        title: title.into(),
        description: format!("About {title}"),
        category: CATEGORIES[spec.category].into(),
        price: eur(100),
    };
    let listing = m.create_listing(&seller, new).await.unwrap();
    if spec.fate == 0 {
        return listing;
    }
    let plan = NewPlan { name: "Buy now".into(), price: eur(100), interval: BillingInterval::OneTime };
    m.create_plan(&seller, &listing.id, plan).await.unwrap();
    let published = m.publish_listing(&seller, &listing.id).await.unwrap();
    if spec.fate == 1 {
        return published;
    }
    m.archive_listing(&seller, &listing.id).await.unwrap()
}

/// What `caller` should get for `filter`, from the listings as created.
fn expected(listings: &[Listing], caller: Caller, filter: &ListingFilter) -> Vec<String> {
    let who = principal(caller);
    let mut ids: Vec<String> = listings
        .iter()
        .filter(|l| match caller {
            Caller::Admin => true,
            _ => l.status == ListingStatus::Published || l.seller_id == who.actor_id(),
        })
        .filter(|l| filter.status.is_none_or(|s| l.status == s))
        .filter(|l| filter.seller_id.as_ref().is_none_or(|s| &l.seller_id == s))
        .filter(|l| filter.category.as_ref().is_none_or(|c| &l.category == c))
        .filter(|l| {
            filter.query.as_ref().is_none_or(|q| {
                let q = q.to_lowercase();
                l.title.to_lowercase().contains(&q) || l.description.to_lowercase().contains(&q)
            })
        })
        .map(|l| l.id.clone())
        .collect();
    ids.sort();
    ids
}

/// Another request that a token of `(caller, filter)` must not serve.
fn other_request(caller: Caller, filter: &ListingFilter) -> (Caller, ListingFilter) {
    let mut other = filter.clone();
    match caller {
        Caller::Seller(0) => return (Caller::Seller(1), other),
        Caller::Admin => return (Caller::Key, other),
        _ => {}
    }
    other.category = match &filter.category {
        Some(c) if c == CATEGORIES[0] => Some(CATEGORIES[1].to_owned()),
        _ => Some(CATEGORIES[0].to_owned()),
    };
    (caller, other)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(24)))]

    #[test]
    fn pages_return_every_visible_listing_once_in_order(
        specs in prop::collection::vec(spec(), 0..24),
        caller in caller(),
        filter in filter(),
        page_size in prop_oneof![4 => 1i32..8, 1 => Just(0), 1 => Just(1000)],
        insert_at in prop::option::of(0usize..4),
        inserted in prop::collection::vec(spec(), 1..4),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let m = marketplace(&dir).await;
            let mut listings = Vec::new();
            for spec in &specs {
                listings.push(create(&m, spec).await);
            }
            let want = expected(&listings, caller, &filter);
            let who = principal(caller);
            let limit = usize::try_from(page::page_size(page_size).unwrap()).unwrap();
            let mut got: Vec<String> = Vec::new();
            let mut added: Vec<Listing> = Vec::new();
            let mut token = String::new();
            let mut pages = 0usize;
            loop {
                let page = m.list_listings(&who, &filter, page_size, &token).await.unwrap();
                pages += 1;
                assert!(page.items.len() <= limit, "page of {} for size {limit}", page.items.len());
                got.extend(page.items.iter().map(|l| l.id.clone()));
                if page.next_page_token.is_empty() {
                    assert!(!page.items.is_empty() || pages == 1, "an empty page after a next_page_token");
                    break;
                }
                assert_eq!(page.items.len(), limit, "a page before the last is not full");
                let (other_caller, other_filter) = other_request(caller, &filter);
                let refused = m
                    .list_listings(&principal(other_caller), &other_filter, page_size, &page.next_page_token)
                    .await
                    .unwrap_err();
                assert!(
                    matches!(&refused, MarketplaceError::Invalid(v) if v.iter().any(|v| v.field == "page_token")),
                    "{refused:?}"
                );
                if insert_at == Some(pages - 1) {
                    for spec in &inserted {
                        added.push(create(&m, spec).await);
                    }
                }
                token = page.next_page_token;
                assert!(pages <= want.len() + added.len() + 1, "pagination does not end");
            }
            let mut seen = got.clone();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), got.len(), "a listing appeared twice: {got:?}");
            let originals: Vec<String> = got.iter().filter(|id| want.contains(id)).cloned().collect();
            assert_eq!(originals, want, "listings missing or out of order");
            let added_ids: Vec<&String> = added.iter().map(|l| &l.id).collect();
            assert!(got.iter().all(|id| want.contains(id) || added_ids.contains(&id)), "an unexpected listing: {got:?}");
            if added.is_empty() {
                assert_eq!(got, want);
            }
        });
    }
}
