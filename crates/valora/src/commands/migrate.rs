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

/// Applies every pending migration of `service` on `url`.
pub(crate) async fn migrate(service: MigrationTarget, url: &str) -> anyhow::Result<()> {
    let mut options = ConnectOptions::new(url.to_owned());
    // Statement logging would put SQL into the service's log stream.
    options.sqlx_logging(false);
    let db = Database::connect(options).await.context("cannot connect to the database")?;
    match service {
        MigrationTarget::Marketplace => MarketplaceMigrator::up(&db, None).await,
        MigrationTarget::Auth => AuthMigrator::up(&db, None).await,
    }
    .context("migration failed")?;
    db.close().await.ok();
    Ok(())
}
