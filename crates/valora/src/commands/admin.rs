//! Operator commands on the auth database: `valora users …`,
//! `valora apikey …` and `valora auth new-signing-key`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use valora_auth::apikeys::{Pepper, display_prefix};
use valora_auth::domain::{ApiKeyInfo, Role, normalize_email};
use valora_auth::password::hasher::{Argon2Settings, Hasher};
use valora_auth::service::{Auth, AuthConfig};
use valora_auth::store::{self, Store};
use valora_auth::tokens::signing::{SigningKeys, write_new_key};

use crate::auth;
use crate::cli::{ApiKeyCommand, AuthDbArgs, MigrationTarget, UsersCommand};
use crate::settings::database_url;

/// An [`Auth`] for operator commands, which never sign tokens or hash
/// passwords. A pepper is needed only for key commands.
async fn operator_auth(db: &AuthDbArgs, needs_pepper: bool) -> anyhow::Result<Auth> {
    let url = database_url("AUTH_DATABASE_URL", &db.auth_database_url)?;
    let store = Store::connect(&url, Duration::from_secs(5))
        .await
        .context("AUTH_DATABASE_URL: cannot connect to the auth database")?;
    let pepper = if needs_pepper {
        auth::pepper(&db.pepper, None)?
    } else {
        Pepper::new(rand::random::<[u8; 32]>().to_vec()).context("pepper")?
    };
    let hasher = Hasher::new(Argon2Settings::default(), 1).context("hasher")?;
    Ok(Auth::new(store, hasher, SigningKeys::ephemeral()?, pepper, AuthConfig::default()))
}

pub(crate) async fn users(command: &UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Import { file, db } => {
            let auth = operator_auth(db, false).await?;
            let input = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            let report = valora_auth::import::import_csv(&auth, input).await?;
            for (line, reason) in &report.rejected {
                eprintln!("{}:{line}: {reason}", file.display());
            }
            println!("imported {} users, rejected {} lines", report.imported, report.rejected.len());
            Ok(())
        }
        UsersCommand::GrantAdmin { email, db } => {
            let auth = operator_auth(db, false).await?;
            auth.set_role(email, Role::Admin).await?;
            println!("{} is now an administrator", email.trim());
            Ok(())
        }
    }
}

fn print_key(key: &ApiKeyInfo) {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".to_owned(), |t| t.to_rfc3339());
    println!(
        "{}  {}  name={:?}  scopes={}  owner={}  expires={}  revoked={}",
        key.id,
        display_prefix(&key.id),
        key.name,
        key.scopes.join(","),
        key.owner_id.as_deref().unwrap_or("-"),
        time(key.expire_time),
        time(key.revoke_time),
    );
}

pub(crate) async fn apikey(command: &ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create { name, scopes, owner, ttl_seconds, db } => {
            let auth = operator_auth(db, true).await?;
            let owner_id = match owner {
                None => None,
                Some(email) => {
                    let normalized = normalize_email(email)?;
                    let (user, _) = store::user_by_email(auth.store().db(), &normalized)
                        .await?
                        .with_context(|| format!("no user with email {normalized}"))?;
                    Some(user.id)
                }
            };
            let ttl = ttl_seconds.map(Duration::from_secs);
            let created = auth.create_key_for(owner_id, name, scopes, ttl, true).await?;
            print_key(&created.info);
            println!("secret (shown once): {}", created.secret);
            Ok(())
        }
        ApiKeyCommand::List { db } => {
            let auth = operator_auth(db, false).await?;
            let mut after: Option<String> = None;
            loop {
                let page = auth.list_all_keys(after.as_deref(), 100).await?;
                page.iter().for_each(print_key);
                match page.last() {
                    Some(last) if page.len() == 100 => after = Some(last.id.clone()),
                    _ => return Ok(()),
                }
            }
        }
        ApiKeyCommand::Rotate { id, grace_seconds, db } => {
            let auth = operator_auth(db, true).await?;
            let rotated = auth.rotate_api_key(None, id, Some(Duration::from_secs(*grace_seconds))).await?;
            print_key(&rotated.info);
            println!("secret (shown once): {}", rotated.secret);
            Ok(())
        }
        ApiKeyCommand::Revoke { id, db } => {
            let auth = operator_auth(db, false).await?;
            let key = auth.revoke_api_key(None, id).await?;
            print_key(&key);
            Ok(())
        }
    }
}

pub(crate) fn new_signing_key(dir: &Path) -> anyhow::Result<()> {
    let path = write_new_key(dir)?;
    println!(
        "wrote {}; it signs new tokens once the auth service reloads the folder (within 10 seconds)",
        path.display()
    );
    Ok(())
}

pub(crate) async fn verify_audit(service: MigrationTarget, url: &str) -> anyhow::Result<()> {
    let url = database_url("--database-url", url)?;
    let prefix = match service {
        MigrationTarget::Marketplace => "marketplace",
        MigrationTarget::Auth => valora_auth::service::AUDIT_PREFIX,
    };
    let mut options = sea_orm::ConnectOptions::new(url);
    options.sqlx_logging(false);
    let db = sea_orm::Database::connect(options).await.context("cannot connect to the database")?;
    let report = valora_audit::verify(&db, prefix).await?;
    match report.problem {
        None => {
            println!("{prefix} audit trail intact: {} events, every link verified", report.rows);
            Ok(())
        }
        Some(problem) => anyhow::bail!("{prefix} audit trail broken: {problem}"),
    }
}
