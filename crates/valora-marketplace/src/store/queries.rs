//! Listing and plan queries.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::entity::{listing, plan};
use super::{Store, Tx, db_error};
use crate::domain::{
    BillingInterval, Listing, ListingChanges, ListingFilter, ListingStatus, MarketplaceError,
    Money, Plan, PlanStatus,
};

type Result<T> = std::result::Result<T, MarketplaceError>;

/// Which listings a caller may see besides published ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Every listing (administrators).
    All,
    /// Published listings and those owned by this seller id.
    PublishedAndOwn(String),
}

impl Store {
    /// Reads one listing.
    pub async fn listing(&self, id: &str) -> Result<Option<Listing>> {
        find_listing(&self.db, id).await
    }

    /// Reads up to `limit` listings after `after_id`, in id order.
    pub async fn listings(
        &self,
        filter: &ListingFilter,
        visibility: &Visibility,
        after_id: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Listing>> {
        let mut query = listing::Entity::find();
        if let Visibility::PublishedAndOwn(seller) = visibility {
            query = query.filter(
                Condition::any()
                    .add(listing::Column::Status.eq(ListingStatus::Published.as_str()))
                    .add(listing::Column::SellerId.eq(seller.as_str())),
            );
        }
        if let Some(status) = filter.status {
            query = query.filter(listing::Column::Status.eq(status.as_str()));
        }
        if let Some(seller) = &filter.seller_id {
            query = query.filter(listing::Column::SellerId.eq(seller.as_str()));
        }
        if let Some(category) = &filter.category {
            query = query.filter(listing::Column::Category.eq(category.as_str()));
        }
        if let Some(text) = &filter.query {
            let pattern = format!("%{}%", escape_like(&text.to_lowercase()));
            let contains = |column: listing::Column| {
                Expr::expr(Func::lower(Expr::col(column)))
                    .like(LikeExpr::new(pattern.clone()).escape('\\'))
            };
            query = query.filter(
                Condition::any()
                    .add(contains(listing::Column::Title))
                    .add(contains(listing::Column::Description)),
            );
        }
        if let Some(after) = after_id {
            query = query.filter(listing::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(listing::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        rows.into_iter().map(to_listing).collect()
    }

    /// Reads one plan.
    pub async fn plan(&self, id: &str) -> Result<Option<Plan>> {
        find_plan(&self.db, id).await
    }

    /// Reads up to `limit` plans of a listing after `after_revision`.
    pub async fn plans(&self, listing_id: &str, after_revision: i64, limit: u64) -> Result<Vec<Plan>> {
        let rows = plan::Entity::find()
            .filter(plan::Column::ListingId.eq(listing_id))
            .filter(plan::Column::Revision.gt(after_revision))
            .order_by_asc(plan::Column::Revision)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        rows.into_iter().map(to_plan).collect()
    }
}

impl Tx {
    /// Reads one listing inside the transaction.
    pub async fn listing(&self, id: &str) -> Result<Option<Listing>> {
        find_listing(&self.txn, id).await
    }

    /// Reads one plan inside the transaction.
    pub async fn plan(&self, id: &str) -> Result<Option<Plan>> {
        find_plan(&self.txn, id).await
    }

    /// Inserts a new listing.
    pub async fn insert_listing(&self, listing: &Listing) -> Result<()> {
        listing::ActiveModel {
            id: Set(listing.id.clone()),
            seller_id: Set(listing.seller_id.clone()),
            title: Set(listing.title.clone()),
            description: Set(listing.description.clone()),
            category: Set(listing.category.clone()),
            currency_code: Set(listing.price.currency_code.clone()),
            amount_minor: Set(listing.price.amount_minor),
            status: Set(listing.status.as_str().to_owned()),
            create_time: Set(listing.create_time),
            update_time: Set(listing.update_time),
            publish_time: Set(listing.publish_time),
            version: Set(listing.version),
        }
        .insert(&self.txn)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Applies `changes` if the listing is still at `version`, bumping the
    /// version. Returns whether a row changed.
    pub async fn update_listing(
        &self,
        id: &str,
        version: i64,
        changes: &ListingChanges,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut update = listing::Entity::update_many()
            .col_expr(listing::Column::Version, Expr::col(listing::Column::Version).add(1))
            .col_expr(listing::Column::UpdateTime, Expr::value(now));
        if let Some(title) = &changes.title {
            update = update.col_expr(listing::Column::Title, Expr::value(title.clone()));
        }
        if let Some(description) = &changes.description {
            update = update.col_expr(listing::Column::Description, Expr::value(description.clone()));
        }
        if let Some(category) = &changes.category {
            update = update.col_expr(listing::Column::Category, Expr::value(category.clone()));
        }
        if let Some(price) = &changes.price {
            update = update
                .col_expr(listing::Column::CurrencyCode, Expr::value(price.currency_code.clone()))
                .col_expr(listing::Column::AmountMinor, Expr::value(price.amount_minor));
        }
        let result = update
            .filter(listing::Column::Id.eq(id))
            .filter(listing::Column::Version.eq(version))
            .exec(&self.txn)
            .await
            .map_err(db_error)?;
        Ok(result.rows_affected == 1)
    }

    /// Moves a listing from `from` to `to` if it is still at `version`.
    /// Publishing also sets the publish time. Returns whether a row changed.
    pub async fn set_listing_status(
        &self,
        id: &str,
        version: i64,
        from: ListingStatus,
        to: ListingStatus,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut update = listing::Entity::update_many()
            .col_expr(listing::Column::Status, Expr::value(to.as_str()))
            .col_expr(listing::Column::Version, Expr::col(listing::Column::Version).add(1))
            .col_expr(listing::Column::UpdateTime, Expr::value(now));
        if to == ListingStatus::Published {
            update = update.col_expr(listing::Column::PublishTime, Expr::value(now));
        }
        let result = update
            .filter(listing::Column::Id.eq(id))
            .filter(listing::Column::Version.eq(version))
            .filter(listing::Column::Status.eq(from.as_str()))
            .exec(&self.txn)
            .await
            .map_err(db_error)?;
        Ok(result.rows_affected == 1)
    }

    /// Number of ACTIVE plans of a listing.
    pub async fn active_plan_count(&self, listing_id: &str) -> Result<u64> {
        plan::Entity::find()
            .filter(plan::Column::ListingId.eq(listing_id))
            .filter(plan::Column::Status.eq(PlanStatus::Active.as_str()))
            .count(&self.txn)
            .await
            .map_err(db_error)
    }

    /// Highest plan revision of a listing, 0 when it has none.
    pub async fn max_plan_revision(&self, listing_id: &str) -> Result<i64> {
        let latest = plan::Entity::find()
            .filter(plan::Column::ListingId.eq(listing_id))
            .order_by_desc(plan::Column::Revision)
            .one(&self.txn)
            .await
            .map_err(db_error)?;
        Ok(latest.map_or(0, |p| p.revision))
    }

    /// Inserts a plan.
    pub async fn insert_plan(&self, plan: &Plan) -> Result<()> {
        plan::ActiveModel {
            id: Set(plan.id.clone()),
            listing_id: Set(plan.listing_id.clone()),
            name: Set(plan.name.clone()),
            currency_code: Set(plan.price.currency_code.clone()),
            amount_minor: Set(plan.price.amount_minor),
            interval: Set(plan.interval.as_str().to_owned()),
            status: Set(plan.status.as_str().to_owned()),
            revision: Set(plan.revision),
            replaces_plan_id: Set(plan.replaces_plan_id.clone()),
            create_time: Set(plan.create_time),
            retire_time: Set(plan.retire_time),
        }
        .insert(&self.txn)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Retires a plan if it is still ACTIVE. Returns whether a row changed.
    pub async fn retire_plan(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        let result = plan::Entity::update_many()
            .col_expr(plan::Column::Status, Expr::value(PlanStatus::Retired.as_str()))
            .col_expr(plan::Column::RetireTime, Expr::value(now))
            .filter(plan::Column::Id.eq(id))
            .filter(plan::Column::Status.eq(PlanStatus::Active.as_str()))
            .exec(&self.txn)
            .await
            .map_err(db_error)?;
        Ok(result.rows_affected == 1)
    }
}

async fn find_listing(db: &impl ConnectionTrait, id: &str) -> Result<Option<Listing>> {
    let row = listing::Entity::find_by_id(id.to_owned()).one(db).await.map_err(db_error)?;
    row.map(to_listing).transpose()
}

async fn find_plan(db: &impl ConnectionTrait, id: &str) -> Result<Option<Plan>> {
    let row = plan::Entity::find_by_id(id.to_owned()).one(db).await.map_err(db_error)?;
    row.map(to_plan).transpose()
}

fn corrupt(table: &str, id: &str, column: &str, value: &str) -> MarketplaceError {
    MarketplaceError::Internal(format!("{table} row {id} has invalid {column} {value:?}"))
}

fn to_listing(row: listing::Model) -> Result<Listing> {
    let status = ListingStatus::parse(&row.status)
        .ok_or_else(|| corrupt("listing", &row.id, "status", &row.status))?;
    Ok(Listing {
        id: row.id,
        seller_id: row.seller_id,
        title: row.title,
        description: row.description,
        category: row.category,
        price: Money { currency_code: row.currency_code, amount_minor: row.amount_minor },
        status,
        create_time: row.create_time,
        update_time: row.update_time,
        publish_time: row.publish_time,
        version: row.version,
    })
}

fn to_plan(row: plan::Model) -> Result<Plan> {
    let status = PlanStatus::parse(&row.status)
        .ok_or_else(|| corrupt("plan", &row.id, "status", &row.status))?;
    let interval = BillingInterval::parse(&row.interval)
        .ok_or_else(|| corrupt("plan", &row.id, "interval", &row.interval))?;
    Ok(Plan {
        id: row.id,
        listing_id: row.listing_id,
        name: row.name,
        price: Money { currency_code: row.currency_code, amount_minor: row.amount_minor },
        interval,
        status,
        revision: row.revision,
        replaces_plan_id: row.replaces_plan_id,
        create_time: row.create_time,
        retire_time: row.retire_time,
    })
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `\` as escape character.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
