//! Users, refresh tokens and API keys.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    string_len, string_len_null, text, timestamp_with_time_zone, timestamp_with_time_zone_null,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum AuthUsers {
    Table,
    Id,
    Email,
    EmailNormalized,
    DisplayName,
    PasswordHash,
    Role,
    CreateTime,
    UpdateTime,
}

#[derive(DeriveIden)]
enum AuthRefreshTokens {
    Table,
    Id,
    FamilyId,
    UserId,
    TokenHash,
    CreateTime,
    ExpireTime,
    UsedTime,
    RevokeTime,
}

#[derive(DeriveIden)]
enum AuthApiKeys {
    Table,
    Id,
    OwnerId,
    Name,
    Scopes,
    SecretHash,
    CreateTime,
    ExpireTime,
    RevokeTime,
    ReplacedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuthUsers::Table)
                    .col(string_len(AuthUsers::Id, 36).primary_key())
                    .col(text(AuthUsers::Email))
                    .col(string_len(AuthUsers::EmailNormalized, 320).unique_key())
                    .col(text(AuthUsers::DisplayName))
                    .col(text(AuthUsers::PasswordHash))
                    .col(string_len(AuthUsers::Role, 16))
                    .col(timestamp_with_time_zone(AuthUsers::CreateTime))
                    .col(timestamp_with_time_zone(AuthUsers::UpdateTime))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuthRefreshTokens::Table)
                    .col(string_len(AuthRefreshTokens::Id, 36).primary_key())
                    .col(string_len(AuthRefreshTokens::FamilyId, 36))
                    .col(string_len(AuthRefreshTokens::UserId, 36))
                    .col(string_len(AuthRefreshTokens::TokenHash, 64).unique_key())
                    .col(timestamp_with_time_zone(AuthRefreshTokens::CreateTime))
                    .col(timestamp_with_time_zone(AuthRefreshTokens::ExpireTime))
                    .col(timestamp_with_time_zone_null(AuthRefreshTokens::UsedTime))
                    .col(timestamp_with_time_zone_null(AuthRefreshTokens::RevokeTime))
                    .foreign_key(
                        ForeignKey::create()
                            .name("auth_refresh_tokens_user_fk")
                            .from(AuthRefreshTokens::Table, AuthRefreshTokens::UserId)
                            .to(AuthUsers::Table, AuthUsers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("auth_refresh_tokens_family_idx", AuthRefreshTokens::FamilyId),
            ("auth_refresh_tokens_user_idx", AuthRefreshTokens::UserId),
        ] {
            manager
                .create_index(
                    Index::create().name(name).table(AuthRefreshTokens::Table).col(column).to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(AuthApiKeys::Table)
                    .col(string_len(AuthApiKeys::Id, 32).primary_key())
                    .col(string_len_null(AuthApiKeys::OwnerId, 36))
                    .col(text(AuthApiKeys::Name))
                    .col(text(AuthApiKeys::Scopes))
                    .col(string_len(AuthApiKeys::SecretHash, 64))
                    .col(timestamp_with_time_zone(AuthApiKeys::CreateTime))
                    .col(timestamp_with_time_zone_null(AuthApiKeys::ExpireTime))
                    .col(timestamp_with_time_zone_null(AuthApiKeys::RevokeTime))
                    .col(string_len_null(AuthApiKeys::ReplacedBy, 32))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("auth_api_keys_owner_idx")
                    .table(AuthApiKeys::Table)
                    .col(AuthApiKeys::OwnerId)
                    .col(AuthApiKeys::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AuthApiKeys::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AuthRefreshTokens::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AuthUsers::Table).to_owned()).await
    }
}
