//! Marketplace operations: each checks access, decides, and commits in one
//! transaction, then announces what changed.

use valora_mesh::Principal;

use crate::access;
use crate::domain::{
    EventKind, Listing, ListingChanges, ListingEvent, ListingFilter, ListingStatus,
    MarketplaceError, NewListing, NewPlan, Plan, PlanStatus, Successor, new_id, now,
};
use crate::events::EventHub;
use crate::page;
use crate::store::{Store, Tx};

type Result<T> = std::result::Result<T, MarketplaceError>;

/// A page of results and the token of the next one.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// The marketplace service's domain logic.
#[derive(Clone, Debug)]
pub struct Marketplace {
    store: Store,
    events: EventHub,
    /// Wakes the webhook dispatcher when the outbox grows.
    outbox_written: std::sync::Arc<tokio::sync::Notify>,
}

impl Marketplace {
    pub fn new(store: Store, events: EventHub) -> Self {
        Self { store, events, outbox_written: std::sync::Arc::default() }
    }

    /// Notified after each commit that wrote to the outbox.
    pub fn outbox_written(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox_written.clone()
    }

    /// The event hub that watchers subscribe to.
    pub fn events(&self) -> &EventHub {
        &self.events
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates a DRAFT listing owned by the caller.
    pub async fn create_listing(&self, caller: &Principal, new: NewListing) -> Result<Listing> {
        access::ensure_can_write(caller)?;
        let time = now();
        let listing = Listing {
            id: new_id(),
            seller_id: caller.actor_id(),
            title: new.title,
            description: new.description,
            category: new.category,
            price: new.price,
            status: ListingStatus::Draft,
            create_time: time,
            update_time: time,
            publish_time: None,
            version: 1,
        };
        let tx = self.store.begin().await?;
        tx.insert_listing(&listing).await?;
        self.commit(tx, event(EventKind::Created, &listing, None, None)).await?;
        Ok(listing)
    }

    /// Reads a listing the caller may see.
    pub async fn get_listing(&self, caller: &Principal, id: &str) -> Result<Listing> {
        access::ensure_can_read(caller)?;
        access::visible(caller, self.store.listing(id).await?, id)
    }

    /// Lists the listings the caller may see, matching `filter`.
    pub async fn list_listings(
        &self,
        caller: &Principal,
        filter: &ListingFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Listing>> {
        access::ensure_can_read(caller)?;
        let limit = page::page_size(page_size)?;
        let status = filter.status.map(|s| s.as_str()).unwrap_or_default();
        let scope = page::scope(&[
            "listings",
            &caller.actor_id(),
            status,
            filter.seller_id.as_deref().unwrap_or_default(),
            filter.category.as_deref().unwrap_or_default(),
            filter.query.as_deref().unwrap_or_default(),
        ]);
        let after = page::decode(page_token, &scope)?;
        let visibility = access::visibility(caller);
        let mut items =
            self.store.listings(filter, &visibility, after.as_deref(), limit + 1).await?;
        let next_page_token = next_token(&mut items, limit, &scope, |l| l.id.clone());
        Ok(Page { items, next_page_token })
    }

    /// Applies `changes` to a listing at `version`.
    pub async fn update_listing(
        &self,
        caller: &Principal,
        id: &str,
        version: i64,
        changes: ListingChanges,
    ) -> Result<Listing> {
        let tx = self.store.begin().await?;
        let listing = self.changeable(caller, &tx, id).await?;
        if listing.status == ListingStatus::Archived {
            return Err(MarketplaceError::FailedPrecondition(format!(
                "listing {id} is archived and can no longer change"
            )));
        }
        if listing.version != version {
            return Err(stale(id, version, listing.version));
        }
        if !tx.update_listing(id, version, &changes, now()).await? {
            return Err(stale(id, version, version + 1));
        }
        let updated = reload(&tx, id).await?;
        self.commit(tx, event(EventKind::Updated, &updated, None, None)).await?;
        Ok(updated)
    }

    /// Publishes a DRAFT listing that has an ACTIVE plan.
    pub async fn publish_listing(&self, caller: &Principal, id: &str) -> Result<Listing> {
        let tx = self.store.begin().await?;
        let listing = self.changeable(caller, &tx, id).await?;
        if listing.status != ListingStatus::Draft {
            return Err(MarketplaceError::FailedPrecondition(format!(
                "listing {id} is {}; only DRAFT listings can be published",
                listing.status.as_str()
            )));
        }
        if tx.active_plan_count(id).await? == 0 {
            return Err(MarketplaceError::FailedPrecondition(format!(
                "listing {id} has no ACTIVE plan; add one with CreatePlan first"
            )));
        }
        let time = now();
        if !tx.set_listing_status(id, listing.version, listing.status, ListingStatus::Published, time).await? {
            return Err(concurrent(id));
        }
        let published = reload(&tx, id).await?;
        tx.audit(audit_event(caller, "listing.publish", id, serde_json::json!({"version": published.version}))).await?;
        self.commit(tx, event(EventKind::Published, &published, None, None)).await?;
        tracing::info!(listing_id = id, actor = %caller.actor_id(), "listing published");
        Ok(published)
    }

    /// Archives a DRAFT or PUBLISHED listing.
    pub async fn archive_listing(&self, caller: &Principal, id: &str) -> Result<Listing> {
        let tx = self.store.begin().await?;
        let listing = self.changeable(caller, &tx, id).await?;
        if listing.status == ListingStatus::Archived {
            return Err(MarketplaceError::FailedPrecondition(format!(
                "listing {id} is already archived"
            )));
        }
        if !tx.set_listing_status(id, listing.version, listing.status, ListingStatus::Archived, now()).await? {
            return Err(concurrent(id));
        }
        let archived = reload(&tx, id).await?;
        tx.audit(audit_event(caller, "listing.archive", id, serde_json::json!({"from": listing.status.as_str()}))).await?;
        self.commit(tx, event(EventKind::Archived, &archived, None, None)).await?;
        tracing::info!(listing_id = id, actor = %caller.actor_id(), "listing archived");
        Ok(archived)
    }

    /// Creates the ACTIVE plan of a listing that has none.
    pub async fn create_plan(&self, caller: &Principal, listing_id: &str, new: NewPlan) -> Result<Plan> {
        let tx = self.store.begin().await?;
        let listing = self.changeable(caller, &tx, listing_id).await?;
        if listing.status == ListingStatus::Archived {
            return Err(MarketplaceError::FailedPrecondition(format!(
                "listing {listing_id} is archived; plans cannot be added"
            )));
        }
        if tx.active_plan_count(listing_id).await? > 0 {
            return Err(MarketplaceError::FailedPrecondition(format!(
                "listing {listing_id} already has an ACTIVE plan; change it with RotatePlan"
            )));
        }
        let plan = Plan {
            id: new_id(),
            listing_id: listing_id.to_owned(),
            name: new.name,
            price: new.price,
            interval: new.interval,
            status: PlanStatus::Active,
            revision: tx.max_plan_revision(listing_id).await? + 1,
            replaces_plan_id: None,
            create_time: now(),
            retire_time: None,
        };
        tx.insert_plan(&plan).await?;
        self.commit(tx, event(EventKind::PlanCreated, &listing, Some(&plan), None)).await?;
        Ok(plan)
    }

    /// Lists the plans of a listing the caller may see, by revision.
    pub async fn list_plans(
        &self,
        caller: &Principal,
        listing_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Plan>> {
        access::ensure_can_read(caller)?;
        let limit = page::page_size(page_size)?;
        let scope = page::scope(&["plans", &caller.actor_id(), listing_id]);
        let after = match page::decode(page_token, &scope)? {
            None => 0,
            Some(after) => after.parse().map_err(|_| {
                MarketplaceError::invalid("page_token", "is not a next_page_token of this request")
            })?,
        };
        access::visible(caller, self.store.listing(listing_id).await?, listing_id)?;
        let mut items = self.store.plans(listing_id, after, limit + 1).await?;
        let next_page_token = next_token(&mut items, limit, &scope, |p| p.revision.to_string());
        Ok(Page { items, next_page_token })
    }

    /// Retires an ACTIVE plan and creates its successor, atomically.
    pub async fn rotate_plan(
        &self,
        caller: &Principal,
        plan_id: &str,
        successor: Successor,
    ) -> Result<(Plan, Plan)> {
        let tx = self.store.begin().await?;
        let not_found = || MarketplaceError::NotFound(format!("plan {plan_id}"));
        let old = tx.plan(plan_id).await?.ok_or_else(not_found)?;
        let listing = tx.listing(&old.listing_id).await?.ok_or_else(not_found)?;
        if !access::can_see(caller, &listing) {
            return Err(not_found());
        }
        access::ensure_can_change(caller, &listing)?;
        if listing.status == ListingStatus::Archived {
            return Err(MarketplaceError::FailedPrecondition(format!(
                "listing {} is archived; its plans cannot rotate",
                listing.id
            )));
        }
        if old.status != PlanStatus::Active {
            return Err(MarketplaceError::FailedPrecondition(format!(
                "plan {plan_id} is RETIRED; rotate the listing's ACTIVE plan instead"
            )));
        }
        let time = now();
        if !tx.retire_plan(plan_id, time).await? {
            return Err(concurrent(plan_id));
        }
        let new = Plan {
            id: new_id(),
            listing_id: old.listing_id.clone(),
            name: successor.name.unwrap_or_else(|| old.name.clone()),
            price: successor.price,
            interval: successor.interval.unwrap_or(old.interval),
            status: PlanStatus::Active,
            revision: old.revision + 1,
            replaces_plan_id: Some(old.id.clone()),
            create_time: time,
            retire_time: None,
        };
        tx.insert_plan(&new).await?;
        let retired = tx.plan(plan_id).await?.ok_or_else(not_found)?;
        let details = serde_json::json!({
            "listing_id": listing.id,
            "new_plan_id": new.id,
            "revision": new.revision,
            "price": {"currency_code": new.price.currency_code, "amount_minor": new.price.amount_minor},
        });
        tx.audit(audit_event(caller, "plan.rotate", plan_id, details)).await?;
        self.commit(tx, event(EventKind::PlanRotated, &listing, Some(&new), Some(&retired))).await?;
        tracing::info!(plan_id, new_plan_id = %new.id, actor = %caller.actor_id(), "plan rotated");
        Ok((retired, new))
    }

    /// Loads a listing that the caller may change.
    async fn changeable(&self, caller: &Principal, tx: &Tx, id: &str) -> Result<Listing> {
        access::ensure_can_write(caller)?;
        let listing = access::visible(caller, tx.listing(id).await?, id)?;
        access::ensure_can_change(caller, &listing)?;
        Ok(listing)
    }

    async fn commit(&self, tx: Tx, event: ListingEvent) -> Result<()> {
        crate::webhooks::outbox::insert(tx.txn(), &event).await?;
        tx.commit().await?;
        self.events.publish(event);
        self.outbox_written.notify_one();
        Ok(())
    }
}

fn event(kind: EventKind, listing: &Listing, plan: Option<&Plan>, retired: Option<&Plan>) -> ListingEvent {
    ListingEvent {
        id: new_id(),
        kind,
        listing: listing.clone(),
        plan: plan.cloned(),
        retired_plan: retired.cloned(),
        time: now(),
    }
}

/// An audit event of a change by `caller`, with the call's peer and client
/// address.
pub(crate) fn audit_event(caller: &Principal, action: &str, target: &str, mut details: serde_json::Value) -> valora_audit::AuditEvent {
    let call = valora_mesh::guard::current_call();
    if let Some(object) = details.as_object_mut() {
        object.insert("key_id".into(), caller.key_id.clone().into());
    }
    valora_audit::AuditEvent {
        action: action.to_owned(),
        outcome: Some(valora_audit::Outcome::Success),
        actor: caller.actor_id(),
        peer: call.as_ref().map(|c| c.peer.to_string()).unwrap_or_default(),
        client_addr: call.and_then(|c| c.client_addr).unwrap_or_default(),
        target: target.to_owned(),
        reason: String::new(),
        details,
    }
}

async fn reload(tx: &Tx, id: &str) -> Result<Listing> {
    tx.listing(id).await?.ok_or_else(|| MarketplaceError::NotFound(format!("listing {id}")))
}

fn stale(id: &str, given: i64, current: i64) -> MarketplaceError {
    MarketplaceError::Aborted(format!(
        "listing {id} is at version {current}, not {given}; read it again and retry"
    ))
}

fn concurrent(id: &str) -> MarketplaceError {
    MarketplaceError::Aborted(format!("{id} was changed concurrently; read it again and retry"))
}

/// Trims the extra item fetched to detect a next page and returns its token.
fn next_token<T>(items: &mut Vec<T>, limit: u64, scope: &str, position: impl Fn(&T) -> String) -> String {
    if items.len() as u64 <= limit {
        return String::new();
    }
    items.truncate(limit as usize);
    items.last().map(|last| page::encode(&position(last), scope)).unwrap_or_default()
}
