//! The audit trail of a service: who did what, when and from where.
//!
//! Events live in the service's own database, in `<prefix>_audit_events`,
//! and form a hash chain: each row stores the SHA-256 of the previous row's
//! hash and its own content. A single-row table, `<prefix>_audit_head`,
//! holds the sequence number and hash of the newest row; appending first
//! updates that row, which serializes appenders on every database without
//! an explicit lock. [`verify`] recomputes the chain and reports the first
//! broken or missing link.
//!
//! An event is written in the same transaction as the change it records,
//! so it exists exactly when the change does. Failures (such as a rejected
//! login) are written on their own.

mod chain;
mod schema;

pub use chain::{Appended, AuditEvent, ChainReport, Outcome, append, log_committed, verify};
pub use schema::{create_tables, drop_tables};

/// Hash of the (absent) row before the first one.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A failure to read or write the trail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("audit trail of {0} has no head row; run the migrations")]
    NoHead(String),
}
