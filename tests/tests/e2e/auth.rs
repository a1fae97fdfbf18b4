//! The auth service through the edge: sessions, bearer-token attacks,
//! signing key rotation, API key lifecycle with grpcurl, roles, throttling
//! and legacy import.

use std::process::Command;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tonic::Code;
use valora_proto::auth::v1::{LoginRequest, LoginResponse, RefreshTokenRequest, RegisterRequest};
use valora_proto::marketplace::v1::{
    ArchiveListingRequest, CreateListingRequest, ListListingsRequest, Money, UpdateListingRequest,
};

use crate::support::{DevMesh, KEY, MeshOptions, run_valora, tool};

const PASSWORD: &str = "violet-otter-sings-at-dawn";

async fn sign_up(mesh: &DevMesh, email: &str) -> LoginResponse {
    let mut auth = mesh.auth_client(KEY, None).await;
    auth.register(RegisterRequest { email: email.into(), password: PASSWORD.into(), display_name: String::new() })
        .await
        .expect("register");
    auth.login(LoginRequest { email: email.into(), password: PASSWORD.into() })
        .await
        .expect("login")
        .into_inner()
}

fn signing_key_pem(mesh: &DevMesh) -> Vec<u8> {
    let dir = mesh.layout.state_dir().join("signing-keys");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    std::fs::read(files.last().unwrap()).unwrap()
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn sign(mesh: &DevMesh, kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(&signing_key_pem(mesh)).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn bearer_token_attacks_are_unauthenticated() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let session = sign_up(&mesh, "ada@example.com").await;
    let user_id = session.user.as_ref().unwrap().id.clone();
    let kid = kid(&session.access_token);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = |overrides: Value| {
        let mut claims = json!({
            "iss": "valora-auth", "aud": "valora", "sub": user_id, "exp": now + 600,
            "iat": now, "nbf": now, "jti": "test", "role": "USER",
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };
    let valid = sign(&mesh, &kid, &claims(json!({})));
    let (header, payload, signature) = {
        let parts: Vec<&str> = valid.split('.').collect();
        (parts[0].to_owned(), parts[1].to_owned(), parts[2].to_owned())
    };
    let none_alg = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})), payload);
    let hs256 = {
        // HMAC keyed with the public key: the classic algorithm confusion.
        let jwks: Value = serde_json::from_str(&reqwest_jwks(&mesh).await).unwrap();
        let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &claims(json!({})), &EncodingKey::from_secret(x.as_bytes()).unwrap()).unwrap()
    };
    let tampered = format!("{header}.{}.{signature}", b64(&claims(json!({"role": "ADMIN"}))));
    let cases = [
        ("alg none", format!("Bearer {none_alg}")),
        ("HS256 with the public key", format!("Bearer {hs256}")),
        ("tampered payload", format!("Bearer {tampered}")),
        ("missing exp", format!("Bearer {}", sign(&mesh, &kid, &claims(json!({"exp": null}))))),
        ("expired", format!("Bearer {}", sign(&mesh, &kid, &claims(json!({"exp": now - 120}))))),
        ("wrong issuer", format!("Bearer {}", sign(&mesh, &kid, &claims(json!({"iss": "evil"}))))),
        ("wrong audience", format!("Bearer {}", sign(&mesh, &kid, &claims(json!({"aud": "other"}))))),
        ("unknown key id", format!("Bearer {}", sign(&mesh, "unknown-kid", &claims(json!({}))))),
        ("garbage", "Bearer not.a.token".to_owned()),
        ("other scheme", format!("Basic {valid}")),
    ];
    for (case, authorization) in cases {
        let mut client = mesh.client(KEY).await;
        let mut request = tonic::Request::new(ListListingsRequest::default());
        request.metadata_mut().insert("authorization", authorization.parse().unwrap());
        let status = client.list_listings(request).await.expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert_eq!(status.message(), "invalid bearer token", "{case}");
    }
    let mut client = mesh.user_client(KEY, &valid).await;
    client.list_listings(ListListingsRequest::default()).await.expect("a valid token");
}

async fn reqwest_jwks(mesh: &DevMesh) -> String {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let uri = format!("http://{}/.well-known/jwks.json", mesh.edge()).parse().unwrap();
    let response = client.get(uri).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn refresh_reuse_ends_the_session_through_the_edge() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let first = sign_up(&mesh, "ada@example.com").await;
    let mut auth = mesh.auth_client(KEY, None).await;
    let second = auth
        .refresh_token(RefreshTokenRequest { refresh_token: first.refresh_token.clone() })
        .await
        .expect("refresh")
        .into_inner();
    let reuse = auth.refresh_token(RefreshTokenRequest { refresh_token: first.refresh_token }).await.unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    let status = auth.refresh_token(RefreshTokenRequest { refresh_token: second.refresh_token }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "the session survived reuse");
    assert!(mesh.logs().contains("refresh token reused"), "no security event logged");
}

#[tokio::test]
async fn signing_key_rotation_keeps_old_tokens_valid() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let old = sign_up(&mesh, "ada@example.com").await;
    let old_kid = kid(&old.access_token);
    let dir = mesh.layout.state_dir().join("signing-keys");
    let output = run_valora(&["auth", "new-signing-key", "--dir", &dir.display().to_string()], &[], mesh.layout.dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // The auth service picks the new key up within its reload interval.
    let mut auth = mesh.auth_client(KEY, None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let session = auth
            .login(LoginRequest { email: "ada@example.com".into(), password: PASSWORD.into() })
            .await
            .unwrap()
            .into_inner();
        if kid(&session.access_token) != old_kid {
            break session;
        }
        assert!(Instant::now() < deadline, "the new signing key was never used");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (which, token) in [("old", &old.access_token), ("new", &new.access_token)] {
        let mut client = mesh.user_client(KEY, token).await;
        client.list_listings(ListListingsRequest::default()).await.unwrap_or_else(|s| panic!("{which} token: {s:?}"));
    }
    let jwks = reqwest_jwks(&mesh).await;
    assert!(jwks.contains(&old_kid) && jwks.contains(&kid(&new.access_token)), "{jwks}");
}

/// Runs grpcurl through the edge with a key and optional bearer token.
fn grpcurl(mesh: &DevMesh, key: &str, bearer: Option<&str>, body: &str, method: &str) -> Result<Value, String> {
    let binary = tool("grpcurl").expect("grpcurl");
    let mut command = Command::new(binary);
    command.args(["-plaintext", "-H", &format!("x-api-key: {key}")]);
    if let Some(token) = bearer {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let output = command.args(["-d", body]).arg(mesh.edge()).arg(method).output().unwrap();
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).unwrap_or(Value::Null))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

async fn wait_until_rejected(mesh: &DevMesh, key: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        match grpcurl(mesh, key, None, "{}", "valora.marketplace.v1.MarketplaceService/ListListings") {
            Err(error) => return error,
            Ok(_) => {
                assert!(Instant::now() < deadline, "the key still worked after {within:?}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

#[tokio::test]
async fn api_key_lifecycle_with_grpcurl() {
    if tool("grpcurl").is_none() {
        return;
    }
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let session = sign_up(&mesh, "ada@example.com").await;
    let token = session.access_token.as_str();
    let auth = "valora.auth.v1.AuthService";
    let list = "valora.marketplace.v1.MarketplaceService/ListListings";

    let created = grpcurl(&mesh, KEY, Some(token), r#"{"name": "ci", "scopes": ["marketplace:read"]}"#, &format!("{auth}/CreateApiKey")).unwrap();
    let first = created["secret"].as_str().unwrap().to_owned();
    let first_id = created["apiKey"]["id"].as_str().unwrap().to_owned();
    assert!(first.starts_with("vlk_"), "{first}");
    grpcurl(&mesh, &first, None, "{}", list).expect("the new key works");

    // The secret is never shown again.
    let listed = grpcurl(&mesh, KEY, Some(token), "{}", &format!("{auth}/ListApiKeys")).unwrap();
    assert!(!listed.to_string().contains(&first[20..]), "a secret appeared in ListApiKeys");

    let rotated = grpcurl(&mesh, KEY, Some(token), &format!(r#"{{"id": "{first_id}", "grace_period": "3s"}}"#), &format!("{auth}/RotateApiKey")).unwrap();
    let second = rotated["secret"].as_str().unwrap().to_owned();
    let second_id = rotated["apiKey"]["id"].as_str().unwrap().to_owned();
    grpcurl(&mesh, &first, None, "{}", list).expect("the old key works during the grace period");
    grpcurl(&mesh, &second, None, "{}", list).expect("the successor works");
    let error = wait_until_rejected(&mesh, &first, Duration::from_secs(15)).await;
    assert!(error.contains("Unauthenticated"), "{error}");

    grpcurl(&mesh, KEY, Some(token), &format!(r#"{{"id": "{second_id}"}}"#), &format!("{auth}/RevokeApiKey")).unwrap();
    let revoked_at = Instant::now();
    let error = wait_until_rejected(&mesh, &second, Duration::from_secs(10)).await;
    assert!(error.contains("Unauthenticated"), "{error}");
    assert!(revoked_at.elapsed() <= Duration::from_secs(7), "revocation took {:?}", revoked_at.elapsed());
    assert!(!mesh.logs().contains(&second), "a key reached the log");
}

#[tokio::test]
async fn listings_belong_to_users_and_admins_override() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let ada = sign_up(&mesh, "ada@example.com").await;
    let bob = sign_up(&mesh, "bob@example.com").await;
    let mut as_ada = mesh.user_client(KEY, &ada.access_token).await;
    let listing = as_ada
        .create_listing(CreateListingRequest {
            title: "Ada's lamp".into(),
            description: String::new(),
            category: "home".into(),
            price: Some(Money { currency_code: "EUR".into(), amount_minor: 100 }),
        })
        .await
        .unwrap()
        .into_inner()
        .listing
        .unwrap();
    assert_eq!(listing.seller_id, ada.user.as_ref().unwrap().id);

    // Bob cannot even see Ada's draft.
    let mut as_bob = mesh.user_client(KEY, &bob.access_token).await;
    let mut update = UpdateListingRequest {
        listing: Some(valora_proto::marketplace::v1::Listing { id: listing.id.clone(), title: "Mine now".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["title".into()] }),
        version: 1,
    };
    let status = as_bob.update_listing(update.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // An administrator may.
    let output = run_valora(
        &["users", "grant-admin", "bob@example.com"],
        &[("AUTH_DATABASE_URL", &mesh.auth_database_url())],
        mesh.layout.dir.path(),
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut auth = mesh.auth_client(KEY, None).await;
    let admin = auth
        .login(LoginRequest { email: "bob@example.com".into(), password: PASSWORD.into() })
        .await
        .unwrap()
        .into_inner();
    let mut as_admin = mesh.user_client(KEY, &admin.access_token).await;
    update.version = 1;
    as_admin.update_listing(update).await.expect("admin update");
    as_admin.archive_listing(ArchiveListingRequest { id: listing.id }).await.expect("admin archive");
}

#[tokio::test]
async fn failed_logins_are_throttled_at_the_edge() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    sign_up(&mesh, "ada@example.com").await;
    let mut auth = mesh.auth_client(KEY, None).await;
    let attempt = |password: &str| LoginRequest { email: "ada@example.com".into(), password: password.into() };
    for _ in 0..5 {
        let status = auth.login(attempt("wrong-password-guess")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "invalid email or password");
    }
    let status = auth.login(attempt(PASSWORD)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry: u64 = status.metadata().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // Unknown emails get the same answer as wrong passwords.
    let status = auth.login(LoginRequest { email: "nobody@example.com".into(), password: PASSWORD.into() }).await.unwrap_err();
    assert_eq!(status.message(), "invalid email or password");
}

#[tokio::test]
async fn legacy_users_import_and_sign_in() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let hash = Command::new("python3")
        .args(["-c", "from passlib.hash import pbkdf2_sha256 as h; print(h.using(rounds=2000).hash('old-system-password-1'))"])
        .output();
    let hash = match hash {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => {
            assert!(!crate::support::in_ci(), "python3 with passlib is required in CI");
            return;
        }
    };
    let csv = mesh.layout.dir.path().join("users.csv");
    std::fs::write(
        &csv,
        format!("email,password_hash,display_name\nold@example.com,{hash},Old\nbad@example.com,$pbkdf2-sha256$99999999999$x$y,Bad\n"),
    )
    .unwrap();
    let output = run_valora(
        &["users", "import", &csv.display().to_string()],
        &[("AUTH_DATABASE_URL", &mesh.auth_database_url())],
        mesh.layout.dir.path(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("imported 1 users, rejected 1 lines"));
    assert!(stderr.contains("users.csv:3:"), "{stderr}");

    let mut auth = mesh.auth_client(KEY, None).await;
    auth.login(LoginRequest { email: "old@example.com".into(), password: "old-system-password-1".into() })
        .await
        .expect("legacy password signs in");
    assert!(mesh.logs().contains("password hash upgraded"), "{}", mesh.logs());
}
