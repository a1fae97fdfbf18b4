//! Every bad input gets its own code and names its field, and changes
//! nothing.

use tonic::{Code, Status};
use tonic_types::StatusExt;
use valora_proto::marketplace::v1::{
    CreateListingRequest, CreatePlanRequest, GetListingRequest, ListListingsRequest,
    ListPlansRequest, Listing, Money, PublishListingRequest, RotatePlanRequest,
    UpdateListingRequest,
};

use crate::support::{DevMesh, KEY, MeshOptions};

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money { currency_code: "EUR".into(), amount_minor })
}

fn listing(title: &str) -> CreateListingRequest {
    CreateListingRequest {
        title: title.into(),
        description: "desc".into(),
        category: "books".into(),
        price: eur(100),
    }
}

/// The fields named by the BadRequest details of `status`.
fn fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str, case: &str) {
    let status = result.expect_err(case);
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    assert_eq!(fields(&status), [field], "{case}: {status:?}");
    assert!(status.message().contains(field), "{case}: message {:?} does not name {field}", status.message());
}

#[tokio::test]
async fn bad_inputs_name_their_field_and_change_nothing() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let mut client = mesh.client(KEY).await;
    let seed = client.create_listing(listing("Seed")).await.unwrap().into_inner().listing.unwrap();
    let missing_id = "0190a8e2-0000-7000-8000-000000000000";

    let create_cases: Vec<(&str, CreateListingRequest, &str)> = vec![
        ("empty title", listing("   "), "title"),
        ("over-long title", listing(&"t".repeat(201)), "title"),
        ("over-long description", CreateListingRequest { description: "d".repeat(5001), ..listing("x") }, "description"),
        ("bad category", CreateListingRequest { category: "Not A Slug".into(), ..listing("x") }, "category"),
        ("missing price", CreateListingRequest { price: None, ..listing("x") }, "price"),
        ("negative amount", CreateListingRequest { price: eur(-1), ..listing("x") }, "price.amount_minor"),
        ("overflowing amount", CreateListingRequest { price: eur(1 << 53), ..listing("x") }, "price.amount_minor"),
        ("maximum amount", CreateListingRequest { price: eur(i64::MAX), ..listing("x") }, "price.amount_minor"),
        (
            "unknown currency",
            CreateListingRequest { price: Some(Money { currency_code: "ABC".into(), amount_minor: 1 }), ..listing("x") },
            "price.currency_code",
        ),
        (
            "lowercase currency",
            CreateListingRequest { price: Some(Money { currency_code: "eur".into(), amount_minor: 1 }), ..listing("x") },
            "price.currency_code",
        ),
    ];
    for (case, request, field) in create_cases {
        assert_invalid(client.create_listing(request).await, field, case);
    }

    assert_invalid(client.get_listing(GetListingRequest { id: "42".into() }).await, "id", "malformed id");
    let status = client.get_listing(GetListingRequest { id: missing_id.into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let list = |status, page_size, page_token: &str| ListListingsRequest {
        status,
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    };
    assert_invalid(client.list_listings(list(0, 0, "garbage")).await, "page_token", "bad page token");
    assert_invalid(client.list_listings(list(99, 0, "")).await, "status", "unknown enum");
    assert_invalid(client.list_listings(list(0, -1, "")).await, "page_size", "negative page size");

    let update = |paths: &[&str], version: i64, title: &str| UpdateListingRequest {
        listing: Some(Listing { id: seed.id.clone(), title: title.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        version,
    };
    assert_invalid(client.update_listing(update(&[], 1, "x")).await, "update_mask", "empty mask");
    assert_invalid(client.update_listing(update(&["status"], 1, "x")).await, "update_mask.paths[0]", "output-only path");
    assert_invalid(client.update_listing(update(&["colour"], 1, "x")).await, "update_mask.paths[0]", "unknown path");
    assert_invalid(client.update_listing(update(&["title"], 0, "x")).await, "version", "missing version");
    assert_invalid(client.update_listing(update(&["title"], 1, "")).await, "listing.title", "blank new title");
    let status = client.update_listing(update(&["title"], 7, "New")).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "stale version: {status:?}");

    let plan = |interval| CreatePlanRequest {
        listing_id: seed.id.clone(),
        name: "Monthly".into(),
        price: eur(500),
        interval,
    };
    assert_invalid(client.create_plan(plan(0)).await, "interval", "unspecified interval");
    assert_invalid(client.create_plan(plan(42)).await, "interval", "unknown interval");
    let status = client.publish_listing(PublishListingRequest { id: seed.id.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "publish without plan: {status:?}");
    let rotate = RotatePlanRequest { plan_id: missing_id.into(), price: eur(1), ..Default::default() };
    let status = client.rotate_plan(rotate).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "rotate unknown plan: {status:?}");

    // The database contains exactly the seed listing, unchanged, and no plan.
    let listed = client.list_listings(ListListingsRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.listings, vec![seed.clone()]);
    let plans = client
        .list_plans(ListPlansRequest { listing_id: seed.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(plans.plans.is_empty());
}

#[tokio::test]
async fn amount_at_the_limit_is_accepted() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let mut client = mesh.client(KEY).await;
    let request = CreateListingRequest { price: eur((1 << 53) - 1), ..listing("Limit") };
    let created = client.create_listing(request).await.expect("limit amount").into_inner();
    assert_eq!(created.listing.unwrap().price.unwrap().amount_minor, (1 << 53) - 1);
}
