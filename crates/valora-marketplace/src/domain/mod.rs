//! Marketplace domain: listings, plans and the rules that govern them.

mod error;
pub mod validate;

use chrono::{DateTime, Utc};

pub use error::{MarketplaceError, Violation};

/// Largest accepted amount in minor units: 2^53 - 1, the largest integer
/// that JavaScript clients can hold exactly.
pub const MAX_AMOUNT_MINOR: i64 = (1 << 53) - 1;

/// An amount of money in one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Money {
    /// ISO 4217 alphabetic code, upper case.
    pub currency_code: String,
    /// Amount in the currency's minor unit.
    pub amount_minor: i64,
}

/// Lifecycle state of a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListingStatus {
    Draft,
    Published,
    Archived,
}

/// How often a plan is charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BillingInterval {
    OneTime,
    Month,
    Year,
}

/// Lifecycle state of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanStatus {
    Active,
    Retired,
}

/// A listing as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub id: String,
    pub seller_id: String,
    pub title: String,
    pub description: String,
    pub category: String,
    pub price: Money,
    pub status: ListingStatus,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub publish_time: Option<DateTime<Utc>>,
    pub version: i64,
}

/// A pricing plan as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub id: String,
    pub listing_id: String,
    pub name: String,
    pub price: Money,
    pub interval: BillingInterval,
    pub status: PlanStatus,
    pub revision: i64,
    pub replaces_plan_id: Option<String>,
    pub create_time: DateTime<Utc>,
    pub retire_time: Option<DateTime<Utc>>,
}

/// Fields of a new listing, already validated.
#[derive(Clone, Debug)]
pub struct NewListing {
    pub title: String,
    pub description: String,
    pub category: String,
    pub price: Money,
}

/// Changes to a listing; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct ListingChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub price: Option<Money>,
}

/// Fields of a new plan, already validated.
#[derive(Clone, Debug)]
pub struct NewPlan {
    pub name: String,
    pub price: Money,
    pub interval: BillingInterval,
}

/// The successor of a plan in a rotation; unset fields are inherited.
#[derive(Clone, Debug)]
pub struct Successor {
    pub price: Money,
    pub name: Option<String>,
    pub interval: Option<BillingInterval>,
}

/// Filters of a listing search, already validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListingFilter {
    pub status: Option<ListingStatus>,
    pub seller_id: Option<String>,
    pub category: Option<String>,
    /// Text searched in title and description, ignoring case.
    pub query: Option<String>,
}

/// What happened to a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Created,
    Updated,
    Published,
    Archived,
    PlanCreated,
    PlanRotated,
}

impl EventKind {
    /// Stable name, as used in webhook event types.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "listing.created",
            Self::Updated => "listing.updated",
            Self::Published => "listing.published",
            Self::Archived => "listing.archived",
            Self::PlanCreated => "plan.created",
            Self::PlanRotated => "plan.rotated",
        }
    }
}

/// A change to a listing or its plans, after it was committed.
#[derive(Clone, Debug)]
pub struct ListingEvent {
    pub id: String,
    pub kind: EventKind,
    pub listing: Listing,
    pub plan: Option<Plan>,
    pub retired_plan: Option<Plan>,
    pub time: DateTime<Utc>,
}

impl ListingStatus {
    /// Database and log representation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "DRAFT",
            Self::Published => "PUBLISHED",
            Self::Archived => "ARCHIVED",
        }
    }

    /// Parses the database representation.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "DRAFT" => Some(Self::Draft),
            "PUBLISHED" => Some(Self::Published),
            "ARCHIVED" => Some(Self::Archived),
            _ => None,
        }
    }
}

impl PlanStatus {
    /// Database and log representation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Retired => "RETIRED",
        }
    }

    /// Parses the database representation.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(Self::Active),
            "RETIRED" => Some(Self::Retired),
            _ => None,
        }
    }
}

impl BillingInterval {
    /// Database and log representation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneTime => "ONE_TIME",
            Self::Month => "MONTH",
            Self::Year => "YEAR",
        }
    }

    /// Parses the database representation.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ONE_TIME" => Some(Self::OneTime),
            "MONTH" => Some(Self::Month),
            "YEAR" => Some(Self::Year),
            _ => None,
        }
    }
}

/// The current time, truncated to microseconds: the precision PostgreSQL
/// stores, so a value reads back exactly as it was written.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    let micros = now.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(now)
}

/// A new time-ordered id (UUID version 7), so ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
