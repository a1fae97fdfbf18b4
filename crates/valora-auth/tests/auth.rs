//! The auth service's domain and persistence against real databases:
//! SQLite always, PostgreSQL when reachable (and always in CI).

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use valora_auth::apikeys::Pepper;
use valora_auth::domain::AuthError;
use valora_auth::password::hasher::{Argon2Settings, Hasher};
use valora_auth::service::{Auth, AuthConfig};
use valora_auth::store::{self, Store};
use valora_auth::tokens::signing::{SigningKeys, write_new_key};
use valora_mesh::Principal;
use valora_mesh::apikey::KeyRejection;
use valora_mesh::principal::UserPrincipal;
use valora_migrations::MigratorTrait;
use valora_migrations::auth::AuthMigrator;

const PASSWORD: &str = "violet-otter-sings-at-dawn";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

struct TestDb {
    url: String,
    _dir: tempfile::TempDir,
    cleanup: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.cleanup.take() {
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                runtime.block_on(async {
                    let db = Database::connect(&admin).await.ok()?;
                    db.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()
                })
            })
            .join();
        }
    }
}

async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display());
    TestDb { url, _dir: dir, cleanup: None }
}

async fn postgres() -> Option<TestDb> {
    let admin = std::env::var("VALORA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let db = match Database::connect(&admin).await {
        Ok(db) => db,
        Err(error) => {
            assert!(!in_ci(), "PostgreSQL at {admin} is required in CI: {error}");
            eprintln!("skipping the PostgreSQL run: {error}");
            return None;
        }
    };
    let name = format!("valora_auth_{}", uuid::Uuid::new_v4().simple());
    db.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    Some(TestDb { url: format!("{base}/{name}"), _dir: tempfile::tempdir().unwrap(), cleanup: Some((admin, name)) })
}

fn cheap(memory_kib: u32) -> Argon2Settings {
    Argon2Settings { memory_kib, iterations: 1, parallelism: 1 }
}

async fn auth_with(db: &TestDb, argon2: Argon2Settings) -> Auth {
    let conn = Database::connect(&db.url).await.unwrap();
    AuthMigrator::up(&conn, None).await.unwrap();
    let store = Store::connect(&db.url, Duration::from_secs(3)).await.unwrap();
    let keys_dir = db._dir.path().join("signing");
    if !keys_dir.exists() {
        write_new_key(&keys_dir).unwrap();
    }
    let signing = SigningKeys::load(&keys_dir).unwrap();
    let pepper = Pepper::new(vec![9u8; 32]).unwrap();
    Auth::new(store, Hasher::new(argon2, 2).unwrap(), signing, pepper, AuthConfig::default())
}

async fn auth(db: &TestDb) -> Auth {
    auth_with(db, cheap(1024)).await
}

fn user_principal(id: &str, role: &str) -> Principal {
    Principal {
        key_id: "app".into(),
        key_owner: None,
        scopes: vec![],
        user: Some(UserPrincipal { id: id.into(), role: role.into() }),
    }
}

macro_rules! on_both {
    ($name:ident, $check:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let db = super::sqlite().await;
                super::$check(&db).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(db) = super::postgres().await else { return };
                super::$check(&db).await;
            }
        }
    };
}

on_both!(emails_are_unique_ignoring_case, unique_email_check);
on_both!(login_failures_look_alike, login_failure_check);
on_both!(failed_logins_are_throttled, throttle_check);
on_both!(outdated_hashes_upgrade_at_login, rehash_check);
on_both!(legacy_hashes_import_and_upgrade, legacy_check);
on_both!(refresh_reuse_revokes_the_session, refresh_check);
on_both!(password_change_ends_sessions, password_change_check);
on_both!(api_key_lifecycle, api_key_check);

async fn unique_email_check(db: &TestDb) {
    let auth = auth(db).await;
    auth.register("Ada@Example.com", PASSWORD, "Ada").await.unwrap();
    let error = auth.register("ada@EXAMPLE.com", PASSWORD, "Ada again").await.unwrap_err();
    assert!(matches!(error, AuthError::AlreadyExists(_)), "{error:?}");
}

async fn login_failure_check(db: &TestDb) {
    let auth = auth(db).await;
    auth.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    let unknown = auth.login("nobody@example.com", PASSWORD, "10.0.0.1").await.unwrap_err();
    let wrong = auth.login("ada@example.com", "not-the-password-at-all", "10.0.0.2").await.unwrap_err();
    assert_eq!(unknown.to_string(), wrong.to_string());
    assert!(matches!(unknown, AuthError::Unauthenticated(_)));
    // The byte cap applies before anything else, on login too.
    let huge = "x".repeat(5000);
    let error = auth.login("ada@example.com", &huge, "10.0.0.3").await.unwrap_err();
    assert!(matches!(error, AuthError::Invalid(_)), "{error:?}");
    let session = auth.login("ADA@example.com", PASSWORD, "10.0.0.4").await.unwrap();
    assert_eq!(session.user.email, "ada@example.com");
}

async fn throttle_check(db: &TestDb) {
    let auth = auth(db).await;
    auth.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    for _ in 0..5 {
        let error = auth.login("ada@example.com", "wrong-password-guess", "10.9.9.9").await.unwrap_err();
        assert!(matches!(error, AuthError::Unauthenticated(_)), "{error:?}");
    }
    let error = auth.login("ada@example.com", PASSWORD, "10.9.9.9").await.unwrap_err();
    let AuthError::Throttled(seconds) = error else { panic!("expected throttling, got {error:?}") };
    assert!(seconds > 0 && seconds <= 30, "{seconds}");
    // The real user, elsewhere, still signs in.
    auth.login("ada@example.com", PASSWORD, "192.0.2.1").await.expect("other address");
}

async fn stored_hash(auth: &Auth, email: &str) -> String {
    store::user_by_email(auth.store().db(), email).await.unwrap().unwrap().1
}

async fn rehash_check(db: &TestDb) {
    let old = auth_with(db, cheap(1024)).await;
    old.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    assert!(stored_hash(&old, "ada@example.com").await.contains("m=1024,"));
    let new = auth_with(db, cheap(2048)).await;
    new.login("ada@example.com", PASSWORD, "10.0.0.1").await.unwrap();
    assert!(stored_hash(&new, "ada@example.com").await.contains("m=2048,"));
}

async fn legacy_check(db: &TestDb) {
    let auth = auth(db).await;
    // Passlib pbkdf2_sha256 of "legacy-password-1" with 1000 rounds, made
    // with passlib 1.7.4; its salt and checksum contain '.' and '/'.
    let hash = python_passlib_hash("legacy-password-1", 1000);
    let Some(hash) = hash else { return };
    let csv = format!(
        "email,password_hash,display_name\nlegacy@example.com,{hash},Legacy\nbroken@example.com,$pbkdf2-sha256$0$abc$def,Broken\nlegacy2@example.com,{hash}\n"
    );
    let report = valora_auth::import::import_csv(&auth, csv.as_bytes()).await.unwrap();
    assert_eq!(report.imported, 2, "{:?}", report.rejected);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].0, 3, "line number of the bad row");
    assert!(!report.rejected[0].1.contains("$pbkdf2"), "the hash leaked into the report");

    auth.login("legacy@example.com", "legacy-password-1", "10.0.0.1").await.expect("legacy login");
    assert!(stored_hash(&auth, "legacy@example.com").await.starts_with("$argon2id$"));
    auth.login("legacy@example.com", "legacy-password-1", "10.0.0.1").await.expect("after upgrade");
    let error = auth.login("legacy2@example.com", "wrong-legacy-password", "10.0.0.2").await.unwrap_err();
    assert!(matches!(error, AuthError::Unauthenticated(_)));
}

/// Hashes with Python's passlib; `None` (outside CI) when it is missing.
fn python_passlib_hash(password: &str, rounds: u32) -> Option<String> {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; from passlib.hash import pbkdf2_sha256 as h; print(h.using(rounds=int(sys.argv[2])).hash(sys.argv[1]))"])
        .args([password, &rounds.to_string()])
        .output();
    match output {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        _ => {
            assert!(!in_ci(), "python3 with passlib is required in CI");
            eprintln!("skipping: python3 with passlib is not installed");
            None
        }
    }
}

async fn refresh_check(db: &TestDb) {
    let auth = auth(db).await;
    auth.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    let first = auth.login("ada@example.com", PASSWORD, "10.0.0.1").await.unwrap();
    let second = auth.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    // The first token again: reuse, so the whole family dies.
    let reuse = auth.refresh(&first.refresh_token).await.unwrap_err();
    assert!(matches!(reuse, AuthError::Unauthenticated(_)), "{reuse:?}");
    let after = auth.refresh(&second.refresh_token).await.unwrap_err();
    assert!(matches!(after, AuthError::Unauthenticated(_)), "the newer token survived reuse: {after:?}");
    // Logout revokes.
    let third = auth.login("ada@example.com", PASSWORD, "10.0.0.1").await.unwrap();
    auth.logout(&third.refresh_token).await.unwrap();
    assert!(auth.refresh(&third.refresh_token).await.is_err());
}

async fn password_change_check(db: &TestDb) {
    let auth = auth(db).await;
    let user = auth.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    let session = auth.login("ada@example.com", PASSWORD, "10.0.0.1").await.unwrap();
    let wrong = auth.change_password(&user.id, "not-the-current-one", "amber-heron-glides-slowly", "10.0.0.1").await.unwrap_err();
    assert!(matches!(wrong, AuthError::Invalid(_)), "{wrong:?}");
    let weak = auth.change_password(&user.id, PASSWORD, "passwordpassword", "10.0.0.1").await.unwrap_err();
    assert!(matches!(weak, AuthError::Invalid(_)), "{weak:?}");
    auth.change_password(&user.id, PASSWORD, "amber-heron-glides-slowly", "10.0.0.1").await.unwrap();
    assert!(auth.refresh(&session.refresh_token).await.is_err(), "old session survived a password change");
    assert!(auth.login("ada@example.com", PASSWORD, "10.0.0.1").await.is_err());
    auth.login("ada@example.com", "amber-heron-glides-slowly", "10.0.0.1").await.unwrap();
}

async fn api_key_check(db: &TestDb) {
    let auth = auth(db).await;
    let owner = auth.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    let ada = user_principal(&owner.id, "USER");
    let scopes = vec!["marketplace:read".to_owned()];
    let created = auth.create_api_key(&ada, "ci", &scopes, None).await.unwrap();
    let verdict = auth.verify_api_key(&created.secret).await.unwrap();
    assert_eq!(verdict.info.owner_id.as_deref(), Some(owner.id.as_str()));
    assert_eq!(verdict.principal().scopes, scopes);

    // Users may not grant themselves admin.
    let error = auth.create_api_key(&ada, "root", &["admin".to_owned()], None).await.unwrap_err();
    assert!(matches!(error, AuthError::PermissionDenied(_)), "{error:?}");
    // Someone else's key is not found, exactly like a missing one.
    let other = user_principal("someone-else", "USER");
    let error = auth.revoke_api_key(Some(&other), &created.info.id).await.unwrap_err();
    assert!(matches!(error, AuthError::NotFound(_)), "{error:?}");

    // Rotation: both keys work during the grace period, then only the new one.
    let rotated = auth.rotate_api_key(Some(&ada), &created.info.id, Some(Duration::from_secs(1))).await.unwrap();
    auth.verify_api_key(&created.secret).await.expect("old key within grace");
    auth.verify_api_key(&rotated.secret).await.expect("new key");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(auth.verify_api_key(&created.secret).await.unwrap_err(), KeyRejection::Expired);
    let again = auth.rotate_api_key(Some(&ada), &created.info.id, None).await.unwrap_err();
    assert!(matches!(again, AuthError::FailedPrecondition(_)), "{again:?}");

    auth.revoke_api_key(Some(&ada), &rotated.info.id).await.unwrap();
    assert_eq!(auth.verify_api_key(&rotated.secret).await.unwrap_err(), KeyRejection::Revoked);

    // Typos fail the checksum; a well-formed unknown key is unknown.
    let mut typo = rotated.secret.clone();
    typo.replace_range(30..31, if &typo[30..31] == "a" { "b" } else { "a" });
    assert_eq!(auth.verify_api_key(&typo).await.unwrap_err(), KeyRejection::Unknown);

    let listed = auth.list_api_keys(&ada, None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|k| k.owner_id.as_deref() == Some(owner.id.as_str())));

    // Every step left a verifiable audit trail, secrets excluded.
    let report = valora_audit::verify(auth.store().db(), "auth").await.unwrap();
    assert_eq!(report.problem, None);
    let actions: Vec<String> = sea_orm::ConnectionTrait::query_all_raw(
        auth.store().db(),
        sea_orm::Statement::from_string(auth.store().db().get_database_backend(), "SELECT action || ':' || outcome || ':' || details AS a FROM auth_audit_events ORDER BY seq"),
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get::<String>("", "a").unwrap())
    .collect();
    for expected in ["user.register:success", "apikey.create:success", "apikey.rotate:success", "apikey.revoke:success", "apikey.verify:failure"] {
        assert!(actions.iter().any(|a| a.starts_with(expected)), "{expected} missing from {actions:?}");
    }
    let all = actions.join(" ");
    assert!(!all.contains(&created.secret[21..]) && !all.contains(&rotated.secret[21..]), "a key secret reached the audit trail");
}
