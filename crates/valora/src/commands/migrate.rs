//! `valora migrate`.

use anyhow::Context as _;
use sea_orm::{ConnectOptions, Database};
use valora_migrations::MigratorTrait;
use valora_migrations::auth::AuthMigrator;
use valora_migrations::marketplace::MarketplaceMigrator;

use crate::cli::{MigrateArgs, MigrationTarget};
use crate::settings::{SettingError, database_url};

pub(crate) async fn run(args: &MigrateArgs) -> anyhow::Result<()> {
    let (url, setting) = match (&args.database_url, args.service) {
        (Some(url), _) => (url.clone(), "VALORA_MIGRATE_DATABASE_URL (--database-url)"),
        (None, target) => {
            let (url, setting) = match target {
                MigrationTarget::Marketplace => (&args.marketplace_database_url, "MARKETPLACE_DATABASE_URL"),
                MigrationTarget::Auth => (&args.auth_database_url, "AUTH_DATABASE_URL"),
            };
            let url = url.clone().ok_or_else(|| {
                SettingError::new(setting, "is not set", "set it or pass --database-url with an owner role")
            })?;
            (url, setting)
        }
    };
    let url = database_url(setting, &url)?;
    migrate(args.service, &url).await?;
    println!("{:?} migrations applied", args.service);
    Ok(())
}

/// Names of `service`'s migrations not yet applied on `db`; all of them when
/// its migration table cannot be read (a new database).
async fn pending(service: MigrationTarget, db: &sea_orm::DatabaseConnection) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let (table, all): (&str, Vec<String>) = match service {
        MigrationTarget::Marketplace => (
            "marketplace_migrations",
            MarketplaceMigrator::migrations().iter().map(|m| m.name().to_owned()).collect(),
        ),
        MigrationTarget::Auth => (
            "auth_migrations",
            AuthMigrator::migrations().iter().map(|m| m.name().to_owned()).collect(),
        ),
    };
    let query = Statement::from_string(db.get_database_backend(), format!("SELECT version FROM {table}"));
    let applied: Vec<String> = match db.query_all_raw(query).await {
        Ok(rows) => rows.iter().filter_map(|r| r.try_get::<String>("", "version").ok()).collect(),
        Err(_) => return all,
    };
    all.into_iter().filter(|name| !applied.contains(name)).collect()
}

/// Applies pending migrations only when there are some, so that a service
/// role without DDL rights can start on a migrated database.
pub(crate) async fn migrate_if_pending(service: MigrationTarget, url: &str) -> anyhow::Result<()> {
    let db = connect(url).await?;
    let missing = pending(service, &db).await;
    db.close().await.ok();
    if missing.is_empty() {
        return Ok(());
    }
    migrate(service, url).await
}

/// Fails when `service`'s schema on `url` lacks migrations.
pub(crate) async fn ensure_migrated(service: MigrationTarget, url: &str, setting: &str) -> anyhow::Result<()> {
    let db = connect(url).await.with_context(|| format!("{setting}: cannot use the database"))?;
    let missing = pending(service, &db).await;
    db.close().await.ok();
    if missing.is_empty() {
        return Ok(());
    }
    Err(SettingError::new(
        setting,
        format!("names a database without the migrations {}", missing.join(", ")),
        format!("run `valora migrate {}` with the owner role first", match service {
            MigrationTarget::Marketplace => "marketplace",
            MigrationTarget::Auth => "auth",
        }),
    )
    .into())
}

async fn connect(url: &str) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false);
    Database::connect(options).await.context("cannot connect to the database")
}

/// Applies every pending migration of `service` on `url`.
pub(crate) async fn migrate(service: MigrationTarget, url: &str) -> anyhow::Result<()> {
    // Statement logging (off in `connect`) would put SQL into the log.
    let db = connect(url).await?;
    match service {
        MigrationTarget::Marketplace => MarketplaceMigrator::up(&db, None).await,
        MigrationTarget::Auth => AuthMigrator::up(&db, None).await,
    }
    .context("migration failed")?;
    db.close().await.ok();
    Ok(())
}
