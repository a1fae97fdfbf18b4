//! Data survives a restart, on SQLite and on PostgreSQL.

use valora_proto::marketplace::v1::{CreateListingRequest, GetListingRequest, Money};

use crate::support::{DevMesh, KEY, MeshOptions, PgDatabase};

async fn survives_restart(options: MeshOptions) {
    let mesh = DevMesh::start(options.clone()).await;
    let mut client = mesh.client(KEY).await;
    let request = CreateListingRequest {
        title: "Kept".into(),
        description: "survives restarts".into(),
        category: "books".into(),
        price: Some(Money { currency_code: "CHF".into(), amount_minor: 4200 }),
    };
    let created = client.create_listing(request).await.unwrap().into_inner().listing.unwrap();
    drop(client);
    let layout = mesh.stop();

    let mesh = DevMesh::start_in(layout, options).await;
    let mut client = mesh.client(KEY).await;
    let read = client
        .get_listing(GetListingRequest { id: created.id.clone() })
        .await
        .expect("listing after restart")
        .into_inner()
        .listing
        .unwrap();
    assert_eq!(read, created);
}

#[tokio::test]
async fn data_survives_restart_on_sqlite() {
    survives_restart(MeshOptions::default()).await;
}

#[tokio::test]
async fn data_survives_restart_on_postgres() {
    let Some(database) = PgDatabase::create().await else { return };
    survives_restart(MeshOptions { database_url: Some(database.url.clone()), ..Default::default() }).await;
}
