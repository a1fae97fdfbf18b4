//! The outbox and webhook endpoints, deliveries and attempts.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, boolean, integer, integer_null, string_len, text, text_null, timestamp_with_time_zone,
    timestamp_with_time_zone_null,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum MarketplaceOutbox {
    Table,
    Seq,
    EventId,
    EventType,
    OwnerId,
    ListingId,
    Payload,
    CreateTime,
    FannedOut,
}

#[derive(DeriveIden)]
enum MarketplaceWebhookEndpoints {
    Table,
    Id,
    OwnerId,
    Url,
    EventTypes,
    SecretSealed,
    PreviousSecretSealed,
    PreviousSecretExpireTime,
    Status,
    FailureReason,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum MarketplaceWebhookDeliveries {
    Table,
    Id,
    EndpointId,
    OutboxSeq,
    EventId,
    EventType,
    Status,
    Attempts,
    NextAttemptTime,
    LockedUntil,
    LastStatusCode,
    LastError,
    CreateTime,
    DeliverTime,
}

#[derive(DeriveIden)]
enum MarketplaceWebhookAttempts {
    Table,
    Id,
    DeliveryId,
    Attempt,
    Time,
    StatusCode,
    Error,
    DurationMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MarketplaceOutbox::Table)
                    .col(big_integer(MarketplaceOutbox::Seq).auto_increment().primary_key())
                    .col(string_len(MarketplaceOutbox::EventId, 36).unique_key())
                    .col(string_len(MarketplaceOutbox::EventType, 64))
                    .col(string_len(MarketplaceOutbox::OwnerId, 128))
                    .col(string_len(MarketplaceOutbox::ListingId, 36))
                    .col(text(MarketplaceOutbox::Payload))
                    .col(timestamp_with_time_zone(MarketplaceOutbox::CreateTime))
                    .col(boolean(MarketplaceOutbox::FannedOut))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("marketplace_outbox_pending_idx")
                    .table(MarketplaceOutbox::Table)
                    .col(MarketplaceOutbox::FannedOut)
                    .col(MarketplaceOutbox::Seq)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(MarketplaceWebhookEndpoints::Table)
                    .col(string_len(MarketplaceWebhookEndpoints::Id, 36).primary_key())
                    .col(string_len(MarketplaceWebhookEndpoints::OwnerId, 128))
                    .col(text(MarketplaceWebhookEndpoints::Url))
                    .col(text(MarketplaceWebhookEndpoints::EventTypes))
                    .col(text(MarketplaceWebhookEndpoints::SecretSealed))
                    .col(text_null(MarketplaceWebhookEndpoints::PreviousSecretSealed))
                    .col(timestamp_with_time_zone_null(MarketplaceWebhookEndpoints::PreviousSecretExpireTime))
                    .col(string_len(MarketplaceWebhookEndpoints::Status, 16))
                    .col(text(MarketplaceWebhookEndpoints::FailureReason))
                    .col(timestamp_with_time_zone(MarketplaceWebhookEndpoints::CreateTime))
                    .col(timestamp_with_time_zone(MarketplaceWebhookEndpoints::UpdateTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("marketplace_webhook_endpoints_owner_idx")
                    .table(MarketplaceWebhookEndpoints::Table)
                    .col(MarketplaceWebhookEndpoints::OwnerId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(MarketplaceWebhookDeliveries::Table)
                    .col(string_len(MarketplaceWebhookDeliveries::Id, 36).primary_key())
                    .col(string_len(MarketplaceWebhookDeliveries::EndpointId, 36))
                    .col(big_integer(MarketplaceWebhookDeliveries::OutboxSeq))
                    .col(string_len(MarketplaceWebhookDeliveries::EventId, 36))
                    .col(string_len(MarketplaceWebhookDeliveries::EventType, 64))
                    .col(string_len(MarketplaceWebhookDeliveries::Status, 16))
                    .col(integer(MarketplaceWebhookDeliveries::Attempts))
                    .col(timestamp_with_time_zone(MarketplaceWebhookDeliveries::NextAttemptTime))
                    .col(timestamp_with_time_zone_null(MarketplaceWebhookDeliveries::LockedUntil))
                    .col(integer_null(MarketplaceWebhookDeliveries::LastStatusCode))
                    .col(text(MarketplaceWebhookDeliveries::LastError))
                    .col(timestamp_with_time_zone(MarketplaceWebhookDeliveries::CreateTime))
                    .col(timestamp_with_time_zone_null(MarketplaceWebhookDeliveries::DeliverTime))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("marketplace_webhook_deliveries_order_key")
                    .table(MarketplaceWebhookDeliveries::Table)
                    .col(MarketplaceWebhookDeliveries::EndpointId)
                    .col(MarketplaceWebhookDeliveries::OutboxSeq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("marketplace_webhook_deliveries_pending_idx")
                    .table(MarketplaceWebhookDeliveries::Table)
                    .col(MarketplaceWebhookDeliveries::Status)
                    .col(MarketplaceWebhookDeliveries::OutboxSeq)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(MarketplaceWebhookAttempts::Table)
                    .col(string_len(MarketplaceWebhookAttempts::Id, 36).primary_key())
                    .col(string_len(MarketplaceWebhookAttempts::DeliveryId, 36))
                    .col(integer(MarketplaceWebhookAttempts::Attempt))
                    .col(timestamp_with_time_zone(MarketplaceWebhookAttempts::Time))
                    .col(integer_null(MarketplaceWebhookAttempts::StatusCode))
                    .col(text(MarketplaceWebhookAttempts::Error))
                    .col(big_integer(MarketplaceWebhookAttempts::DurationMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("marketplace_webhook_attempts_delivery_idx")
                    .table(MarketplaceWebhookAttempts::Table)
                    .col(MarketplaceWebhookAttempts::DeliveryId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["marketplace_webhook_attempts", "marketplace_webhook_deliveries", "marketplace_webhook_endpoints", "marketplace_outbox"] {
            manager.drop_table(Table::drop().table(Alias::new(table)).to_owned()).await?;
        }
        Ok(())
    }
}
