//! Tables of an audit trail, created by each service's migration.

use sea_orm::sea_query::{Alias, ColumnDef, Expr, Index, Query, Table};
use sea_orm::{ConnectionTrait, DbErr};

use crate::GENESIS_HASH;

/// Creates `<prefix>_audit_events` and `<prefix>_audit_head` and inserts
/// the head row.
pub async fn create_tables(db: &impl ConnectionTrait, prefix: &str) -> Result<(), DbErr> {
    let events = Alias::new(format!("{prefix}_audit_events"));
    let head = Alias::new(format!("{prefix}_audit_head"));
    let text = |name: &str| ColumnDef::new(Alias::new(name)).text().not_null().to_owned();
    let table = Table::create()
        .table(events.clone())
        .col(ColumnDef::new(Alias::new("seq")).big_integer().not_null().primary_key())
        .col(ColumnDef::new(Alias::new("event_id")).string_len(36).not_null())
        .col(ColumnDef::new(Alias::new("time")).timestamp_with_time_zone().not_null())
        .col(text("action"))
        .col(text("outcome"))
        .col(text("actor"))
        .col(text("peer"))
        .col(text("client_addr"))
        .col(text("target"))
        .col(text("reason"))
        .col(text("details"))
        .col(ColumnDef::new(Alias::new("prev_hash")).string_len(64).not_null())
        .col(ColumnDef::new(Alias::new("hash")).string_len(64).not_null())
        .to_owned();
    db.execute(&table).await?;
    let index = Index::create()
        .name(format!("{prefix}_audit_events_time_idx"))
        .table(events)
        .col(Alias::new("time"))
        .to_owned();
    db.execute(&index).await?;

    let table = Table::create()
        .table(head.clone())
        .col(ColumnDef::new(Alias::new("id")).integer().not_null().primary_key())
        .col(ColumnDef::new(Alias::new("seq")).big_integer().not_null())
        .col(ColumnDef::new(Alias::new("hash")).string_len(64).not_null())
        .to_owned();
    db.execute(&table).await?;
    let insert = Query::insert()
        .into_table(head)
        .columns([Alias::new("id"), Alias::new("seq"), Alias::new("hash")])
        .values_panic([Expr::value(1), Expr::value(0i64), Expr::value(GENESIS_HASH)])
        .to_owned();
    db.execute(&insert).await?;
    Ok(())
}

/// Drops the tables of a trail.
pub async fn drop_tables(db: &impl ConnectionTrait, prefix: &str) -> Result<(), DbErr> {
    for table in [format!("{prefix}_audit_events"), format!("{prefix}_audit_head")] {
        db.execute(&Table::drop().table(Alias::new(table)).to_owned()).await?;
    }
    Ok(())
}
