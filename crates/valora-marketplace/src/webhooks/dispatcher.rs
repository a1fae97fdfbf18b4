//! The webhook dispatcher: fans outbox events out to matching endpoints,
//! then delivers each endpoint's deliveries in order, at least once.
//!
//! - Fan-out marks an outbox row done with a conditional update before
//!   creating its deliveries, in one transaction, so two marketplace
//!   replicas never create the same delivery twice.
//! - Only the oldest pending delivery of each endpoint is attempted, so an
//!   endpoint receives events in outbox order; a failing delivery holds the
//!   ones behind it.
//! - A delivery is claimed with a lease (a conditional update of
//!   `locked_until`); a process that dies mid-delivery leaves the lease to
//!   expire, and the delivery is attempted again. Receivers see such a
//!   repeat with the same `webhook-id`.
//! - Failed attempts back off exponentially with jitter; after the last
//!   attempt the delivery is FAILED and its endpoint FAILING, with the
//!   reason recorded.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};
use tokio::sync::{Notify, Semaphore, watch};

use super::entity::{attempt, delivery, endpoint, outbox};
use super::signing::SealKey;
use super::ssrf::{GuardedResolver, UrlPolicy};
use crate::domain::{new_id, now};

/// Settings of the dispatcher.
#[derive(Clone, Debug)]
pub struct DispatchSettings {
    /// Delay after the first failed attempt; it doubles per attempt.
    pub retry_base: Duration,
    /// Longest delay between attempts.
    pub retry_cap: Duration,
    /// Attempts before a delivery fails for good.
    pub max_attempts: i32,
    /// Time limit of one attempt, from connecting to reading the answer.
    pub timeout: Duration,
    /// How long a claimed delivery stays claimed beyond its attempt's time
    /// limit; a process that dies mid-attempt holds it this much longer.
    pub lease_margin: Duration,
    /// Poll interval when nothing wakes the dispatcher.
    pub poll: Duration,
    /// Bytes of the receiver's answer read at most.
    pub response_cap: usize,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(3600),
            max_attempts: 10,
            timeout: Duration::from_secs(10),
            lease_margin: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            response_cap: 64 * 1024,
            concurrency: 16,
        }
    }
}

/// Delay before attempt `failed + 1`: base × 2^(failed−1), capped, times a
/// random factor in [0.5, 1.0] so that retries of many deliveries spread.
pub fn backoff(settings: &DispatchSettings, failed: i32) -> Duration {
    let exponent = u32::try_from(failed.saturating_sub(1)).unwrap_or(0).min(20);
    let delay = settings.retry_base.saturating_mul(1u32 << exponent).min(settings.retry_cap);
    delay.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// The dispatcher.
pub struct Dispatcher {
    db: DatabaseConnection,
    seal: Arc<SealKey>,
    policy: UrlPolicy,
    settings: DispatchSettings,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    in_flight: std::sync::Mutex<HashSet<String>>,
    /// Wakes the loop: new outbox rows, or a finished attempt that lets
    /// the endpoint's next delivery go.
    wake: Arc<Notify>,
}

/// The dispatcher could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct DispatcherError(String);

impl Dispatcher {
    pub fn new(
        db: DatabaseConnection,
        seal: Arc<SealKey>,
        policy: UrlPolicy,
        settings: DispatchSettings,
        wake: Arc<Notify>,
    ) -> Result<Arc<Self>, DispatcherError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the host itself, past the guard.
            .no_proxy()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .dns_resolver(Arc::new(GuardedResolver::new(policy.clone())))
            .user_agent("valora-webhooks")
            .build()
            .map_err(|e| DispatcherError(e.to_string()))?;
        Ok(Arc::new(Self {
            db,
            seal,
            policy,
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            settings,
            client,
            in_flight: std::sync::Mutex::default(),
            wake,
        }))
    }

    /// Runs until `shutdown` turns true.
    pub fn spawn(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let dispatcher = self.clone();
        let wake = self.wake.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = dispatcher.fan_out().await {
                    tracing::warn!(%error, "webhook fan-out failed");
                }
                let mut wait = dispatcher.settings.poll;
                match dispatcher.deliver_due().await {
                    // Wake up for the next scheduled retry, not a poll later.
                    Ok(Some(next)) => wait = wait.min(next),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "webhook dispatch failed"),
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        });
    }

    /// Creates deliveries for outbox rows not fanned out yet.
    async fn fan_out(&self) -> Result<(), sea_orm::DbErr> {
        let rows = outbox::Entity::find()
            .filter(outbox::Column::FannedOut.eq(false))
            .order_by_asc(outbox::Column::Seq)
            .limit(100)
            .all(&self.db)
            .await?;
        for row in rows {
            let txn = self.db.begin().await?;
            let claimed = outbox::Entity::update_many()
                .col_expr(outbox::Column::FannedOut, Expr::value(true))
                .filter(outbox::Column::Seq.eq(row.seq))
                .filter(outbox::Column::FannedOut.eq(false))
                .exec(&txn)
                .await?;
            if claimed.rows_affected != 1 {
                continue;
            }
            let endpoints = endpoint::Entity::find()
                .filter(endpoint::Column::OwnerId.eq(row.owner_id.as_str()))
                .filter(endpoint::Column::Status.eq("ACTIVE"))
                .all(&txn)
                .await?;
            let time = now();
            for target in endpoints {
                let types: Vec<&str> = target.event_types.split_whitespace().collect();
                if !types.is_empty() && !types.contains(&row.event_type.as_str()) {
                    continue;
                }
                delivery::ActiveModel {
                    id: Set(new_id()),
                    endpoint_id: Set(target.id),
                    outbox_seq: Set(row.seq),
                    event_id: Set(row.event_id.clone()),
                    event_type: Set(row.event_type.clone()),
                    status: Set("PENDING".to_owned()),
                    attempts: Set(0),
                    next_attempt_time: Set(time),
                    locked_until: Set(None),
                    last_status_code: Set(None),
                    last_error: Set(String::new()),
                    create_time: Set(time),
                    deliver_time: Set(None),
                }
                .insert(&txn)
                .await?;
            }
            txn.commit().await?;
        }
        Ok(())
    }

    /// Claims and starts the oldest pending delivery of each endpoint that
    /// is due. Returns how long until the next one falls due.
    async fn deliver_due(self: &Arc<Self>) -> Result<Option<Duration>, sea_orm::DbErr> {
        let pending = delivery::Entity::find()
            .filter(delivery::Column::Status.eq("PENDING"))
            .order_by_asc(delivery::Column::OutboxSeq)
            .limit(1000)
            .all(&self.db)
            .await?;
        // A failing endpoint gets nothing more until it is replaced.
        let mut seen: HashSet<String> = endpoint::Entity::find()
            .filter(endpoint::Column::Status.ne("ACTIVE"))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect();
        let time = now();
        let mut next_due: Option<Duration> = None;
        for candidate in pending {
            // Only the head of each endpoint's queue may go.
            if !seen.insert(candidate.endpoint_id.clone()) {
                continue;
            }
            let leased = candidate.locked_until.is_some_and(|until| until > time);
            if candidate.next_attempt_time > time && !leased {
                let wait = (candidate.next_attempt_time - time).to_std().unwrap_or_default();
                next_due = Some(next_due.map_or(wait, |w| w.min(wait)));
            }
            if candidate.next_attempt_time > time || leased {
                continue;
            }
            if self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).contains(&candidate.id) {
                continue;
            }
            let lease = self.settings.timeout + self.settings.lease_margin;
            let lease_end = time + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
            let claimed = delivery::Entity::update_many()
                .col_expr(delivery::Column::LockedUntil, Expr::value(lease_end))
                .filter(delivery::Column::Id.eq(candidate.id.as_str()))
                .filter(delivery::Column::Status.eq("PENDING"))
                .filter(Condition::any().add(delivery::Column::LockedUntil.is_null()).add(delivery::Column::LockedUntil.lt(time)))
                .exec(&self.db)
                .await?;
            if claimed.rows_affected != 1 {
                continue;
            }
            let Ok(permit) = self.permits.clone().acquire_owned().await else { return Ok(next_due) };
            self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(candidate.id.clone());
            let dispatcher = self.clone();
            tokio::spawn(async move {
                let id = candidate.id.clone();
                if let Err(error) = dispatcher.attempt(candidate).await {
                    tracing::warn!(delivery_id = %id, %error, "webhook attempt could not be recorded");
                }
                dispatcher.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                drop(permit);
                dispatcher.wake.notify_one();
            });
        }
        Ok(next_due)
    }

    /// Makes one attempt and records its outcome.
    async fn attempt(&self, row: delivery::Model) -> Result<(), sea_orm::DbErr> {
        let target = endpoint::Entity::find_by_id(row.endpoint_id.clone()).one(&self.db).await?;
        let event = outbox::Entity::find().filter(outbox::Column::Seq.eq(row.outbox_seq)).one(&self.db).await?;
        let (Some(target), Some(event)) = (target, event) else {
            // The endpoint was deleted meanwhile.
            delivery::Entity::delete_by_id(row.id.clone()).exec(&self.db).await?;
            return Ok(());
        };
        let started = Instant::now();
        let outcome = self.send(&target, &event).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let number = row.attempts + 1;
        let (status_code, error) = match &outcome {
            Ok(code) => (Some(i32::from(*code)), String::new()),
            Err((code, error)) => (code.map(i32::from), error.clone()),
        };
        let time = now();
        let txn = self.db.begin().await?;
        attempt::ActiveModel {
            id: Set(new_id()),
            delivery_id: Set(row.id.clone()),
            attempt: Set(number),
            time: Set(time),
            status_code: Set(status_code),
            error: Set(error.clone()),
            duration_ms: Set(duration_ms),
        }
        .insert(&txn)
        .await?;
        let mut update = delivery::Entity::update_many()
            .col_expr(delivery::Column::Attempts, Expr::value(number))
            .col_expr(delivery::Column::LockedUntil, Expr::value(Option::<chrono::DateTime<Utc>>::None))
            .col_expr(delivery::Column::LastStatusCode, Expr::value(status_code))
            .col_expr(delivery::Column::LastError, Expr::value(error.clone()));
        let delivered = outcome.is_ok();
        if delivered {
            update = update
                .col_expr(delivery::Column::Status, Expr::value("DELIVERED"))
                .col_expr(delivery::Column::DeliverTime, Expr::value(time));
            metrics::counter!("valora_webhook_deliveries_total", "result" => "delivered").increment(1);
        } else if number >= self.settings.max_attempts {
            update = update.col_expr(delivery::Column::Status, Expr::value("FAILED"));
            let reason = format!("delivery {} of event {} failed {number} times; last error: {error}", row.id, row.event_id);
            endpoint::Entity::update_many()
                .col_expr(endpoint::Column::Status, Expr::value("FAILING"))
                .col_expr(endpoint::Column::FailureReason, Expr::value(reason.clone()))
                .col_expr(endpoint::Column::UpdateTime, Expr::value(time))
                .filter(endpoint::Column::Id.eq(target.id.as_str()))
                .exec(&txn)
                .await?;
            tracing::warn!(endpoint_id = %target.id, delivery_id = %row.id, reason, "webhook endpoint is failing");
            metrics::counter!("valora_webhook_deliveries_total", "result" => "failed").increment(1);
        } else {
            let next = time + chrono::Duration::from_std(backoff(&self.settings, number)).unwrap_or(chrono::Duration::seconds(60));
            update = update.col_expr(delivery::Column::NextAttemptTime, Expr::value(next));
            metrics::counter!("valora_webhook_deliveries_total", "result" => "retry").increment(1);
        }
        update.filter(delivery::Column::Id.eq(row.id.as_str())).exec(&txn).await?;
        txn.commit().await?;
        tracing::debug!(endpoint_id = %target.id, event_id = %row.event_id, attempt = number, delivered, "webhook attempt");
        Ok(())
    }

    /// Posts an event. `Ok(status)` for a 2xx answer; `Err((status, why))`
    /// otherwise.
    async fn send(&self, target: &endpoint::Model, event: &outbox::Model) -> Result<u16, (Option<u16>, String)> {
        let url = self.policy.check_url(&target.url).map_err(|e| (None, e.to_string()))?;
        let secret = self.seal.open(&target.secret_sealed).map_err(|e| (None, e.to_string()))?;
        let timestamp = Utc::now().timestamp();
        let body = event.payload.as_bytes();
        let mut signature = secret.sign(&event.event_id, timestamp, body);
        let previous_valid = target.previous_secret_expire_time.is_some_and(|until| until > now());
        if let (true, Some(sealed)) = (previous_valid, &target.previous_secret_sealed) {
            if let Ok(previous) = self.seal.open(sealed) {
                signature.push(' ');
                signature.push_str(&previous.sign(&event.event_id, timestamp, body));
            }
        }
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(event.payload.clone());
        let mut response = request.send().await.map_err(|e| (None, describe(&e)))?;
        let status = response.status().as_u16();
        // Read a bounded amount of the answer, then let the connection go.
        let mut read = 0usize;
        while read < self.settings.response_cap {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        if response.status().is_success() {
            Ok(status)
        } else if response.status().is_redirection() {
            Err((Some(status), "the receiver answered with a redirect, which is not followed".to_owned()))
        } else {
            Err((Some(status), format!("the receiver answered HTTP {status}")))
        }
    }
}

/// A reqwest error with its cause chain, for the attempt record.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let settings = DispatchSettings { retry_base: Duration::from_secs(5), retry_cap: Duration::from_secs(60), ..Default::default() };
        for (failed, full) in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (12, 60)] {
            for _ in 0..50 {
                let delay = backoff(&settings, failed);
                assert!(delay <= Duration::from_secs(full), "{failed}: {delay:?}");
                assert!(delay >= Duration::from_secs(full) / 2, "{failed}: {delay:?}");
            }
        }
    }
}
