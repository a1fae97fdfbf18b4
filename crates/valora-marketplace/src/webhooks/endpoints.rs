//! Webhook endpoint management: register, list, delete, rotate the secret,
//! and read deliveries. Owners manage only their own endpoints; anyone
//! else's endpoint answers NOT_FOUND, like a missing one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};
use serde_json::json;
use valora_mesh::Principal;

use super::entity::{attempt, delivery, endpoint};
use super::signing::{SealKey, SigningSecret};
use super::ssrf::UrlPolicy;
use crate::access;
use crate::service::audit_event;
use crate::domain::{EventKind, MarketplaceError, new_id, now};
use crate::store::{AUDIT_PREFIX, Store, db_error};

type Result<T> = std::result::Result<T, MarketplaceError>;

/// Event types an endpoint may subscribe to.
pub const EVENT_TYPES: [EventKind; 6] = [
    EventKind::Created,
    EventKind::Updated,
    EventKind::Published,
    EventKind::Archived,
    EventKind::PlanCreated,
    EventKind::PlanRotated,
];
/// Endpoints one owner may register.
const MAX_ENDPOINTS_PER_OWNER: usize = 20;
/// Grace period of a secret rotation when the request sets none.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Longest grace period of a secret rotation.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A registered endpoint, without its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub owner_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    /// `ACTIVE` or `FAILING`.
    pub status: String,
    pub failure_reason: String,
    pub create_time: DateTime<Utc>,
    pub previous_secret_expire_time: Option<DateTime<Utc>>,
}

impl From<endpoint::Model> for Endpoint {
    fn from(row: endpoint::Model) -> Self {
        Self {
            id: row.id,
            owner_id: row.owner_id,
            url: row.url,
            event_types: row.event_types.split_whitespace().map(str::to_owned).collect(),
            status: row.status,
            failure_reason: row.failure_reason,
            create_time: row.create_time,
            previous_secret_expire_time: row.previous_secret_expire_time,
        }
    }
}

/// A delivery with its attempts.
#[derive(Clone, Debug)]
pub struct DeliveryRecord {
    pub delivery: delivery::Model,
    pub attempts: Vec<attempt::Model>,
}

/// Webhook endpoint operations.
#[derive(Clone, Debug)]
pub struct Webhooks {
    store: Store,
    seal: Arc<SealKey>,
    policy: UrlPolicy,
}

impl Webhooks {
    pub fn new(store: Store, seal: Arc<SealKey>, policy: UrlPolicy) -> Self {
        Self { store, seal, policy }
    }

    /// Registers an endpoint for `caller`. The URL must pass the SSRF
    /// guard now, and passes it again at every delivery.
    pub async fn create(&self, caller: &Principal, url: &str, event_types: &[String]) -> Result<(Endpoint, SigningSecret)> {
        access::ensure_can_write(caller)?;
        let parsed = self.policy.check_url(url).map_err(|e| MarketplaceError::invalid("url", e.to_string()))?;
        self.policy.resolve(&parsed).await.map_err(|e| MarketplaceError::invalid("url", e.to_string()))?;
        let types = check_event_types(event_types)?;
        let owner = caller.actor_id();
        let existing = endpoint::Entity::find()
            .filter(endpoint::Column::OwnerId.eq(owner.as_str()))
            .count(self.store.connection())
            .await
            .map_err(db_error)?;
        if existing >= MAX_ENDPOINTS_PER_OWNER as u64 {
            return Err(MarketplaceError::FailedPrecondition(format!(
                "at most {MAX_ENDPOINTS_PER_OWNER} endpoints per owner; delete one first"
            )));
        }
        let secret = SigningSecret::generate();
        let time = now();
        let row = endpoint::ActiveModel {
            id: Set(new_id()),
            owner_id: Set(owner.clone()),
            url: Set(parsed.to_string()),
            event_types: Set(types.join(" ")),
            secret_sealed: Set(self.seal.seal(&secret)),
            previous_secret_sealed: Set(None),
            previous_secret_expire_time: Set(None),
            status: Set("ACTIVE".to_owned()),
            failure_reason: Set(String::new()),
            create_time: Set(time),
            update_time: Set(time),
        };
        let txn = self.store.connection().begin().await.map_err(db_error)?;
        let row = row.insert(&txn).await.map_err(db_error)?;
        let event = audit_event(caller, "webhook.endpoint_create", &row.id, json!({"url": row.url, "event_types": types}));
        let appended = valora_audit::append(&txn, AUDIT_PREFIX, "marketplace", event)
            .await
            .map_err(|e| MarketplaceError::Internal(e.to_string()))?;
        txn.commit().await.map_err(db_error)?;
        valora_audit::log_committed(&appended);
        Ok((row.into(), secret))
    }

    /// The caller's endpoints.
    pub async fn list(&self, caller: &Principal) -> Result<Vec<Endpoint>> {
        access::ensure_can_read(caller)?;
        let rows = endpoint::Entity::find()
            .filter(endpoint::Column::OwnerId.eq(caller.actor_id()))
            .order_by_asc(endpoint::Column::Id)
            .all(self.store.connection())
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(Endpoint::from).collect())
    }

    /// Loads an endpoint the caller owns; NOT_FOUND otherwise.
    async fn owned(&self, caller: &Principal, id: &str) -> Result<endpoint::Model> {
        let row = endpoint::Entity::find_by_id(id.to_owned()).one(self.store.connection()).await.map_err(db_error)?;
        match row {
            Some(row) if row.owner_id == caller.actor_id() || caller.is_admin() => Ok(row),
            _ => Err(MarketplaceError::NotFound(format!("webhook endpoint {id}"))),
        }
    }

    /// Deletes an endpoint and its pending deliveries.
    pub async fn delete(&self, caller: &Principal, id: &str) -> Result<()> {
        access::ensure_can_write(caller)?;
        let row = self.owned(caller, id).await?;
        let txn = self.store.connection().begin().await.map_err(db_error)?;
        delivery::Entity::delete_many()
            .filter(delivery::Column::EndpointId.eq(id))
            .filter(delivery::Column::Status.eq("PENDING"))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        endpoint::Entity::delete_by_id(id.to_owned()).exec(&txn).await.map_err(db_error)?;
        let event = audit_event(caller, "webhook.endpoint_delete", id, json!({"url": row.url}));
        let appended = valora_audit::append(&txn, AUDIT_PREFIX, "marketplace", event)
            .await
            .map_err(|e| MarketplaceError::Internal(e.to_string()))?;
        txn.commit().await.map_err(db_error)?;
        valora_audit::log_committed(&appended);
        Ok(())
    }

    /// Issues a new secret; the current one keeps signing for `grace`.
    pub async fn rotate(&self, caller: &Principal, id: &str, grace: Option<Duration>) -> Result<(Endpoint, SigningSecret)> {
        access::ensure_can_write(caller)?;
        let grace = grace.unwrap_or(DEFAULT_GRACE);
        if grace > MAX_GRACE {
            return Err(MarketplaceError::invalid("grace_period", format!("must be at most {} days", MAX_GRACE.as_secs() / 86_400)));
        }
        let row = self.owned(caller, id).await?;
        let secret = SigningSecret::generate();
        let time = now();
        let expire = time + chrono::Duration::from_std(grace).map_err(|e| MarketplaceError::Internal(e.to_string()))?;
        let txn = self.store.connection().begin().await.map_err(db_error)?;
        let result = endpoint::Entity::update_many()
            .col_expr(endpoint::Column::PreviousSecretSealed, Expr::value(row.secret_sealed.clone()))
            .col_expr(endpoint::Column::PreviousSecretExpireTime, Expr::value(expire))
            .col_expr(endpoint::Column::SecretSealed, Expr::value(self.seal.seal(&secret)))
            .col_expr(endpoint::Column::UpdateTime, Expr::value(time))
            .filter(endpoint::Column::Id.eq(id))
            .filter(endpoint::Column::SecretSealed.eq(row.secret_sealed.clone()))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if result.rows_affected != 1 {
            return Err(MarketplaceError::Aborted(format!("webhook endpoint {id} was rotated concurrently; retry")));
        }
        let event = audit_event(caller, "webhook.secret_rotate", id, json!({"grace_seconds": grace.as_secs()}));
        let appended = valora_audit::append(&txn, AUDIT_PREFIX, "marketplace", event)
            .await
            .map_err(|e| MarketplaceError::Internal(e.to_string()))?;
        let updated = endpoint::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| MarketplaceError::NotFound(format!("webhook endpoint {id}")))?;
        txn.commit().await.map_err(db_error)?;
        valora_audit::log_committed(&appended);
        Ok((updated.into(), secret))
    }

    /// Deliveries to an endpoint the caller owns, newest first, with their
    /// attempts; `before` is the outbox position of the last delivery of
    /// the previous page.
    pub async fn deliveries(&self, caller: &Principal, endpoint_id: &str, before: Option<i64>, limit: u64) -> Result<Vec<DeliveryRecord>> {
        access::ensure_can_read(caller)?;
        self.owned(caller, endpoint_id).await?;
        let mut query = delivery::Entity::find().filter(delivery::Column::EndpointId.eq(endpoint_id));
        if let Some(before) = before {
            query = query.filter(delivery::Column::OutboxSeq.lt(before));
        }
        let rows = query
            .order_by_desc(delivery::Column::OutboxSeq)
            .limit(limit)
            .all(self.store.connection())
            .await
            .map_err(db_error)?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let attempts = attempt::Entity::find()
                .filter(attempt::Column::DeliveryId.eq(row.id.as_str()))
                .order_by_asc(attempt::Column::Attempt)
                .all(self.store.connection())
                .await
                .map_err(db_error)?;
            records.push(DeliveryRecord { delivery: row, attempts });
        }
        Ok(records)
    }
}

fn check_event_types(types: &[String]) -> Result<Vec<String>> {
    let mut checked = Vec::new();
    for (index, name) in types.iter().enumerate() {
        if !EVENT_TYPES.iter().any(|k| k.as_str() == name) {
            let known: Vec<&str> = EVENT_TYPES.iter().map(|k| k.as_str()).collect();
            return Err(MarketplaceError::invalid(
                &format!("event_types[{index}]"),
                format!("{name:?} is not an event type; use {}", known.join(", ")),
            ));
        }
        if !checked.contains(name) {
            checked.push(name.clone());
        }
    }
    Ok(checked)
}
