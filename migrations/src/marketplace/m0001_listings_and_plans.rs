//! Listings and their pricing plans.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, string_len, text, timestamp_with_time_zone, timestamp_with_time_zone_null,
    string_len_null,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum MarketplaceListings {
    Table,
    Id,
    SellerId,
    Title,
    Description,
    Category,
    CurrencyCode,
    AmountMinor,
    Status,
    CreateTime,
    UpdateTime,
    PublishTime,
    Version,
}

#[derive(DeriveIden)]
enum MarketplacePlans {
    Table,
    Id,
    ListingId,
    Name,
    CurrencyCode,
    AmountMinor,
    Interval,
    Status,
    Revision,
    ReplacesPlanId,
    CreateTime,
    RetireTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MarketplaceListings::Table)
                    .col(string_len(MarketplaceListings::Id, 36).primary_key())
                    .col(string_len(MarketplaceListings::SellerId, 128))
                    .col(text(MarketplaceListings::Title))
                    .col(text(MarketplaceListings::Description))
                    .col(string_len(MarketplaceListings::Category, 64))
                    .col(string_len(MarketplaceListings::CurrencyCode, 3))
                    .col(big_integer(MarketplaceListings::AmountMinor))
                    .col(string_len(MarketplaceListings::Status, 16))
                    .col(timestamp_with_time_zone(MarketplaceListings::CreateTime))
                    .col(timestamp_with_time_zone(MarketplaceListings::UpdateTime))
                    .col(timestamp_with_time_zone_null(MarketplaceListings::PublishTime))
                    .col(big_integer(MarketplaceListings::Version))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("marketplace_listings_seller_idx", MarketplaceListings::SellerId),
            ("marketplace_listings_status_idx", MarketplaceListings::Status),
            ("marketplace_listings_category_idx", MarketplaceListings::Category),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(MarketplaceListings::Table)
                        .col(column)
                        .col(MarketplaceListings::Id)
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(MarketplacePlans::Table)
                    .col(string_len(MarketplacePlans::Id, 36).primary_key())
                    .col(string_len(MarketplacePlans::ListingId, 36))
                    .col(text(MarketplacePlans::Name))
                    .col(string_len(MarketplacePlans::CurrencyCode, 3))
                    .col(big_integer(MarketplacePlans::AmountMinor))
                    .col(string_len(MarketplacePlans::Interval, 16))
                    .col(string_len(MarketplacePlans::Status, 16))
                    .col(big_integer(MarketplacePlans::Revision))
                    .col(string_len_null(MarketplacePlans::ReplacesPlanId, 36))
                    .col(timestamp_with_time_zone(MarketplacePlans::CreateTime))
                    .col(timestamp_with_time_zone_null(MarketplacePlans::RetireTime))
                    .foreign_key(
                        ForeignKey::create()
                            .name("marketplace_plans_listing_fk")
                            .from(MarketplacePlans::Table, MarketplacePlans::ListingId)
                            .to(MarketplaceListings::Table, MarketplaceListings::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("marketplace_plans_revision_key")
                    .table(MarketplacePlans::Table)
                    .col(MarketplacePlans::ListingId)
                    .col(MarketplacePlans::Revision)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // At most one ACTIVE plan per listing, enforced by the database so
        // that concurrent rotations cannot both win. Partial indexes share
        // this syntax on PostgreSQL and SQLite.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX marketplace_plans_one_active_key \
                 ON marketplace_plans (listing_id) WHERE status = 'ACTIVE'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(MarketplacePlans::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(MarketplaceListings::Table).to_owned()).await
    }
}
