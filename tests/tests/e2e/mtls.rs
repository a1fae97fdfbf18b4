//! Direct connections to the marketplace's mutual-TLS listener.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use valora_mesh::identity::Identity;
use valora_mesh::pki::{LeafOptions, MeshCa};
use valora_mesh::tls::{MeshTls, TlsFiles, mesh_channel, read_certs};
use valora_proto::marketplace::v1::ListListingsRequest;
use valora_proto::marketplace::v1::marketplace_service_client::MarketplaceServiceClient;

use crate::pki::{LeafSpec, sign_leaf};
use crate::support::{DevMesh, KEY, KeyInterceptor, MeshOptions};

/// Connects with `config`, sends the HTTP/2 preface and reads; `Ok` only
/// if the server answers with data.
pub(crate) async fn try_tls(addr: std::net::SocketAddr, config: rustls::ClientConfig) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("marketplace.valora.internal").unwrap();
    let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed".to_owned()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

pub(crate) fn roots(mesh: &DevMesh) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&mesh.layout.certs_dir().join("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    roots
}

pub(crate) fn client_config(roots: rustls::RootCertStore, cert: Option<(&str, &str)>) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(valora_mesh::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn marketplace_refuses_plaintext() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", mesh.layout.marketplace))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    let outcome = match channel.connect().await {
        Err(_) => None,
        Ok(channel) => {
            let mut client = MarketplaceServiceClient::with_interceptor(channel, KeyInterceptor::new(KEY));
            Some(client.list_listings(ListListingsRequest::default()).await)
        }
    };
    if let Some(result) = outcome {
        let status = result.expect_err("plaintext call succeeded");
        assert_ne!(status.code(), Code::Ok);
    }
    wait_for_log(&mesh, "reason=\"not_tls\"").await;
}

#[tokio::test]
async fn marketplace_refuses_tls_without_client_certificate() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let result = try_tls(mesh.layout.marketplace, client_config(roots(&mesh), None)).await;
    assert!(result.is_err(), "a client without certificate was served");
    wait_for_log(&mesh, "reason=\"no_client_certificate\"").await;
}

#[tokio::test]
async fn marketplace_refuses_certificate_from_another_ca() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let rogue = MeshCa::generate("rogue CA").unwrap();
    let leaf = rogue.issue(&Identity::engineer(), &LeafOptions::default()).unwrap();
    let config = client_config(roots(&mesh), Some((&leaf.chain_pem, &leaf.key_pem)));
    let result = try_tls(mesh.layout.marketplace, config).await;
    assert!(result.is_err(), "a certificate from another CA was accepted");
    wait_for_log(&mesh, "reason=\"unknown_ca\"").await;
}

#[tokio::test]
async fn marketplace_refuses_expired_client_certificate() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let now = time::OffsetDateTime::now_utc();
    let spec = LeafSpec {
        not_before: now - time::Duration::days(2),
        not_after: now - time::Duration::days(1),
        ..LeafSpec::valid("spiffe://valora.internal/engineer")
    };
    let leaf = sign_leaf(&mesh.layout.certs_dir(), &spec);
    let config = client_config(roots(&mesh), Some((&leaf.chain_pem, &leaf.key_pem)));
    assert!(try_tls(mesh.layout.marketplace, config).await.is_err(), "an expired certificate was accepted");
    wait_for_log(&mesh, "reason=\"certificate_expired\"").await;
}

#[tokio::test]
async fn marketplace_refuses_not_yet_valid_client_certificate() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let now = time::OffsetDateTime::now_utc();
    let spec = LeafSpec {
        not_before: now + time::Duration::days(1),
        not_after: now + time::Duration::days(2),
        ..LeafSpec::valid("spiffe://valora.internal/engineer")
    };
    let leaf = sign_leaf(&mesh.layout.certs_dir(), &spec);
    let config = client_config(roots(&mesh), Some((&leaf.chain_pem, &leaf.key_pem)));
    assert!(try_tls(mesh.layout.marketplace, config).await.is_err(), "a future certificate was accepted");
    wait_for_log(&mesh, "reason=\"certificate_not_yet_valid\"").await;
}

#[tokio::test]
async fn marketplace_refuses_foreign_identity() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    // Signed by the mesh CA, but for another trust domain.
    let leaf = sign_leaf(&mesh.layout.certs_dir(), &LeafSpec::valid("spiffe://evil.example/engineer"));
    let config = client_config(roots(&mesh), Some((&leaf.chain_pem, &leaf.key_pem)));
    assert!(try_tls(mesh.layout.marketplace, config).await.is_err(), "a foreign identity was accepted");
    wait_for_log(&mesh, "reason=\"bad_identity\"").await;
}

#[tokio::test]
async fn marketplace_refuses_certificate_without_identity() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let spec = LeafSpec { uri: None, ..LeafSpec::valid("") };
    let leaf = sign_leaf(&mesh.layout.certs_dir(), &spec);
    let config = client_config(roots(&mesh), Some((&leaf.chain_pem, &leaf.key_pem)));
    assert!(try_tls(mesh.layout.marketplace, config).await.is_err(), "a certificate without identity was accepted");
    wait_for_log(&mesh, "reason=\"bad_identity\"").await;
}

#[tokio::test]
async fn marketplace_refuses_clients_without_alpn_h2() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let engineer = engineer_pem(&mesh);
    let mut config = client_config(roots(&mesh), Some((&engineer.0, &engineer.1)));
    config.alpn_protocols = vec![];
    assert!(try_tls(mesh.layout.marketplace, config).await.is_err(), "a client without ALPN was served");
    wait_for_log(&mesh, "reason=\"no_alpn_h2\"").await;
}

#[tokio::test]
async fn marketplace_refuses_tls_1_2() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let engineer = engineer_pem(&mesh);
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(engineer.0.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(engineer.1.as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(valora_mesh::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots(&mesh))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    assert!(try_tls(mesh.layout.marketplace, config).await.is_err(), "TLS 1.2 was accepted");
    wait_for_log(&mesh, "reason=\"protocol_version\"").await;
}

#[tokio::test]
async fn hundred_bad_handshakes_do_not_stall_the_listener() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    for n in 0..100 {
        if n % 2 == 0 {
            let mut tcp = TcpStream::connect(mesh.layout.marketplace).await.unwrap();
            let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        } else {
            let _ = try_tls(mesh.layout.marketplace, client_config(roots(&mesh), None)).await;
        }
    }
    // Half-open connections that never speak must not block others either.
    let _silent: Vec<TcpStream> = futures_silent(mesh.layout.marketplace, 20).await;
    let engineer = engineer_pem(&mesh);
    let config = client_config(roots(&mesh), Some((&engineer.0, &engineer.1)));
    try_tls(mesh.layout.marketplace, config).await.expect("a valid client still connects");
}

async fn futures_silent(addr: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..count {
        streams.push(TcpStream::connect(addr).await.unwrap());
    }
    streams
}

fn engineer_pem(mesh: &DevMesh) -> (String, String) {
    let dir = mesh.layout.certs_dir();
    (
        std::fs::read_to_string(dir.join("engineer.pem")).unwrap(),
        std::fs::read_to_string(dir.join("engineer.key")).unwrap(),
    )
}

#[tokio::test]
async fn engineer_certificate_calls_directly_with_a_key() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let files = TlsFiles::in_dir(&mesh.layout.certs_dir(), &Identity::engineer());
    let tls = MeshTls::load(files, &Identity::engineer()).unwrap();
    let addr = mesh.layout.marketplace.to_string();
    let channel = mesh_channel(&tls, &addr, &Identity::marketplace()).unwrap();

    let mut with_key = MarketplaceServiceClient::with_interceptor(channel.clone(), KeyInterceptor::new(KEY));
    with_key.list_listings(ListListingsRequest::default()).await.expect("engineer with key");

    let mut without_key = MarketplaceServiceClient::with_interceptor(channel.clone(), KeyInterceptor::new(""));
    let status = without_key.list_listings(ListListingsRequest::default()).await.expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A principal header is trusted only from the edge's identity.
    let mut forged = tonic::Request::new(ListListingsRequest::default());
    forged.metadata_mut().insert("x-api-key", KEY.parse().unwrap());
    forged.metadata_mut().insert("x-valora-principal", "eyJrZXlfaWQiOiJ4In0".parse().unwrap());
    let status = MarketplaceServiceClient::new(channel).list_listings(forged).await.expect_err("forged");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("spiffe://valora.internal/edge"), "{}", status.message());
}

#[tokio::test]
async fn client_refuses_server_with_wrong_identity() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let files = TlsFiles::in_dir(&mesh.layout.certs_dir(), &Identity::engineer());
    let tls = MeshTls::load(files, &Identity::engineer()).unwrap();
    // The marketplace presents its own identity, not auth's.
    let channel = mesh_channel(&tls, &mesh.layout.marketplace.to_string(), &Identity::auth()).unwrap();
    let mut client = MarketplaceServiceClient::with_interceptor(channel, KeyInterceptor::new(KEY));
    let status = client.list_listings(ListListingsRequest::default()).await.expect_err("wrong identity");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

pub(crate) async fn wait_for_log(mesh: &DevMesh, needle: &str) {
    for _ in 0..50 {
        if mesh.logs().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("log never contained {needle}:\n{}", mesh.logs());
}
