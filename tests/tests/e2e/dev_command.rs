//! `valora dev` without a configured key generates one and shows it once.

use valora_proto::marketplace::v1::ListListingsRequest;

use crate::support::{DevMesh, MeshOptions};

#[tokio::test]
async fn dev_generates_a_key_and_prints_it_once() {
    let options = MeshOptions { api_keys: Some(String::new()), ..Default::default() };
    let mesh = DevMesh::start(options.clone()).await;
    let stored = std::fs::read_to_string(mesh.layout.state_dir().join("dev-api-key")).unwrap();
    let key = stored.trim().to_owned();
    assert!(key.len() >= 32, "{key}");
    let banner = mesh.stdout();
    assert!(banner.contains(&key), "the generated key was not shown:\n{banner}");
    assert!(banner.contains("grpcurl -plaintext"), "{banner}");
    assert!(!mesh.logs().contains(&key), "the key reached the log");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(mesh.layout.state_dir().join("dev-api-key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let mut client = mesh.client(&key).await;
    client.list_listings(ListListingsRequest::default()).await.expect("generated key works");
    drop(client);

    let layout = mesh.stop();
    let mesh = DevMesh::start_in(layout, options).await;
    assert!(!mesh.stdout().contains(&key), "the key was shown a second time");
    let mut client = mesh.client(&key).await;
    client.list_listings(ListListingsRequest::default()).await.expect("stored key still works");
}
