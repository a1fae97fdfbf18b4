//! Database migrations, one migrator per service.
//!
//! Each service owns its tables and records its applied migrations in its
//! own table (`marketplace_migrations`, `auth_migrations`), so both can
//! share one database in development without seeing each other's history.

pub mod auth;
pub mod marketplace;

pub use sea_orm_migration::{MigrationName, MigratorTrait};
