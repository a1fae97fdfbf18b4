//! The outbox: every listing event is written in the transaction of the
//! change it describes, so an event exists exactly when its change does,
//! and the dispatcher delivers it from there.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use serde_json::{Value, json};

use super::entity::outbox;
use crate::domain::{Listing, ListingEvent, MarketplaceError, Money, Plan};
use crate::store::db_error;

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn money(m: &Money) -> Value {
    json!({"currency_code": m.currency_code, "amount_minor": m.amount_minor})
}

fn listing_json(l: &Listing) -> Value {
    json!({
        "id": l.id,
        "seller_id": l.seller_id,
        "title": l.title,
        "description": l.description,
        "category": l.category,
        "price": money(&l.price),
        "status": l.status.as_str(),
        "create_time": time(l.create_time),
        "update_time": time(l.update_time),
        "publish_time": l.publish_time.map(time),
        "version": l.version,
    })
}

fn plan_json(p: &Plan) -> Value {
    json!({
        "id": p.id,
        "listing_id": p.listing_id,
        "name": p.name,
        "price": money(&p.price),
        "interval": p.interval.as_str(),
        "status": p.status.as_str(),
        "revision": p.revision,
        "replaces_plan_id": p.replaces_plan_id,
        "create_time": time(p.create_time),
        "retire_time": p.retire_time.map(time),
    })
}

/// The delivered body of an event: `type`, `timestamp` and `data`, as
/// Standard Webhooks recommends.
pub fn payload(event: &ListingEvent) -> String {
    let mut data = json!({ "listing": listing_json(&event.listing) });
    if let Some(plan) = &event.plan {
        data["plan"] = plan_json(plan);
    }
    if let Some(retired) = &event.retired_plan {
        data["retired_plan"] = plan_json(retired);
    }
    json!({ "type": event.kind.as_str(), "timestamp": time(event.time), "data": data }).to_string()
}

/// Writes `event` to the outbox through `db` (the change's transaction).
pub async fn insert(db: &impl ConnectionTrait, event: &ListingEvent) -> Result<(), MarketplaceError> {
    outbox::ActiveModel {
        event_id: Set(event.id.clone()),
        event_type: Set(event.kind.as_str().to_owned()),
        owner_id: Set(event.listing.seller_id.clone()),
        listing_id: Set(event.listing.id.clone()),
        payload: Set(payload(event)),
        create_time: Set(event.time),
        fanned_out: Set(false),
        ..Default::default()
    }
    .insert(db)
    .await
    .map_err(db_error)?;
    Ok(())
}
