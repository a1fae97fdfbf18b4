//! The README's grpcurl walkthrough, run with grpcurl itself through the
//! edge, using server reflection.

use std::process::Command;

use serde_json::Value;

use crate::support::{DevMesh, KEY, MeshOptions, tool};

/// Runs `grpcurl -plaintext -H "x-api-key: KEY" FLAGS EDGE REST`.
pub fn grpcurl(mesh: &DevMesh, flags: &[&str], rest: &[&str]) -> (bool, String, String) {
    let binary = tool("grpcurl").expect("grpcurl");
    let output = Command::new(binary)
        .args(["-plaintext", "-H", &format!("x-api-key: {KEY}")])
        .args(flags)
        .arg(mesh.edge())
        .args(rest)
        .output()
        .expect("run grpcurl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn call(mesh: &DevMesh, method: &str, body: &str) -> Value {
    let full = format!("valora.marketplace.v1.MarketplaceService/{method}");
    let (ok, out, err) = grpcurl(mesh, &["-d", body], &[&full]);
    assert!(ok, "{method} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} output {out:?}: {e}"))
}

#[tokio::test]
async fn walkthrough_with_grpcurl() {
    if tool("grpcurl").is_none() {
        return;
    }
    let mesh = DevMesh::start(MeshOptions::default()).await;

    let (ok, services, err) = grpcurl(&mesh, &[], &["list"]);
    assert!(ok, "list failed: {err}");
    assert!(services.contains("valora.marketplace.v1.MarketplaceService"), "{services}");
    assert!(services.contains("grpc.health.v1.Health"), "{services}");

    let (ok, description, err) =
        grpcurl(&mesh, &[], &["describe", "valora.marketplace.v1.MarketplaceService"]);
    assert!(ok, "describe failed: {err}");
    for method in ["CreateListing", "ListListings", "RotatePlan", "WatchListingEvents"] {
        assert!(description.contains(method), "{method} missing from {description}");
    }

    let created = call(
        &mesh,
        "CreateListing",
        r#"{"title": "Vintage camera", "description": "A 1970s rangefinder",
            "category": "cameras", "price": {"currency_code": "EUR", "amount_minor": 12500}}"#,
    );
    let listing_id = created["listing"]["id"].as_str().expect("listing id").to_owned();
    assert_eq!(created["listing"]["status"], "LISTING_STATUS_DRAFT");

    let plan = call(
        &mesh,
        "CreatePlan",
        &format!(
            r#"{{"listing_id": "{listing_id}", "name": "Buy now",
                "price": {{"currency_code": "EUR", "amount_minor": 12500}},
                "interval": "BILLING_INTERVAL_ONE_TIME"}}"#
        ),
    );
    assert_eq!(plan["plan"]["status"], "PLAN_STATUS_ACTIVE");
    assert_eq!(plan["plan"]["revision"], "1");

    let published = call(&mesh, "PublishListing", &format!(r#"{{"id": "{listing_id}"}}"#));
    assert_eq!(published["listing"]["status"], "LISTING_STATUS_PUBLISHED");
    assert!(published["listing"]["publishTime"].is_string());

    let listed = call(&mesh, "ListListings", r#"{"status": "LISTING_STATUS_PUBLISHED"}"#);
    let listings = listed["listings"].as_array().expect("listings");
    assert_eq!(listings.len(), 1);
    assert_eq!(listings[0]["id"], listing_id.as_str());

    let rotated = call(
        &mesh,
        "RotatePlan",
        &format!(
            r#"{{"plan_id": "{}", "price": {{"currency_code": "EUR", "amount_minor": 9900}}}}"#,
            plan["plan"]["id"].as_str().expect("plan id")
        ),
    );
    assert_eq!(rotated["retiredPlan"]["status"], "PLAN_STATUS_RETIRED");
    assert_eq!(rotated["newPlan"]["status"], "PLAN_STATUS_ACTIVE");
    assert_eq!(rotated["newPlan"]["revision"], "2");
    assert_eq!(rotated["newPlan"]["replacesPlanId"], plan["plan"]["id"]);
    assert_eq!(rotated["newPlan"]["name"], "Buy now");

    let search = call(&mesh, "ListListings", r#"{"query": "RANGEFINDER", "category": "cameras"}"#);
    assert_eq!(search["listings"].as_array().map(Vec::len), Some(1));
    let none = call(&mesh, "ListListings", r#"{"category": "books"}"#);
    assert!(none.get("listings").is_none(), "{none}");
}

#[tokio::test]
async fn grpcurl_sees_bad_request_details() {
    if tool("grpcurl").is_none() {
        return;
    }
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let (ok, _, err) = grpcurl(
        &mesh,
        &["-d", r#"{"title": "", "category": "cameras", "price": {"currency_code": "EUR"}}"#],
        &["valora.marketplace.v1.MarketplaceService/CreateListing"],
    );
    assert!(!ok);
    assert!(err.contains("Code: InvalidArgument"), "{err}");
    // The BadRequest detail decodes through reflection, naming the field.
    assert!(err.contains("google.rpc.BadRequest"), "{err}");
    assert!(err.contains(r#""field":"title""#), "{err}");
}
