//! Migrations of the auth service.

mod m0001_users_tokens_keys;
mod m0002_audit_trail;

use sea_orm_migration::prelude::*;

/// Applies the auth service's migrations.
pub struct AuthMigrator;

#[async_trait::async_trait]
impl MigratorTrait for AuthMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m0001_users_tokens_keys::Migration), Box::new(m0002_audit_trail::Migration)]
    }

    fn migration_table_name() -> DynIden {
        "auth_migrations".into_iden()
    }
}
