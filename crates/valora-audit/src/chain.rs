//! Appending to and verifying the hash chain.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, QueryResult};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{AuditError, GENESIS_HASH};

/// Whether the recorded action succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// One audit event. Fields that do not apply are empty strings. Secrets
/// never go here: keys appear by id, users by id.
#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    /// What happened, such as `listing.publish` or `auth.login`.
    pub action: String,
    pub outcome: Option<Outcome>,
    /// Who acted: a user id, or `key:<id>` for an application key.
    pub actor: String,
    /// The calling workload's identity.
    pub peer: String,
    /// The end client's address, when known.
    pub client_addr: String,
    /// The resource acted on.
    pub target: String,
    /// Why a failure failed.
    pub reason: String,
    /// Further facts as a JSON object.
    pub details: serde_json::Value,
}

/// The content a row's hash commits to, in a fixed field order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    event_id: &'a str,
    time: &'a str,
    action: &'a str,
    outcome: &'a str,
    actor: &'a str,
    peer: &'a str,
    client_addr: &'a str,
    target: &'a str,
    reason: &'a str,
    details: &'a str,
}

fn row_hash(prev_hash: &str, row: &Canonical<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(serde_json::to_vec(row).unwrap_or_default());
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Time with microsecond precision, which both databases store exactly.
fn format_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A written event, for logging once its transaction commits.
#[derive(Clone, Debug)]
pub struct Appended {
    pub seq: i64,
    pub event: AuditEvent,
    pub component: &'static str,
}

/// Appends `event` to the trail `prefix` through `db`, which should be the
/// transaction of the change the event records.
pub async fn append(
    db: &impl ConnectionTrait,
    prefix: &str,
    component: &'static str,
    event: AuditEvent,
) -> Result<Appended, AuditError> {
    let head = Alias::new(format!("{prefix}_audit_head"));
    let bump = Query::update()
        .table(head.clone())
        .value(Alias::new("seq"), Expr::col(Alias::new("seq")).add(1))
        .and_where(Expr::col(Alias::new("id")).eq(1))
        .to_owned();
    db.execute(&bump).await?;
    let select = Query::select()
        .columns([Alias::new("seq"), Alias::new("hash")])
        .from(head.clone())
        .and_where(Expr::col(Alias::new("id")).eq(1))
        .to_owned();
    let row = db.query_one(&select).await?.ok_or_else(|| AuditError::NoHead(prefix.to_owned()))?;
    let seq: i64 = row.try_get("", "seq")?;
    let prev_hash: String = row.try_get("", "hash")?;

    let event_id = uuid::Uuid::now_v7().to_string();
    let now = Utc::now();
    let time = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let time_text = format_time(time);
    let outcome = event.outcome.unwrap_or(Outcome::Success).as_str();
    let details = event.details.to_string();
    let canonical = Canonical {
        seq,
        event_id: &event_id,
        time: &time_text,
        action: &event.action,
        outcome,
        actor: &event.actor,
        peer: &event.peer,
        client_addr: &event.client_addr,
        target: &event.target,
        reason: &event.reason,
        details: &details,
    };
    let hash = row_hash(&prev_hash, &canonical);

    let insert = Query::insert()
        .into_table(Alias::new(format!("{prefix}_audit_events")))
        .columns(
            ["seq", "event_id", "time", "action", "outcome", "actor", "peer", "client_addr", "target", "reason", "details", "prev_hash", "hash"]
                .map(Alias::new),
        )
        .values_panic([
            Expr::value(seq),
            Expr::value(event_id.clone()),
            Expr::value(time),
            Expr::value(event.action.clone()),
            Expr::value(outcome),
            Expr::value(event.actor.clone()),
            Expr::value(event.peer.clone()),
            Expr::value(event.client_addr.clone()),
            Expr::value(event.target.clone()),
            Expr::value(event.reason.clone()),
            Expr::value(details),
            Expr::value(prev_hash),
            Expr::value(hash.clone()),
        ])
        .to_owned();
    db.execute(&insert).await?;
    let set_hash = Query::update()
        .table(head)
        .value(Alias::new("hash"), Expr::value(hash))
        .and_where(Expr::col(Alias::new("id")).eq(1))
        .to_owned();
    db.execute(&set_hash).await?;
    Ok(Appended { seq, event, component })
}

/// Emits a written event as a structured log line (target
/// `valora::audit`) and counts it. Call it once the transaction committed.
pub fn log_committed(appended: &Appended) {
    let event = &appended.event;
    let outcome = event.outcome.unwrap_or(Outcome::Success).as_str();
    tracing::info!(
        target: "valora::audit",
        seq = appended.seq,
        component = appended.component,
        action = %event.action,
        outcome,
        actor = %event.actor,
        peer = %event.peer,
        client_addr = %event.client_addr,
        target_id = %event.target,
        reason = %event.reason,
        details = %event.details,
        "audit event"
    );
    metrics::counter!(
        "valora_audit_events_total",
        "component" => appended.component,
        "action" => event.action.clone(),
        "outcome" => outcome
    )
    .increment(1);
}

/// The result of checking a trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: i64,
    /// The first problem found, if any.
    pub problem: Option<String>,
}

fn text(row: &QueryResult, column: &str) -> Result<String, AuditError> {
    Ok(row.try_get::<String>("", column)?)
}

/// Recomputes the chain `prefix` and reports the first broken or missing
/// link.
pub async fn verify(db: &impl ConnectionTrait, prefix: &str) -> Result<ChainReport, AuditError> {
    let select = Query::select()
        .columns(
            ["seq", "event_id", "time", "action", "outcome", "actor", "peer", "client_addr", "target", "reason", "details", "prev_hash", "hash"]
                .map(Alias::new),
        )
        .from(Alias::new(format!("{prefix}_audit_events")))
        .order_by(Alias::new("seq"), Order::Asc)
        .to_owned();
    let rows = db.query_all(&select).await?;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS_HASH.to_owned();
    let report = |problem: String, rows: i64| Ok(ChainReport { rows, problem: Some(problem) });
    for row in &rows {
        let seq: i64 = row.try_get("", "seq")?;
        if seq != expected_seq {
            return report(format!("row {expected_seq} is missing (the next row is {seq})"), expected_seq - 1);
        }
        let stored_prev = text(row, "prev_hash")?;
        if stored_prev != prev {
            return report(format!("row {seq} does not link to row {}: its previous hash differs", seq - 1), seq);
        }
        let time: DateTime<Utc> = row.try_get("", "time")?;
        let (event_id, action, outcome) = (text(row, "event_id")?, text(row, "action")?, text(row, "outcome")?);
        let (actor, peer, client_addr) = (text(row, "actor")?, text(row, "peer")?, text(row, "client_addr")?);
        let (target, reason, details) = (text(row, "target")?, text(row, "reason")?, text(row, "details")?);
        let canonical = Canonical {
            seq,
            event_id: &event_id,
            time: &format_time(time),
            action: &action,
            outcome: &outcome,
            actor: &actor,
            peer: &peer,
            client_addr: &client_addr,
            target: &target,
            reason: &reason,
            details: &details,
        };
        let hash = row_hash(&prev, &canonical);
        if hash != text(row, "hash")? {
            return report(format!("row {seq} was altered: its content does not match its hash"), seq);
        }
        prev = hash;
        expected_seq += 1;
    }
    let last = expected_seq - 1;
    let select = Query::select()
        .columns([Alias::new("seq"), Alias::new("hash")])
        .from(Alias::new(format!("{prefix}_audit_head")))
        .and_where(Expr::col(Alias::new("id")).eq(1))
        .to_owned();
    let head = db.query_one(&select).await?.ok_or_else(|| AuditError::NoHead(prefix.to_owned()))?;
    let head_seq: i64 = head.try_get("", "seq")?;
    if head_seq > last {
        return report(format!("rows {} to {head_seq} are missing from the end", last + 1), last);
    }
    if head_seq < last || text(&head, "hash")? != prev {
        return report(format!("the head (row {head_seq}) does not match the last row {last}"), last);
    }
    Ok(ChainReport { rows: last, problem: None })
}

#[cfg(test)]
mod tests {
    use sea_orm::{Database, TransactionTrait};

    use super::*;

    async fn sqlite() -> (tempfile::TempDir, sea_orm::DatabaseConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let db = Database::connect(&url).await.unwrap();
        crate::create_tables(&db, "t").await.unwrap();
        (dir, db)
    }

    fn event(n: usize) -> AuditEvent {
        AuditEvent { action: "thing.done".into(), actor: format!("user-{n}"), ..Default::default() }
    }

    #[tokio::test]
    async fn chain_verifies_and_detects_edits_and_deletions() {
        let (_dir, db) = sqlite().await;
        for n in 0..5 {
            let txn = db.begin().await.unwrap();
            append(&txn, "t", "test", event(n)).await.unwrap();
            txn.commit().await.unwrap();
        }
        assert_eq!(verify(&db, "t").await.unwrap(), ChainReport { rows: 5, problem: None });

        db.execute_unprepared("UPDATE t_audit_events SET actor = 'mallory' WHERE seq = 3").await.unwrap();
        let report = verify(&db, "t").await.unwrap();
        assert!(report.problem.unwrap().contains("row 3 was altered"));
        db.execute_unprepared("UPDATE t_audit_events SET actor = 'user-2' WHERE seq = 3").await.unwrap();
        assert!(verify(&db, "t").await.unwrap().problem.is_none());

        db.execute_unprepared("DELETE FROM t_audit_events WHERE seq = 2").await.unwrap();
        assert!(verify(&db, "t").await.unwrap().problem.unwrap().contains("row 2 is missing"));
    }

    #[tokio::test]
    async fn deleting_the_newest_rows_is_detected() {
        let (_dir, db) = sqlite().await;
        for n in 0..3 {
            append(&db, "t", "test", event(n)).await.unwrap();
        }
        db.execute_unprepared("DELETE FROM t_audit_events WHERE seq = 3").await.unwrap();
        let problem = verify(&db, "t").await.unwrap().problem.unwrap();
        assert!(problem.contains("rows 3 to 3 are missing from the end"), "{problem}");
    }

    #[tokio::test]
    async fn rolled_back_events_leave_no_gap() {
        let (_dir, db) = sqlite().await;
        append(&db, "t", "test", event(0)).await.unwrap();
        let txn = db.begin().await.unwrap();
        append(&txn, "t", "test", event(1)).await.unwrap();
        txn.rollback().await.unwrap();
        append(&db, "t", "test", event(2)).await.unwrap();
        assert_eq!(verify(&db, "t").await.unwrap(), ChainReport { rows: 2, problem: None });
    }
}
