//! API keys at the edge: every routed call and reflection need one, and a
//! rejected call never reaches the marketplace.

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use tonic::Code;
use valora_proto::marketplace::v1::{CreateListingRequest, ListListingsRequest, Money};

use crate::support::{DevMesh, KEY, MeshOptions, SECOND_KEY};

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
