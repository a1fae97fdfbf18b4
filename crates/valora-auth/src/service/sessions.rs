//! Login, token refresh with reuse detection, and logout.

use chrono::Duration as ChronoDuration;

use serde_json::json;
use valora_audit::Outcome;

use crate::domain::{AuthError, User, normalize_email, now};
use crate::password::hasher::Verification;
use crate::password::policy::normalize;
use crate::store::{self, RefreshRow};
use crate::tokens::{AccessClaims, refresh};

use super::{Auth, audit};
use super::users::password_error;

/// The same message for an unknown email and a wrong password, so that the
/// answer does not reveal which accounts exist.
const BAD_CREDENTIALS: &str = "invalid email or password";
const BAD_REFRESH: &str = "invalid refresh token";

/// Tokens of a signed-in session.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub user: User,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("user", &self.user.id).finish_non_exhaustive()
    }
}

impl Auth {
    /// Checks an email and password and starts a session. Unknown emails
    /// cost one argon2id verification, like wrong passwords.
    pub async fn login(&self, email: &str, password: &str, client_addr: &str) -> Result<Session, AuthError> {
        self.config.password_policy.check_bytes(password).map_err(|p| password_error("password", p))?;
        let account = normalize_email(email).map_err(|_| AuthError::Unauthenticated(BAD_CREDENTIALS.into()))?;
        if let Err(wait) = self.throttle.check(&account, client_addr) {
            self.audit_failure(audit::event("auth.login", Outcome::Failure, "", "", "login_throttled", json!({}))).await;
            return Err(AuthError::Throttled(wait));
        }

        let found = store::user_by_email(self.store.db(), &account).await?;
        let stored = found.as_ref().map(|(_, hash)| hash.clone());
        let verdict = self
            .hasher
            .verify(password.to_owned(), stored)
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let (user, rehash) = match (found, verdict) {
            (Some((user, _)), Verification::Valid { rehash }) => (user, rehash),
            (found, _) => {
                self.throttle.record_failure(&account, client_addr);
                let cause = if found.is_some() { "wrong_password" } else { "unknown_email" };
                let user_id = found.map(|(u, _)| u.id).unwrap_or_default();
                tracing::info!(target: "valora::security", cause, client_addr, user_id, "login failed");
                let event = audit::event("auth.login", Outcome::Failure, &user_id, &user_id, "login_failed", json!({"cause": cause}));
                self.audit_failure(event).await;
                return Err(AuthError::Unauthenticated(BAD_CREDENTIALS.into()));
            }
        };
        self.throttle.record_success(&account, client_addr);
        if rehash {
            self.upgrade_hash(&user, password).await;
        }
        let family = uuid::Uuid::now_v7().to_string();
        let txn = self.store.begin().await?;
        let event = audit::event("auth.login", Outcome::Success, &user.id, &user.id, "", json!({"session": family}));
        let appended = self.audit_in(&txn, event).await?;
        let session = self.issue(&txn, user, &family).await?;
        store::commit(txn).await?;
        valora_audit::log_committed(&appended);
        tracing::info!(user_id = %session.user.id, "user signed in");
        Ok(session)
    }

    /// Replaces the stored hash with an argon2id hash under the current
    /// parameters. A failure is logged and retried at the next login.
    async fn upgrade_hash(&self, user: &User, password: &str) {
        let result = async {
            let hash = self.hasher.hash(normalize(password)).await.map_err(|e| AuthError::Internal(e.to_string()))?;
            store::set_password_hash(self.store.db(), &user.id, &hash, now()).await
        }
        .await;
        match result {
            Ok(()) => tracing::info!(user_id = %user.id, "password hash upgraded"),
            Err(error) => tracing::warn!(user_id = %user.id, %error, "password hash upgrade failed"),
        }
    }

    /// Exchanges a refresh token for a new session in the same family. A
    /// token used twice revokes the whole family: one of the two holders
    /// is not the user.
    pub async fn refresh(&self, token: &str) -> Result<Session, AuthError> {
        if token.is_empty() {
            return Err(AuthError::invalid("refresh_token", "is required"));
        }
        let found = store::refresh_by_hash(self.store.db(), &refresh::hash(token)).await?;
        let row = found.ok_or_else(|| AuthError::Unauthenticated(BAD_REFRESH.into()))?;
        let time = now();
        if row.revoke_time.is_some() || row.expire_time <= time {
            return Err(AuthError::Unauthenticated(BAD_REFRESH.into()));
        }
        let txn = self.store.begin().await?;
        if row.used_time.is_some() || !store::mark_refresh_used(&txn, &row.id, time).await? {
            txn.rollback().await.map_err(store::db_error)?;
            return Err(self.reuse_detected(&row).await);
        }
        let (user, _) = store::user_by_id(&txn, &row.user_id)
            .await?
            .ok_or_else(|| AuthError::Unauthenticated(BAD_REFRESH.into()))?;
        let session = self.issue(&txn, user, &row.family_id).await?;
        store::commit(txn).await?;
        Ok(session)
    }

    async fn reuse_detected(&self, row: &RefreshRow) -> AuthError {
        let details = json!({"session": row.family_id});
        self.audit_failure(audit::event("auth.refresh", Outcome::Failure, &row.user_id, &row.user_id, "refresh_reuse", details)).await;
        match store::revoke_family(self.store.db(), &row.family_id, now()).await {
            Ok(revoked) => tracing::warn!(
                target: "valora::security",
                user_id = %row.user_id,
                family_id = %row.family_id,
                revoked,
                "refresh token reused; the whole session was revoked"
            ),
            Err(error) => tracing::error!(user_id = %row.user_id, %error, "refresh token reused, but revoking the session failed"),
        }
        AuthError::Unauthenticated(BAD_REFRESH.into())
    }

    /// Revokes the session of a refresh token. Unknown tokens succeed too,
    /// so the answer reveals nothing.
    pub async fn logout(&self, token: &str) -> Result<(), AuthError> {
        if token.is_empty() {
            return Err(AuthError::invalid("refresh_token", "is required"));
        }
        if let Some(row) = store::refresh_by_hash(self.store.db(), &refresh::hash(token)).await? {
            let txn = self.store.begin().await?;
            store::revoke_family(&txn, &row.family_id, now()).await?;
            let event = audit::event("auth.logout", Outcome::Success, &row.user_id, &row.user_id, "", json!({"session": row.family_id}));
            let appended = self.audit_in(&txn, event).await?;
            store::commit(txn).await?;
            valora_audit::log_committed(&appended);
        }
        Ok(())
    }

    /// Signs an access token and stores a new refresh token of `family`.
    async fn issue(&self, db: &impl sea_orm::ConnectionTrait, user: User, family: &str) -> Result<Session, AuthError> {
        let time = now();
        let access_ttl = ChronoDuration::from_std(self.config.access_ttl).unwrap_or(ChronoDuration::minutes(15));
        let refresh_ttl = ChronoDuration::from_std(self.config.refresh_ttl).unwrap_or(ChronoDuration::days(30));
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: user.id.clone(),
            exp: (time + access_ttl).timestamp(),
            iat: time.timestamp(),
            nbf: time.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            role: user.role.as_str().to_owned(),
        };
        let access_token = self.signing.sign(&claims).map_err(|e| AuthError::Internal(e.to_string()))?;
        let refresh = refresh::generate();
        store::insert_refresh(
            db,
            RefreshRow {
                id: uuid::Uuid::now_v7().to_string(),
                family_id: family.to_owned(),
                user_id: user.id.clone(),
                token_hash: refresh.hash,
                create_time: time,
                expire_time: time + refresh_ttl,
                used_time: None,
                revoke_time: None,
            },
        )
        .await?;
        Ok(Session { access_token, refresh_token: refresh.text, expires_in: access_ttl.num_seconds(), user })
    }
}
