//! The services run with least-privilege PostgreSQL roles, and the audit
//! trail detects rows edited or deleted behind their back.

use valora_proto::auth::v1::{CreateApiKeyRequest, LoginRequest, RegisterRequest};
use valora_proto::marketplace::v1::{
    CreateListingRequest, CreatePlanRequest, Money, PublishListingRequest, RotatePlanRequest,
};

use crate::postgres::{PgOptions, PrivatePostgres};
use crate::support::{DevMesh, KEY, MeshOptions, repo_root, run_valora};

const PASSWORD: &str = "violet-otter-sings-at-dawn";

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money { currency_code: "EUR".into(), amount_minor })
}

/// Runs the key flows of both services through the edge.
async fn key_flows(mesh: &DevMesh) {
    let mut auth = mesh.auth_client(KEY, None).await;
    auth.register(RegisterRequest { email: "ada@example.com".into(), password: PASSWORD.into(), display_name: "Ada".into() })
        .await
        .expect("register");
    let session = auth
        .login(LoginRequest { email: "ada@example.com".into(), password: PASSWORD.into() })
        .await
        .expect("login")
        .into_inner();
    let mut as_ada = mesh.auth_client(KEY, Some(&session.access_token)).await;
    let key = as_ada
        .create_api_key(CreateApiKeyRequest { name: "ci".into(), scopes: vec!["marketplace:write".into()], ttl: None })
        .await
        .expect("create key")
        .into_inner();

    let mut market = mesh.user_client(&key.secret, &session.access_token).await;
    let listing = market
        .create_listing(CreateListingRequest { title: "Lamp".into(), description: String::new(), category: "home".into(), price: eur(100) })
        .await
        .expect("create listing")
        .into_inner()
        .listing
        .unwrap();
    let plan = market
        .create_plan(CreatePlanRequest { listing_id: listing.id.clone(), name: "Buy".into(), price: eur(100), interval: 1 })
        .await
        .expect("create plan")
        .into_inner()
        .plan
        .unwrap();
    market.publish_listing(PublishListingRequest { id: listing.id }).await.expect("publish");
    market
        .rotate_plan(RotatePlanRequest { plan_id: plan.id, price: eur(90), ..Default::default() })
        .await
        .expect("rotate");
}

#[tokio::test]
async fn services_run_with_least_privilege_roles() {
    let Some(pg) = PrivatePostgres::create(PgOptions::default()) else { return };
    for statement in [
        "CREATE ROLE valora_owner LOGIN",
        "CREATE ROLE valora_marketplace LOGIN",
        "CREATE ROLE valora_auth LOGIN",
        "CREATE DATABASE valora OWNER valora_owner",
    ] {
        pg.psql("postgres", "postgres", statement).expect(statement);
    }
    let url = |role: &str| format!("postgres://{role}@127.0.0.1:{}/valora", pg.port);
    let work = tempfile::tempdir().unwrap();
    for service in ["marketplace", "auth"] {
        let output = run_valora(&["migrate", service, "--database-url", &url("valora_owner")], &[], work.path());
        assert!(output.status.success(), "migrate {service}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let grants = repo_root().join("docs/sql/service-roles.sql");
    pg.psql("valora_owner", "valora", &format!("-f {}", grants.display())).expect("apply docs/sql/service-roles.sql");

    let options = MeshOptions {
        database_url: Some(url("valora_marketplace")),
        env: vec![("AUTH_DATABASE_URL".into(), url("valora_auth"))],
        ..Default::default()
    };
    let mesh = DevMesh::start(options).await;
    key_flows(&mesh).await;

    let refused = [
        ("valora_marketplace", "CREATE TABLE sneaky (id int)", "DDL"),
        ("valora_auth", "ALTER TABLE auth_users ADD COLUMN sneaky int", "DDL"),
        ("valora_marketplace", "SELECT count(*) FROM auth_users", "the other service's tables"),
        ("valora_auth", "SELECT count(*) FROM marketplace_listings", "the other service's tables"),
        ("valora_marketplace", "UPDATE marketplace_audit_events SET actor = 'mallory'", "rewriting audit rows"),
        ("valora_marketplace", "DELETE FROM marketplace_audit_events", "deleting audit rows"),
        ("valora_auth", "UPDATE auth_audit_events SET reason = 'none'", "rewriting audit rows"),
        ("valora_auth", "DELETE FROM auth_audit_events", "deleting audit rows"),
    ];
    for (role, statement, what) in refused {
        let error = pg.psql(role, "valora", statement).expect_err(&format!("{role} was allowed {what}: {statement}"));
        let refused = error.contains("permission denied") || error.contains("must be owner");
        assert!(refused, "{role}, {statement}: {error}");
    }
    // The services' own rights still work.
    assert!(pg.psql("valora_marketplace", "valora", "SELECT count(*) FROM marketplace_listings").is_ok());
    drop(mesh);

    // The trails verify; an edit and a deletion by a privileged hand are caught.
    let verify = |service: &str| run_valora(&["audit", "verify", service, "--database-url", &url("valora_owner")], &[], work.path());
    for service in ["marketplace", "auth"] {
        let output = verify(service);
        assert!(output.status.success(), "{service}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(String::from_utf8_lossy(&output.stdout).contains("intact"));
    }
    pg.psql("valora_owner", "valora", "UPDATE marketplace_audit_events SET actor = 'mallory' WHERE seq = 1").unwrap();
    let output = verify("marketplace");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("row 1 was altered"), "{}", String::from_utf8_lossy(&output.stderr));
    pg.psql("valora_owner", "valora", "DELETE FROM auth_audit_events WHERE seq = 2").unwrap();
    let output = verify("auth");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("row 2 is missing"), "{}", String::from_utf8_lossy(&output.stderr));
}
