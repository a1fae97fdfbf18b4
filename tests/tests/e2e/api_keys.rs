//! API keys at the edge: every routed call and reflection need one, and a
//! rejected call never reaches the marketplace.

use std::path::Path;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use tonic::Code;
use valora_proto::marketplace::v1::{CreateListingRequest, ListListingsRequest, Money};

use valora_mesh::apikey::StaticKeys;

use crate::support::{DevMesh, KEY, MeshOptions, SECOND_KEY, http_get};

fn new_listing(title: &str) -> CreateListingRequest {
    CreateListingRequest {
        title: title.to_owned(),
        description: String::new(),
        category: "books".to_owned(),
        price: Some(Money { currency_code: "EUR".to_owned(), amount_minor: 100 }),
    }
}

#[tokio::test]
async fn bad_keys_are_unauthenticated_and_not_forwarded() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let wrong_case = KEY.to_uppercase();
    let almost = format!("{}x", &KEY[..KEY.len() - 1]);
    let cases = [
        ("missing", "", "missing API key"),
        ("wrong", "definitely-not-the-right-key", "invalid API key"),
        ("differs only in case", wrong_case.as_str(), "invalid API key"),
        ("differs in the last character", almost.as_str(), "invalid API key"),
        ("malformed", "has spaces in it", "malformed API key"),
    ];
    for (case, key, message) in cases {
        let mut client = mesh.client(key).await;
        let status = client
            .create_listing(new_listing(case))
            .await
            .expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert!(status.message().contains(message), "{case}: {}", status.message());
        if !key.is_empty() {
            assert!(!status.message().contains(key), "{case}: message echoes the key");
        }
    }

    // Nothing reached the marketplace.
    let mut client = mesh.client(KEY).await;
    let listed = client.list_listings(ListListingsRequest::default()).await.expect("list");
    assert!(listed.get_ref().listings.is_empty(), "{:?}", listed.get_ref().listings);
    assert!(!mesh.logs().contains(&wrong_case), "a rejected key reached the log");
}

#[tokio::test]
async fn both_configured_keys_work() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    for key in [KEY, SECOND_KEY] {
        let mut client = mesh.client(key).await;
        client.create_listing(new_listing("overlap")).await.expect(key);
    }
}

#[tokio::test]
async fn plain_http_without_key_gets_401() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{}/valora.marketplace.v1.MarketplaceService/ListListings", mesh.edge())
        .parse()
        .unwrap();
    let response = client.get(uri.clone()).await.expect("plain GET");
    assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key(http::header::WWW_AUTHENTICATE));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("missing API key"));

    let request = http::Request::get(uri)
        .header("x-api-key", KEY)
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.expect("plain GET with key");
    assert_eq!(response.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn key_in_query_string_is_refused() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", mesh.edge()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/valora.marketplace.v1.MarketplaceService/ListListings?api_key=e2e-static-key-0123456789abcdef0123456789",
    );
    let codec = tonic_prost::ProstCodec::<ListListingsRequest, valora_proto::marketplace::v1::ListListingsResponse>::default();
    let mut request = tonic::Request::new(ListListingsRequest::default());
    request.metadata_mut().insert("x-api-key", KEY.parse().unwrap());
    let status = grpc.unary(request, path, codec).await.expect_err("query-string key");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("never in the URL"), "{}", status.message());
    assert!(!mesh.logs().contains("api_key="), "the query string reached the log");
}

#[tokio::test]
async fn health_needs_no_key() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    assert_eq!(mesh.edge_health("").await, Some(1));
}

/// Replaces `path` the way a Secret update does: the new content appears
/// all at once, through a rename.
fn replace_file(path: &Path, content: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, content).expect("write the new key file");
    std::fs::rename(&temporary, path).expect("rename the new key file");
}

/// Returns the status code of a call through the edge with `key`.
async fn call_code(mesh: &DevMesh, key: &str) -> Code {
    let mut client = mesh.client(key).await;
    match client.list_listings(ListListingsRequest::default()).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn key_file_changes_apply_without_restart() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("api-keys");
    replace_file(&file, &format!("{KEY}\n"));
    let mesh = DevMesh::start(MeshOptions {
        api_keys: Some(String::new()),
        env: vec![("MARKETPLACE_API_KEY_FILE".to_owned(), file.display().to_string())],
        ..MeshOptions::default()
    })
    .await;
    assert_eq!(call_code(&mesh, KEY).await, Code::Ok);
    assert_eq!(call_code(&mesh, SECOND_KEY).await, Code::Unauthenticated);

    // Only the second key from now on.
    replace_file(&file, &format!("{SECOND_KEY}\n"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let old = call_code(&mesh, KEY).await;
        let new = call_code(&mesh, SECOND_KEY).await;
        if old == Code::Unauthenticated && new == Code::Ok {
            break;
        }
        assert!(Instant::now() < deadline, "after 10 s the old key gives {old:?}, the new one {new:?}; log:\n{}", mesh.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second_id = StaticKeys::parse(SECOND_KEY).unwrap().ids().remove(0);
    let logs = mesh.logs();
    let reloaded = logs.lines().find(|l| l.contains("static API keys reloaded")).expect("reload logged");
    assert!(reloaded.contains(&second_id), "{reloaded}");
    assert!(reloaded.contains("count=1"), "{reloaded}");

    // A key that is too short is rejected, and the second key stays.
    let short = "too-short-key-7391";
    replace_file(&file, &format!("{short}\n"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let warning = loop {
        if let Some(line) = mesh.logs().lines().find(|l| l.contains("static API key file rejected")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no warning after 10 s; log:\n{}", mesh.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("MARKETPLACE_API_KEY_FILE"), "{warning}");
    assert!(warning.contains("entry 1 is 18 characters"), "{warning}");
    assert_eq!(call_code(&mesh, SECOND_KEY).await, Code::Ok);
    assert_eq!(call_code(&mesh, short).await, Code::Unauthenticated);
    assert_eq!(call_code(&mesh, KEY).await, Code::Unauthenticated);

    let logs = mesh.logs();
    for key in [KEY, SECOND_KEY, short] {
        assert!(!logs.contains(key), "a key value reached the log");
    }
    let metrics = http_get(&format!("http://{}/metrics", mesh.layout.admin)).await;
    for outcome in ["applied", "rejected"] {
        let line = format!("valora_api_key_file_reloads_total{{outcome=\"{outcome}\"}} 1");
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    }
}
