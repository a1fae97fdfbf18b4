//! Operations: secrets never reach the logs, and SIGTERM drains.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::Code;
use valora_proto::auth::v1::{CreateApiKeyRequest, LoginRequest, RefreshTokenRequest, RegisterRequest};
use valora_proto::marketplace::v1::{CreateListingRequest, ListListingsRequest, Money, WatchListingEventsRequest};

use crate::support::{DevMesh, KEY, MeshOptions};

const PASSWORD: &str = "violet-otter-sings-at-dawn";

/// Every window of `width` characters of `secret`.
fn windows(secret: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    chars.windows(width.min(chars.len())).map(|w| w.iter().collect()).collect()
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let options = MeshOptions {
        env: vec![
            ("VALORA_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info,valora=debug,valora_gateway=debug,valora_mesh=debug,valora_auth=debug,valora_marketplace=debug".into()),
        ],
        ..Default::default()
    };
    let mesh = DevMesh::start(options).await;
    let mut auth = mesh.auth_client(KEY, None).await;
    auth.register(RegisterRequest { email: "ada@example.com".into(), password: PASSWORD.into(), display_name: "Ada".into() })
        .await
        .unwrap();
    // A failed login with a different secret-looking password, too.
    let wrong = "tangerine-walrus-misses-the-bus";
    let _ = auth.login(LoginRequest { email: "ada@example.com".into(), password: wrong.into() }).await;
    let session = auth.login(LoginRequest { email: "ada@example.com".into(), password: PASSWORD.into() }).await.unwrap().into_inner();
    let refreshed = auth
        .refresh_token(RefreshTokenRequest { refresh_token: session.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner();
    let _ = auth.refresh_token(RefreshTokenRequest { refresh_token: session.refresh_token.clone() }).await;
    let mut as_ada = mesh.auth_client(KEY, Some(&refreshed.access_token)).await;
    let _ = as_ada.create_api_key(CreateApiKeyRequest { name: "ci".into(), scopes: vec!["marketplace:write".into()], ttl: None }).await;
    let mut as_ada = mesh.auth_client(KEY, Some(&session.access_token)).await;
    let key = as_ada
        .create_api_key(CreateApiKeyRequest { name: "ci".into(), scopes: vec!["marketplace:write".into()], ttl: None })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let mut market = mesh.client(&key).await;
    market
        .create_listing(CreateListingRequest {
            title: "Logged".into(),
            description: String::new(),
            category: "home".into(),
            price: Some(Money { currency_code: "EUR".into(), amount_minor: 1 }),
        })
        .await
        .unwrap();
    // Wrong keys, including a near miss of a real one.
    let near_miss = format!("{}0", &key[..key.len() - 1]);
    for bad in [near_miss.as_str(), "x-definitely-wrong-key-0123456789abcdef"] {
        let _ = mesh.client(bad).await.list_listings(ListListingsRequest::default()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pepper = std::fs::read_to_string(mesh.layout.state_dir().join("auth-pepper")).unwrap();

    let logs = mesh.logs();
    assert!(logs.contains("\"target\":\"valora::audit\""), "the run logged no audit events");
    assert!(logs.contains("\"target\":\"valora::access\""), "the run logged no access lines");
    let secret_part = |key: &str| key.split('_').nth(2).unwrap_or(key).to_owned();
    let signature = |jwt: &str| jwt.rsplit('.').next().unwrap().to_owned();
    let secrets = [
        ("static API key", KEY.to_owned()),
        ("issued API key secret", secret_part(&key)),
        ("near miss of the key", secret_part(&near_miss)),
        ("password", PASSWORD.to_owned()),
        ("wrong password", wrong.to_owned()),
        ("refresh token", session.refresh_token.clone()),
        ("rotated refresh token", refreshed.refresh_token.clone()),
        ("access token signature", signature(&session.access_token)),
        ("pepper", pepper.trim().to_owned()),
    ];
    for (what, secret) in secrets {
        for part in windows(&secret, 12) {
            assert!(!logs.contains(&part), "a part of the {what} ({part}) appears in the logs");
        }
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls() {
    let options = MeshOptions {
        env: vec![("VALORA_SHUTDOWN_DELAY_SECONDS".into(), "2".into()), ("VALORA_DRAIN_SECONDS".into(), "5".into())],
        ..Default::default()
    };
    let mut mesh = DevMesh::start(options).await;
    let mut watcher = mesh.client(KEY).await;
    let mut stream = watcher.watch_listing_events(WatchListingEventsRequest::default()).await.unwrap().into_inner();

    let (ok, failed_after_accept) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = mesh.client(KEY).await;
    let load = {
        let (ok, failed) = (ok.clone(), failed_after_accept.clone());
        tokio::spawn(async move {
            let mut client = client;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(8) {
                match client.list_listings(ListListingsRequest::default()).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    // A transport error (refused, reset, GOAWAY) means the
                    // server never accepted the call: the listener is
                    // closed. A status the server sent means an accepted
                    // call failed.
                    Err(status) if std::error::Error::source(&status).is_some() => break,
                    Err(status) => {
                        eprintln!("accepted call failed: {status:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    mesh.signal_term();

    // Health turns NOT_SERVING while the edge still accepts.
    let mut not_serving = false;
    while signalled.elapsed() < Duration::from_millis(1800) {
        if mesh.edge_health("").await == Some(2) {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(not_serving, "health never turned NOT_SERVING before the listener closed");

    // The open stream ends with a status telling the client to reconnect.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream did not end");
    let status = ended.expect_err("the stream ended without a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let exit = tokio::task::spawn_blocking(move || {
        let status = mesh.wait_exit(Duration::from_secs(15));
        (status, mesh)
    })
    .await
    .unwrap();
    let (status, mesh) = exit;
    let status = status.expect("the process did not exit within its drain bound");
    assert!(status.success(), "exit status {status}: {}", mesh.logs());
    assert!(signalled.elapsed() < Duration::from_secs(10), "exit took {:?}", signalled.elapsed());
    load.await.unwrap();
    assert!(ok.load(Ordering::Relaxed) > 10, "too few calls to mean anything");
    assert_eq!(failed_after_accept.load(Ordering::Relaxed), 0);
}
