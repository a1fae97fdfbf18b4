//! The hash-chained audit trail.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        valora_audit::create_tables(manager.get_connection(), "marketplace").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        valora_audit::drop_tables(manager.get_connection(), "marketplace").await
    }
}
