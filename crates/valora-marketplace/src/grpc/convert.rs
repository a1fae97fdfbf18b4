//! Conversions between proto messages and domain types.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use valora_proto::marketplace::v1 as pb;

use crate::domain::validate::{
    Checker, MAX_DESCRIPTION_CHARS, MAX_PLAN_NAME_CHARS, MAX_QUERY_CHARS, MAX_TITLE_CHARS,
};
use crate::domain::{
    BillingInterval, EventKind, Listing, ListingChanges, ListingEvent, ListingFilter,
    ListingStatus, MarketplaceError, Money, NewListing, NewPlan, Plan, PlanStatus, Successor,
};

type Result<T> = std::result::Result<T, MarketplaceError>;

/// Fields an update mask may name.
const MUTABLE_FIELDS: [&str; 4] = ["title", "description", "category", "price"];
/// Fields the server sets; naming them in an update mask is an error.
const OUTPUT_ONLY_FIELDS: [&str; 7] =
    ["id", "seller_id", "status", "create_time", "update_time", "publish_time", "version"];

pub(crate) fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

fn money_to_pb(money: &Money) -> pb::Money {
    pb::Money { currency_code: money.currency_code.clone(), amount_minor: money.amount_minor }
}

fn money_parts(money: Option<&pb::Money>) -> Option<(&str, i64)> {
    money.map(|m| (m.currency_code.as_str(), m.amount_minor))
}

pub(super) fn listing_to_pb(listing: &Listing) -> pb::Listing {
    pb::Listing {
        id: listing.id.clone(),
        seller_id: listing.seller_id.clone(),
        title: listing.title.clone(),
        description: listing.description.clone(),
        category: listing.category.clone(),
        price: Some(money_to_pb(&listing.price)),
        status: match listing.status {
            ListingStatus::Draft => pb::ListingStatus::Draft,
            ListingStatus::Published => pb::ListingStatus::Published,
            ListingStatus::Archived => pb::ListingStatus::Archived,
        } as i32,
        create_time: Some(timestamp(listing.create_time)),
        update_time: Some(timestamp(listing.update_time)),
        publish_time: listing.publish_time.map(timestamp),
        version: listing.version,
    }
}

pub(super) fn plan_to_pb(plan: &Plan) -> pb::Plan {
    pb::Plan {
        id: plan.id.clone(),
        listing_id: plan.listing_id.clone(),
        name: plan.name.clone(),
        price: Some(money_to_pb(&plan.price)),
        interval: interval_to_pb(plan.interval) as i32,
        status: match plan.status {
            PlanStatus::Active => pb::PlanStatus::Active,
            PlanStatus::Retired => pb::PlanStatus::Retired,
        } as i32,
        revision: plan.revision,
        replaces_plan_id: plan.replaces_plan_id.clone().unwrap_or_default(),
        create_time: Some(timestamp(plan.create_time)),
        retire_time: plan.retire_time.map(timestamp),
    }
}

fn interval_to_pb(interval: BillingInterval) -> pb::BillingInterval {
    match interval {
        BillingInterval::OneTime => pb::BillingInterval::OneTime,
        BillingInterval::Month => pb::BillingInterval::Month,
        BillingInterval::Year => pb::BillingInterval::Year,
    }
}

pub(super) fn event_to_pb(event: &ListingEvent) -> pb::WatchListingEventsResponse {
    let kind = match event.kind {
        EventKind::Created => pb::ListingEventType::Created,
        EventKind::Updated => pb::ListingEventType::Updated,
        EventKind::Published => pb::ListingEventType::Published,
        EventKind::Archived => pb::ListingEventType::Archived,
        EventKind::PlanCreated => pb::ListingEventType::PlanCreated,
        EventKind::PlanRotated => pb::ListingEventType::PlanRotated,
    };
    pb::WatchListingEventsResponse {
        event_id: event.id.clone(),
        r#type: kind as i32,
        listing: Some(listing_to_pb(&event.listing)),
        plan: event.plan.as_ref().map(plan_to_pb),
        retired_plan: event.retired_plan.as_ref().map(plan_to_pb),
        event_time: Some(timestamp(event.time)),
    }
}

pub(super) fn new_listing(request: &pb::CreateListingRequest) -> Result<NewListing> {
    let mut check = Checker::new();
    let title = check.line("title", &request.title, MAX_TITLE_CHARS);
    let description = check.paragraph("description", &request.description, MAX_DESCRIPTION_CHARS);
    let category = check.category("category", &request.category);
    let price = check.money("price", money_parts(request.price.as_ref()));
    check.finish()?;
    Ok(NewListing { title, description, category, price: price_or_internal(price)? })
}

/// Validates an UpdateListing request into (id, version, changes).
pub(super) fn listing_changes(
    request: &pb::UpdateListingRequest,
) -> Result<(String, i64, ListingChanges)> {
    let mut check = Checker::new();
    let empty = pb::Listing::default();
    let listing = match &request.listing {
        Some(listing) => listing,
        None => {
            check.add("listing", "is required");
            &empty
        }
    };
    let id = check.id("listing.id", &listing.id);
    if request.version <= 0 {
        check.add("version", "is required: send the version of the listing you last read");
    }
    let paths = mask_paths(&mut check, request.update_mask.as_ref());
    let mut changes = ListingChanges::default();
    for path in &paths {
        match path.as_str() {
            "title" => {
                changes.title = Some(check.line("listing.title", &listing.title, MAX_TITLE_CHARS));
            }
            "description" => {
                changes.description = Some(check.paragraph(
                    "listing.description",
                    &listing.description,
                    MAX_DESCRIPTION_CHARS,
                ));
            }
            "category" => changes.category = Some(check.category("listing.category", &listing.category)),
            "price" => changes.price = check.money("listing.price", money_parts(listing.price.as_ref())),
            _ => {}
        }
    }
    check.finish()?;
    Ok((id, request.version, changes))
}

fn mask_paths(check: &mut Checker, mask: Option<&prost_types::FieldMask>) -> Vec<String> {
    let paths = mask.map(|m| m.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        check.add(
            "update_mask",
            format!("is required: name the fields to change, from {}", MUTABLE_FIELDS.join(", ")),
        );
        return vec![];
    }
    let mut accepted = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let field = format!("update_mask.paths[{index}]");
        if path == "*" {
            accepted.extend(MUTABLE_FIELDS.iter().map(|f| (*f).to_owned()));
        } else if MUTABLE_FIELDS.contains(&path.as_str()) {
            accepted.push(path.clone());
        } else if OUTPUT_ONLY_FIELDS.contains(&path.as_str()) {
            check.add(
                &field,
                format!("{path:?} is set by the server and cannot be updated"),
            );
        } else {
            check.add(
                &field,
                format!("{path:?} is not a field of Listing that can be updated; use one of {}", MUTABLE_FIELDS.join(", ")),
            );
        }
    }
    accepted.sort();
    accepted.dedup();
    accepted
}

pub(super) fn listing_filter(request: &pb::ListListingsRequest) -> Result<ListingFilter> {
    let mut check = Checker::new();
    let status = match pb::ListingStatus::try_from(request.status) {
        Ok(pb::ListingStatus::Unspecified) => None,
        Ok(pb::ListingStatus::Draft) => Some(ListingStatus::Draft),
        Ok(pb::ListingStatus::Published) => Some(ListingStatus::Published),
        Ok(pb::ListingStatus::Archived) => Some(ListingStatus::Archived),
        Err(_) => {
            check.add("status", format!("{} is not a ListingStatus value", request.status));
            None
        }
    };
    let seller_id = (!request.seller_id.is_empty()).then(|| request.seller_id.clone());
    if request.seller_id.len() > 128 {
        check.add("seller_id", "must be at most 128 characters");
    }
    let category = (!request.category.is_empty()).then(|| check.category("category", &request.category));
    let query = request.query.trim();
    if query.chars().count() > MAX_QUERY_CHARS {
        check.add("query", format!("must be at most {MAX_QUERY_CHARS} characters"));
    }
    check.finish()?;
    Ok(ListingFilter {
        status,
        seller_id,
        category,
        query: (!query.is_empty()).then(|| query.to_owned()),
    })
}

pub(crate) fn id(field: &str, value: &str) -> Result<String> {
    let mut check = Checker::new();
    let id = check.id(field, value);
    check.finish()?;
    Ok(id)
}

fn interval(check: &mut Checker, field: &str, value: i32, required: bool) -> Option<BillingInterval> {
    match pb::BillingInterval::try_from(value) {
        Ok(pb::BillingInterval::OneTime) => Some(BillingInterval::OneTime),
        Ok(pb::BillingInterval::Month) => Some(BillingInterval::Month),
        Ok(pb::BillingInterval::Year) => Some(BillingInterval::Year),
        Ok(pb::BillingInterval::Unspecified) => {
            if required {
                check.add(field, "is required: BILLING_INTERVAL_ONE_TIME, _MONTH or _YEAR");
            }
            None
        }
        Err(_) => {
            check.add(field, format!("{value} is not a BillingInterval value"));
            None
        }
    }
}

pub(super) fn new_plan(request: &pb::CreatePlanRequest) -> Result<(String, NewPlan)> {
    let mut check = Checker::new();
    let listing_id = check.id("listing_id", &request.listing_id);
    let name = check.line("name", &request.name, MAX_PLAN_NAME_CHARS);
    let price = check.money("price", money_parts(request.price.as_ref()));
    let interval = interval(&mut check, "interval", request.interval, true);
    check.finish()?;
    let interval = interval.ok_or_else(|| MarketplaceError::Internal("interval lost".into()))?;
    Ok((listing_id, NewPlan { name, price: price_or_internal(price)?, interval }))
}

pub(super) fn successor(request: &pb::RotatePlanRequest) -> Result<(String, Successor)> {
    let mut check = Checker::new();
    let plan_id = check.id("plan_id", &request.plan_id);
    let price = check.money("price", money_parts(request.price.as_ref()));
    let name = (!request.name.is_empty())
        .then(|| check.line("name", &request.name, MAX_PLAN_NAME_CHARS));
    let interval = interval(&mut check, "interval", request.interval, false);
    check.finish()?;
    Ok((plan_id, Successor { price: price_or_internal(price)?, name, interval }))
}

/// After a successful check a price is always present.
fn price_or_internal(price: Option<Money>) -> Result<Money> {
    price.ok_or_else(|| MarketplaceError::Internal("validated price missing".into()))
}
