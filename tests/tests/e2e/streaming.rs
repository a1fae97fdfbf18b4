//! WatchListingEvents streams events as they happen, through the edge.

use std::time::Duration;

use valora_proto::marketplace::v1::{
    CreateListingRequest, ListingEventType, Money, WatchListingEventsRequest,
};

use crate::support::{DevMesh, KEY, MeshOptions};

#[tokio::test]
async fn watch_receives_events_incrementally() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let mut watcher = mesh.client(KEY).await;
    let mut stream = watcher
        .watch_listing_events(WatchListingEventsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let mut client = mesh.client(KEY).await;
    for n in 0..3 {
        let request = CreateListingRequest {
            title: format!("Item {n}"),
            description: String::new(),
            category: "toys".into(),
            price: Some(Money { currency_code: "USD".into(), amount_minor: 100 + n }),
        };
        let created = client.create_listing(request).await.unwrap().into_inner().listing.unwrap();
        // Each event arrives before the next change is made.
        let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("an event");
        assert_eq!(event.r#type, ListingEventType::Created as i32);
        assert_eq!(event.listing.unwrap().id, created.id);
    }
}
