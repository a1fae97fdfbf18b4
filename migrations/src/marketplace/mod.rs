//! Migrations of the marketplace service.

mod m0001_listings_and_plans;
mod m0002_audit_trail;
mod m0003_webhooks;

use sea_orm_migration::prelude::*;

/// Applies the marketplace service's migrations.
pub struct MarketplaceMigrator;

#[async_trait::async_trait]
impl MigratorTrait for MarketplaceMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m0001_listings_and_plans::Migration), Box::new(m0002_audit_trail::Migration), Box::new(m0003_webhooks::Migration)]
    }

    fn migration_table_name() -> DynIden {
        "marketplace_migrations".into_iden()
    }
}
