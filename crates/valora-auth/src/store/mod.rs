//! Persistence of users, refresh tokens and API keys through sea-orm.
//!
//! Queries are free functions generic over the connection, so they run on
//! the pool or inside a transaction alike.

pub mod entity;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr,
    TransactionTrait,
};

use self::entity::{api_key, refresh_token, user};
use crate::domain::{ApiKeyInfo, AuthError, Role, User};

type Result<T> = std::result::Result<T, AuthError>;

/// The auth database.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects to `url`; SQLite gets one connection in WAL mode.
    pub async fn connect(url: &str, acquire_timeout: Duration) -> std::result::Result<Self, DbErr> {
        let mut options = ConnectOptions::new(url.to_owned());
        options.acquire_timeout(acquire_timeout).connect_timeout(acquire_timeout).sqlx_logging(false);
        if url.starts_with("sqlite:") {
            options.max_connections(1).min_connections(1);
            options.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5))
            });
        } else {
            options.max_connections(16).min_connections(1);
        }
        Ok(Self { db: Database::connect(options).await? })
    }

    /// The pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<DatabaseTransaction> {
        self.db.begin().await.map_err(db_error)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.db.ping().await.map_err(db_error)
    }
}

/// Commits a transaction.
pub async fn commit(txn: DatabaseTransaction) -> Result<()> {
    txn.commit().await.map_err(db_error)
}

/// Translates a database error into its meaning for callers.
pub fn db_error(error: DbErr) -> AuthError {
    if let Some(SqlErr::UniqueConstraintViolation(_)) = error.sql_err() {
        return AuthError::Aborted("a concurrent change conflicted; retry".to_owned());
    }
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => AuthError::Unavailable(error.to_string()),
        DbErr::Exec(ref e) | DbErr::Query(ref e) if is_connection_loss(&e.to_string()) => {
            AuthError::Unavailable(error.to_string())
        }
        other => AuthError::Internal(other.to_string()),
    }
}

fn is_connection_loss(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["connection", "broken pipe", "timed out", "pool", "terminating"].iter().any(|n| message.contains(n))
}

fn to_user(row: user::Model) -> Result<(User, String)> {
    let role = Role::parse(&row.role)
        .ok_or_else(|| AuthError::Internal(format!("user {} has invalid role {:?}", row.id, row.role)))?;
    let user = User {
        id: row.id,
        email: row.email,
        display_name: row.display_name,
        role,
        create_time: row.create_time,
    };
    Ok((user, row.password_hash))
}

/// Inserts a user; ALREADY_EXISTS when the normalised email is taken.
pub async fn insert_user(db: &impl ConnectionTrait, user: &User, email_normalized: &str, hash: &str) -> Result<()> {
    let row = user::ActiveModel {
        id: Set(user.id.clone()),
        email: Set(user.email.clone()),
        email_normalized: Set(email_normalized.to_owned()),
        display_name: Set(user.display_name.clone()),
        password_hash: Set(hash.to_owned()),
        role: Set(user.role.as_str().to_owned()),
        create_time: Set(user.create_time),
        update_time: Set(user.create_time),
    };
    match row.insert(db).await {
        Ok(_) => Ok(()),
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(AuthError::AlreadyExists("a user with this email already exists".to_owned()))
        }
        Err(error) => Err(db_error(error)),
    }
}

/// Reads a user and their password hash by normalised email.
pub async fn user_by_email(db: &impl ConnectionTrait, email_normalized: &str) -> Result<Option<(User, String)>> {
    let row = user::Entity::find()
        .filter(user::Column::EmailNormalized.eq(email_normalized))
        .one(db)
        .await
        .map_err(db_error)?;
    row.map(to_user).transpose()
}

/// Reads a user and their password hash by id.
pub async fn user_by_id(db: &impl ConnectionTrait, id: &str) -> Result<Option<(User, String)>> {
    let row = user::Entity::find_by_id(id.to_owned()).one(db).await.map_err(db_error)?;
    row.map(to_user).transpose()
}

/// Replaces a user's password hash.
pub async fn set_password_hash(db: &impl ConnectionTrait, id: &str, hash: &str, now: DateTime<Utc>) -> Result<()> {
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(hash.to_owned()))
        .col_expr(user::Column::UpdateTime, Expr::value(now))
        .filter(user::Column::Id.eq(id))
        .exec(db)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Sets a user's role; returns whether the user exists.
pub async fn set_role(db: &impl ConnectionTrait, email_normalized: &str, role: Role, now: DateTime<Utc>) -> Result<bool> {
    let result = user::Entity::update_many()
        .col_expr(user::Column::Role, Expr::value(role.as_str()))
        .col_expr(user::Column::UpdateTime, Expr::value(now))
        .filter(user::Column::EmailNormalized.eq(email_normalized))
        .exec(db)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected == 1)
}

/// A stored refresh token.
pub type RefreshRow = refresh_token::Model;

/// Inserts a refresh token.
pub async fn insert_refresh(db: &impl ConnectionTrait, row: RefreshRow) -> Result<()> {
    refresh_token::ActiveModel {
        id: Set(row.id),
        family_id: Set(row.family_id),
        user_id: Set(row.user_id),
        token_hash: Set(row.token_hash),
        create_time: Set(row.create_time),
        expire_time: Set(row.expire_time),
        used_time: Set(row.used_time),
        revoke_time: Set(row.revoke_time),
    }
    .insert(db)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Reads a refresh token by its hash.
pub async fn refresh_by_hash(db: &impl ConnectionTrait, hash: &str) -> Result<Option<RefreshRow>> {
    refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(hash))
        .one(db)
        .await
        .map_err(db_error)
}

/// Marks a refresh token used if it is still unused and not revoked;
/// returns whether this call did so.
pub async fn mark_refresh_used(db: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> Result<bool> {
    let result = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::UsedTime, Expr::value(now))
        .filter(refresh_token::Column::Id.eq(id))
        .filter(refresh_token::Column::UsedTime.is_null())
        .filter(refresh_token::Column::RevokeTime.is_null())
        .exec(db)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected == 1)
}

/// Revokes every token of a family; returns how many changed.
pub async fn revoke_family(db: &impl ConnectionTrait, family_id: &str, now: DateTime<Utc>) -> Result<u64> {
    let result = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokeTime, Expr::value(now))
        .filter(refresh_token::Column::FamilyId.eq(family_id))
        .filter(refresh_token::Column::RevokeTime.is_null())
        .exec(db)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected)
}

/// Revokes every refresh token of a user.
pub async fn revoke_user_tokens(db: &impl ConnectionTrait, user_id: &str, now: DateTime<Utc>) -> Result<u64> {
    let result = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokeTime, Expr::value(now))
        .filter(refresh_token::Column::UserId.eq(user_id))
        .filter(refresh_token::Column::RevokeTime.is_null())
        .exec(db)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected)
}

fn to_key(row: api_key::Model) -> (ApiKeyInfo, String, Option<String>) {
    let info = ApiKeyInfo {
        id: row.id,
        owner_id: row.owner_id,
        name: row.name,
        scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
        create_time: row.create_time,
        expire_time: row.expire_time,
        revoke_time: row.revoke_time,
    };
    (info, row.secret_hash, row.replaced_by)
}

/// Inserts an API key.
pub async fn insert_key(db: &impl ConnectionTrait, info: &ApiKeyInfo, secret_hash: &str) -> Result<()> {
    api_key::ActiveModel {
        id: Set(info.id.clone()),
        owner_id: Set(info.owner_id.clone()),
        name: Set(info.name.clone()),
        scopes: Set(info.scopes.join(" ")),
        secret_hash: Set(secret_hash.to_owned()),
        create_time: Set(info.create_time),
        expire_time: Set(info.expire_time),
        revoke_time: Set(info.revoke_time),
        replaced_by: Set(None),
    }
    .insert(db)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Reads an API key: its info, secret hash and successor.
pub async fn key_by_id(db: &impl ConnectionTrait, id: &str) -> Result<Option<(ApiKeyInfo, String, Option<String>)>> {
    let row = api_key::Entity::find_by_id(id.to_owned()).one(db).await.map_err(db_error)?;
    Ok(row.map(to_key))
}

/// Lists keys of an owner (all keys when `owner` is `None`), by id.
pub async fn keys(db: &impl ConnectionTrait, owner: Option<&str>, after: Option<&str>, limit: u64) -> Result<Vec<ApiKeyInfo>> {
    let mut query = api_key::Entity::find();
    if let Some(owner) = owner {
        query = query.filter(api_key::Column::OwnerId.eq(owner));
    }
    if let Some(after) = after {
        query = query.filter(api_key::Column::Id.gt(after));
    }
    let rows = query.order_by_asc(api_key::Column::Id).limit(limit).all(db).await.map_err(db_error)?;
    Ok(rows.into_iter().map(|r| to_key(r).0).collect())
}

/// Shortens a key's life to `expire` and links its successor, unless it
/// was revoked or already replaced; returns whether this call did so.
pub async fn retire_key(
    db: &impl ConnectionTrait,
    id: &str,
    expire: DateTime<Utc>,
    successor: &str,
) -> Result<bool> {
    let result = api_key::Entity::update_many()
        .col_expr(api_key::Column::ExpireTime, Expr::value(expire))
        .col_expr(api_key::Column::ReplacedBy, Expr::value(successor.to_owned()))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::RevokeTime.is_null())
        .filter(api_key::Column::ReplacedBy.is_null())
        .exec(db)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected == 1)
}

/// Revokes a key; returns whether this call did so.
pub async fn revoke_key(db: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> Result<bool> {
    let result = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokeTime, Expr::value(now))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::RevokeTime.is_null())
        .exec(db)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected == 1)
}
