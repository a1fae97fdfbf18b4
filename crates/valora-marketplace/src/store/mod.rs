//! Persistence of listings and plans through sea-orm.
//!
//! Queries are generic over the connection, so the same code runs on the
//! pool and inside a transaction. Database errors become
//! [`MarketplaceError`]s here, with their meaning (unavailable, conflict)
//! decided once.

pub mod entity;
mod queries;

use std::time::Duration;

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr, SqlErr,
    TransactionTrait,
};

pub use queries::Visibility;

use crate::domain::MarketplaceError;

/// Pool settings of the marketplace database.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Maximum number of pooled connections (PostgreSQL).
    pub max_connections: u32,
    /// Maximum wait for a free connection; kept shorter than call deadlines
    /// so that an exhausted pool fails a call with UNAVAILABLE in time.
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self { max_connections: 16, acquire_timeout: Duration::from_secs(3) }
    }
}

/// The marketplace database.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

/// An open transaction; dropped without [`Tx::commit`], it rolls back.
pub struct Tx {
    txn: DatabaseTransaction,
    /// Audit events written in this transaction, logged once it commits.
    audited: std::sync::Mutex<Vec<valora_audit::Appended>>,
}

/// Prefix of the marketplace's audit tables.
pub const AUDIT_PREFIX: &str = "marketplace";

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://…`).
    ///
    /// SQLite runs with one connection in WAL mode, which serializes
    /// writers instead of failing them with "database is locked".
    pub async fn connect(url: &str, pool: &PoolOptions) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .acquire_timeout(pool.acquire_timeout)
            .connect_timeout(pool.acquire_timeout)
            .sqlx_logging(false);
        if url.starts_with("sqlite:") {
            options.max_connections(1).min_connections(1);
            options.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5))
            });
        } else {
            options.max_connections(pool.max_connections).min_connections(1);
        }
        Ok(Self { db: Database::connect(options).await? })
    }

    /// Wraps an existing connection.
    pub fn from_connection(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The underlying connection.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), MarketplaceError> {
        self.db.ping().await.map_err(db_error)
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx, MarketplaceError> {
        let txn = self.db.begin().await.map_err(db_error)?;
        Ok(Tx { txn, audited: std::sync::Mutex::default() })
    }
}

impl Tx {
    /// Commits the transaction, then logs its audit events.
    pub async fn commit(self) -> Result<(), MarketplaceError> {
        self.txn.commit().await.map_err(db_error)?;
        let audited = self.audited.into_inner().unwrap_or_else(|p| p.into_inner());
        audited.iter().for_each(valora_audit::log_committed);
        Ok(())
    }

    /// The transaction, for writes of other modules (the outbox).
    pub(crate) fn txn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Writes an audit event in this transaction.
    pub async fn audit(&self, event: valora_audit::AuditEvent) -> Result<(), MarketplaceError> {
        let appended = valora_audit::append(&self.txn, AUDIT_PREFIX, "marketplace", event)
            .await
            .map_err(|e| MarketplaceError::Internal(e.to_string()))?;
        self.audited.lock().unwrap_or_else(|p| p.into_inner()).push(appended);
        Ok(())
    }
}

/// Translates a database error into its meaning for callers.
pub(crate) fn db_error(error: DbErr) -> MarketplaceError {
    if let Some(SqlErr::UniqueConstraintViolation(_)) = error.sql_err() {
        return MarketplaceError::Aborted(
            "the resource was changed concurrently; read it again and retry".to_owned(),
        );
    }
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
            MarketplaceError::Unavailable(error.to_string())
        }
        DbErr::Exec(ref e) | DbErr::Query(ref e) if is_connection_loss(&e.to_string()) => {
            MarketplaceError::Unavailable(error.to_string())
        }
        other => MarketplaceError::Internal(other.to_string()),
    }
}

fn is_connection_loss(message: &str) -> bool {
    ["connection", "broken pipe", "timed out", "pool", "terminating", "shutting down"]
        .iter()
        .any(|needle| message.to_ascii_lowercase().contains(needle))
}
