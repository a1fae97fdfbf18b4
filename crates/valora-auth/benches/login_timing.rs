//! Login timing: an unknown email against a wrong password, with the
//! shipped argon2id parameters, on SQLite. Both must cost one argon2id
//! verification, so the ratio of their medians should be close to 1.
//!
//! Run with `cargo bench -p valora-auth --bench login_timing`. It prints
//! figures; it asserts nothing about time.

use std::time::{Duration, Instant};

use sea_orm::Database;
use valora_auth::apikeys::Pepper;
use valora_auth::password::hasher::{Argon2Settings, Hasher};
use valora_auth::service::{Auth, AuthConfig};
use valora_auth::store::Store;
use valora_auth::tokens::signing::SigningKeys;
use valora_migrations::MigratorTrait;
use valora_migrations::auth::AuthMigrator;

const ROUNDS: usize = 20;
const PASSWORD: &str = "violet-otter-sings-at-dawn";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display());
    let db = Database::connect(&url).await.expect("database");
    AuthMigrator::up(&db, None).await.expect("migrations");
    let store = Store::connect(&url, Duration::from_secs(5)).await.expect("store");
    let hasher = Hasher::new(Argon2Settings::default(), 1).expect("hasher");
    let signing = SigningKeys::ephemeral().expect("signing key");
    let pepper = Pepper::new(vec![1u8; 32]).expect("pepper");
    let auth = Auth::new(store, hasher, signing, pepper, AuthConfig::default());

    for n in 0..ROUNDS {
        auth.register(&format!("user{n}@example.com"), PASSWORD, "").await.expect("register");
    }
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    // Interleaved, each attempt from its own address and account, so that
    // neither throttling nor warm-up favours one side.
    for n in 0..ROUNDS {
        let start = Instant::now();
        let _ = auth.login(&format!("nobody{n}@example.com"), PASSWORD, &format!("10.1.0.{n}")).await;
        unknown.push(start.elapsed());
        let start = Instant::now();
        let _ = auth.login(&format!("user{n}@example.com"), "not-the-password-at-all", &format!("10.2.0.{n}")).await;
        wrong.push(start.elapsed());
    }
    let (unknown, wrong) = (median(unknown), median(wrong));
    println!("login timing, {ROUNDS} interleaved rounds, argon2id m=19456 KiB t=2 p=1");
    println!("  unknown email   median {:>8.2} ms", unknown.as_secs_f64() * 1e3);
    println!("  wrong password  median {:>8.2} ms", wrong.as_secs_f64() * 1e3);
    println!("  ratio unknown/wrong     {:>8.3}", unknown.as_secs_f64() / wrong.as_secs_f64());
}
