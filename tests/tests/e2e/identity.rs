//! Mesh identity end to end: the authorization policy, live certificate
//! rotation, expiry, and start-up checks of the certificate files.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tonic::Code;
use valora_mesh::identity::Identity;
use valora_mesh::pki;
use valora_mesh::tls::{MeshTls, TlsFiles, mesh_channel, read_certs};
use valora_proto::marketplace::v1::ListListingsRequest;
use valora_proto::marketplace::v1::marketplace_service_client::MarketplaceServiceClient;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::mtls::{client_config, roots, wait_for_log};
use crate::pki::{LeafSpec, sign_leaf};
use crate::support::{DevMesh, KEY, KeyInterceptor, MeshLayout, MeshOptions, WEBHOOK_KEY, run_valora, tool};

fn direct_client(
    mesh: &DevMesh,
    identity: &Identity,
) -> MarketplaceServiceClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, KeyInterceptor>> {
    let files = TlsFiles::in_dir(&mesh.layout.certs_dir(), identity);
    let tls = MeshTls::load(files, identity).unwrap();
    let channel = mesh_channel(&tls, &mesh.layout.marketplace.to_string(), &Identity::marketplace()).unwrap();
    MarketplaceServiceClient::with_interceptor(channel, KeyInterceptor::new(KEY))
}

#[tokio::test]
async fn policy_denies_identities_without_a_grant() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    // The auth service's identity has no grant on the marketplace.
    let status = direct_client(&mesh, &Identity::auth())
        .list_listings(ListListingsRequest::default())
        .await
        .expect_err("auth may not call the marketplace");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("spiffe://valora.internal/auth"), "{}", status.message());
    assert!(status.message().contains("ListListings"), "{}", status.message());
    // The edge's grant lets calls through.
    let mut client = mesh.client(KEY).await;
    client.list_listings(ListListingsRequest::default()).await.expect("through the edge");
}

#[tokio::test]
async fn audit_mode_logs_instead_of_denying() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        r#"
mode = "audit"
[[grant]]
caller = "edge"
service = "valora.marketplace.v1.MarketplaceService"
[[grant]]
caller = "edge"
service = "valora.marketplace.v1.WebhookService"
[[grant]]
caller = "edge"
service = "valora.auth.v1.AuthService"
[[grant]]
caller = "edge"
service = "valora.auth.v1.ApiKeyVerifier"
[[grant]]
caller = "marketplace"
service = "valora.auth.v1.ApiKeyVerifier"
"#,
    )
    .unwrap();
    let options = MeshOptions {
        env: vec![("VALORA_POLICY_FILE".into(), policy.display().to_string())],
        ..Default::default()
    };
    let mesh = DevMesh::start(options).await;
    direct_client(&mesh, &Identity::engineer())
        .list_listings(ListListingsRequest::default())
        .await
        .expect("audit mode allows");
    wait_for_log(&mesh, "policy would deny this call (audit mode)").await;
}

#[tokio::test]
async fn bad_policy_files_stop_start_up() {
    let layout = MeshLayout::new();
    pki::write_dev_pki(&layout.certs_dir(), false).unwrap();
    let cases = [
        ("[[grant]]\ncaller = \"payments\"\nservice = \"valora.marketplace.v1.MarketplaceService\"\n", "unknown identity"),
        ("[[grant]]\ncaller = \"edge\"\nservice = \"valora.nope.v1.Nothing\"\n", "unknown service"),
        ("[[grant]]\ncaller = \"edge\"\nservice = \"valora.marketplace.v1.MarketplaceService\"\nmethods = [\"DropTables\"]\n", "unknown method"),
        ("[[grant]]\ncaller = \"edge\"\nservice = \"valora.marketplace.v1.MarketplaceService\"\nmethods = [\"GetListing\"]\n", "no grant for"),
    ];
    for (text, expected) in cases {
        let path = layout.dir.path().join("policy.toml");
        std::fs::write(&path, text).unwrap();
        let certs = layout.certs_dir().display().to_string();
        let output = run_valora(
            &["serve", "marketplace", "--certs-dir", &certs, "--admin-addr", "127.0.0.1:0", "--marketplace-addr", "127.0.0.1:0"],
            &[
                ("VALORA_POLICY_FILE", &path.display().to_string()),
                ("MARKETPLACE_API_KEY", KEY),
                ("MARKETPLACE_DATABASE_URL", &sqlite_url(&layout)),
            ],
            layout.dir.path(),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{expected}: started anyway");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert!(stderr.contains("policy.toml"), "{expected}: {stderr}");
    }
}

/// The serial of the certificate the marketplace presents on a new
/// connection, as lowercase hex.
async fn presented_serial(mesh: &DevMesh) -> String {
    let dir = mesh.layout.certs_dir();
    let chain = std::fs::read_to_string(dir.join("engineer.pem")).unwrap();
    let key = std::fs::read_to_string(dir.join("engineer.key")).unwrap();
    let config = client_config(roots(mesh), Some((&chain, &key)));
    let tcp = tokio::net::TcpStream::connect(mesh.layout.marketplace).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("marketplace.valora.internal").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    serial_of(leaf.as_ref())
}

fn serial_of(der: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.raw_serial_as_string().replace(':', "")
}

fn file_serial(mesh: &DevMesh) -> String {
    let certs = read_certs(&mesh.layout.certs_dir().join("marketplace.pem")).unwrap();
    serial_of(certs[0].as_ref())
}

#[tokio::test]
async fn rotation_under_load_fails_no_call() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut client = mesh.client(KEY).await;
    let load = {
        let (stop, calls, failures) = (stop.clone(), calls.clone(), failures.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.list_listings(ListListingsRequest::default()).await {
                    Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        eprintln!("call failed during rotation: {status:?}");
                        failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };

    let certs = mesh.layout.certs_dir().display().to_string();
    for round in 0..2 {
        let before = presented_serial(&mesh).await;
        let output = run_valora(&["certs", "dev", "--rotate", "--certs-dir", &certs], &[], mesh.layout.dir.path());
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let expected = file_serial(&mesh);
        assert_ne!(expected, before);
        let mut presented = before.clone();
        for _ in 0..100 {
            presented = presented_serial(&mesh).await;
            if presented == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(presented, expected, "round {round}: new connections still get the old certificate");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(calls.load(Ordering::Relaxed) > 10, "too few calls to mean anything");
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(mesh.logs().contains("certificate reloaded"), "{}", mesh.logs());
}

#[tokio::test]
async fn bad_new_certificate_keeps_the_old_one() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let before = presented_serial(&mesh).await;
    std::fs::write(mesh.layout.certs_dir().join("marketplace.pem"), "garbage").unwrap();
    wait_for_log(&mesh, "new certificate material rejected").await;
    assert_eq!(presented_serial(&mesh).await, before);
}

#[tokio::test]
async fn grpcurl_calls_marketplace_with_engineer_certificate() {
    let Some(grpcurl) = tool("grpcurl") else { return };
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let dir = mesh.layout.certs_dir();
    let output = Command::new(grpcurl)
        .arg("-cacert").arg(dir.join("ca.pem"))
        .arg("-cert").arg(dir.join("engineer.pem"))
        .arg("-key").arg(dir.join("engineer.key"))
        .args(["-H", &format!("x-api-key: {KEY}")])
        .arg(mesh.layout.marketplace.to_string())
        .arg("list")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("valora.marketplace.v1.MarketplaceService"), "{stdout}");
}

#[tokio::test]
async fn certificate_near_expiry_turns_health_not_serving() {
    let layout = MeshLayout::new();
    pki::write_dev_pki(&layout.certs_dir(), false).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let spec = LeafSpec {
        dns: "marketplace.valora.internal",
        not_after: now + time::Duration::minutes(30),
        ..LeafSpec::valid("spiffe://valora.internal/marketplace")
    };
    let leaf = sign_leaf(&layout.certs_dir(), &spec);
    std::fs::write(layout.certs_dir().join("marketplace.pem"), leaf.chain_pem).unwrap();
    std::fs::write(layout.certs_dir().join("marketplace.key"), leaf.key_pem).unwrap();
    let mesh = DevMesh::start_in(layout, MeshOptions::default()).await;

    let files = TlsFiles::in_dir(&mesh.layout.certs_dir(), &Identity::engineer());
    let tls = MeshTls::load(files, &Identity::engineer()).unwrap();
    let channel = mesh_channel(&tls, &mesh.layout.marketplace.to_string(), &Identity::marketplace()).unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut status = 0;
    for _ in 0..50 {
        let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
        status = health.check(request).await.unwrap().get_ref().status;
        if status == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 2, "health should be NOT_SERVING");

    let readyz = reqwest_get(&format!("http://{}/readyz", mesh.layout.admin)).await;
    assert_eq!(readyz.0, 503);
    assert!(readyz.1.contains("certificate"), "{}", readyz.1);
    let metrics = reqwest_get(&format!("http://{}/metrics", mesh.layout.admin)).await;
    assert!(metrics.1.contains("valora_certificate_expiry_seconds{identity=\"marketplace\"}"), "{}", metrics.1);
}

#[tokio::test]
async fn expired_or_future_certificate_stops_start_up() {
    let layout = MeshLayout::new();
    pki::write_dev_pki(&layout.certs_dir(), false).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let cases = [
        ("expired", now - time::Duration::days(2), now - time::Duration::days(1)),
        ("not valid before", now + time::Duration::days(1), now + time::Duration::days(2)),
    ];
    for (expected, not_before, not_after) in cases {
        let spec = LeafSpec {
            dns: "marketplace.valora.internal",
            not_before,
            not_after,
            ..LeafSpec::valid("spiffe://valora.internal/marketplace")
        };
        let leaf = sign_leaf(&layout.certs_dir(), &spec);
        std::fs::write(layout.certs_dir().join("marketplace.pem"), leaf.chain_pem).unwrap();
        std::fs::write(layout.certs_dir().join("marketplace.key"), leaf.key_pem).unwrap();
        let certs = layout.certs_dir().display().to_string();
        let output = run_valora(
            &["serve", "marketplace", "--certs-dir", &certs, "--admin-addr", "127.0.0.1:0", "--marketplace-addr", "127.0.0.1:0"],
            &[("MARKETPLACE_API_KEY", KEY), ("MARKETPLACE_DATABASE_URL", &sqlite_url(&layout)), ("MARKETPLACE_WEBHOOK_KEY", WEBHOOK_KEY)],
            layout.dir.path(),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{expected}: started anyway");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert!(stderr.contains("marketplace.pem"), "{expected}: {stderr}");
    }
}

/// A GET with hyper: status and body.
async fn reqwest_get(url: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn sqlite_url(layout: &MeshLayout) -> String {
    format!("sqlite://{}?mode=rwc", layout.dir.path().join("m.db").display())
}

#[tokio::test]
async fn ca_rollover_with_a_bundle() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let dir = mesh.layout.certs_dir();
    let old_ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let new_ca = pki::MeshCa::generate("VALORA mesh CA 2").unwrap();

    // Step 1: every workload trusts both CAs.
    pki::write_file(&dir.join("ca.pem"), &format!("{old_ca}{}", new_ca.cert_pem()), false).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Step 2: the marketplace gets a leaf from the new CA.
    let leaf = new_ca.issue(&Identity::marketplace(), &pki::LeafOptions::default()).unwrap();
    pki::write_file(&dir.join("marketplace.key"), &leaf.key_pem, true).unwrap();
    pki::write_file(&dir.join("marketplace.pem"), &leaf.chain_pem, false).unwrap();
    let expected = file_serial(&mesh);
    let mut presented = String::new();
    for _ in 0..100 {
        presented = presented_serial(&mesh).await;
        if presented == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An engineer whose leaf still comes from the old CA talks to a
    // marketplace whose leaf comes from the new one.
    assert_eq!(presented, expected);
    direct_client(&mesh, &Identity::engineer())
        .list_listings(ListListingsRequest::default())
        .await
        .expect("old-CA client, new-CA server");
    let mut client = mesh.client(KEY).await;
    client.list_listings(ListListingsRequest::default()).await.expect("through the edge");
}
