//! The API key lifecycle: create, list, rotate with a grace period, revoke,
//! and verification for the edge and internal services.

use std::time::Duration;

use chrono::{DateTime, Utc};
use valora_mesh::Principal;
use valora_mesh::apikey::KeyRejection;

use serde_json::json;
use valora_audit::Outcome;

use crate::apikeys::{self, KeyFormatError, display_prefix};
use crate::domain::{ApiKeyInfo, AuthError, Role, SCOPES, now};
use crate::store;

use super::{Auth, audit};

/// Grace period of a rotation when the request sets none.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// Longest grace period of a rotation.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest key lifetime.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Shortest key lifetime.
pub const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_NAME_CHARS: usize = 100;

/// A created key: its description and the secret text, shown once.
#[derive(Clone)]
pub struct NewApiKey {
    pub info: ApiKeyInfo,
    pub secret: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey").field("info", &self.info).finish_non_exhaustive()
    }
}

/// What a verified key grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVerdict {
    pub info: ApiKeyInfo,
}

impl KeyVerdict {
    /// The principal of a call made with this key.
    pub fn principal(&self) -> Principal {
        Principal {
            key_id: self.info.id.clone(),
            key_owner: self.info.owner_id.clone(),
            scopes: self.info.scopes.clone(),
            user: None,
        }
    }
}

/// Who acts on a key: the signed-in user, or "operator" for the CLI.
fn actor(caller: Option<&Principal>) -> String {
    caller.and_then(|c| c.user.as_ref()).map_or_else(|| "operator".to_owned(), |u| u.id.clone())
}

/// The signed-in user who manages keys, and whether they are an admin.
fn key_manager(caller: &Principal) -> Result<(String, bool), AuthError> {
    match &caller.user {
        Some(user) => Ok((user.id.clone(), user.role == Role::Admin.as_str())),
        None => Err(AuthError::Unauthenticated(
            "managing API keys needs a signed-in user: send Authorization: Bearer ACCESS_TOKEN".into(),
        )),
    }
}

fn check_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AuthError::invalid("name", format!("must be 1 to {MAX_NAME_CHARS} characters without control characters")));
    }
    Ok(name.to_owned())
}

fn check_scopes(scopes: &[String], admin: bool) -> Result<Vec<String>, AuthError> {
    if scopes.is_empty() {
        return Err(AuthError::invalid("scopes", format!("is required: one or more of {}", SCOPES.join(", "))));
    }
    let mut checked: Vec<String> = Vec::new();
    for (index, scope) in scopes.iter().enumerate() {
        let field = format!("scopes[{index}]");
        if !SCOPES.contains(&scope.as_str()) {
            return Err(AuthError::invalid(&field, format!("{scope:?} is not a scope; use {}", SCOPES.join(", "))));
        }
        if scope == "admin" && !admin {
            return Err(AuthError::PermissionDenied("only administrators may create keys with the admin scope".into()));
        }
        if !checked.contains(scope) {
            checked.push(scope.clone());
        }
    }
    Ok(checked)
}

fn check_ttl(ttl: Option<Duration>) -> Result<Option<DateTime<Utc>>, AuthError> {
    match ttl {
        None => Ok(None),
        Some(ttl) if ttl < MIN_TTL || ttl > MAX_TTL => Err(AuthError::invalid(
            "ttl",
            format!("must be between {} seconds and {} days", MIN_TTL.as_secs(), MAX_TTL.as_secs() / 86_400),
        )),
        Some(ttl) => Ok(Some(now() + chrono::Duration::from_std(ttl).map_err(|e| AuthError::Internal(e.to_string()))?)),
    }
}

impl Auth {
    /// Creates a key owned by the signed-in caller.
    pub async fn create_api_key(
        &self,
        caller: &Principal,
        name: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<NewApiKey, AuthError> {
        let (owner, admin) = key_manager(caller)?;
        self.create_key_for(Some(owner), name, scopes, ttl, admin).await
    }

    /// Creates a key for `owner` (none for operator keys). `admin` allows
    /// the admin scope.
    pub async fn create_key_for(
        &self,
        owner: Option<String>,
        name: &str,
        scopes: &[String],
        ttl: Option<Duration>,
        admin: bool,
    ) -> Result<NewApiKey, AuthError> {
        let name = check_name(name)?;
        let scopes = check_scopes(scopes, admin)?;
        let expire_time = check_ttl(ttl)?;
        let generated = self.pepper.generate();
        let info = ApiKeyInfo {
            id: generated.id,
            owner_id: owner,
            name,
            scopes,
            create_time: now(),
            expire_time,
            revoke_time: None,
        };
        let txn = self.store.begin().await?;
        store::insert_key(&txn, &info, &generated.secret_hash).await?;
        let actor = info.owner_id.clone().unwrap_or_else(|| "operator".to_owned());
        let details = json!({"scopes": info.scopes, "prefix": display_prefix(&info.id)});
        let appended = self.audit_in(&txn, audit::event("apikey.create", Outcome::Success, &actor, &info.id, "", details)).await?;
        store::commit(txn).await?;
        valora_audit::log_committed(&appended);
        Ok(NewApiKey { info, secret: generated.text })
    }

    /// Lists the caller's keys (an administrator's own keys too).
    pub async fn list_api_keys(&self, caller: &Principal, after: Option<&str>, limit: u64) -> Result<Vec<ApiKeyInfo>, AuthError> {
        let (owner, _) = key_manager(caller)?;
        store::keys(self.store.db(), Some(&owner), after, limit).await
    }

    /// Lists every key, for operators.
    pub async fn list_all_keys(&self, after: Option<&str>, limit: u64) -> Result<Vec<ApiKeyInfo>, AuthError> {
        store::keys(self.store.db(), None, after, limit).await
    }

    /// Loads a key the caller manages: NOT_FOUND for other people's keys,
    /// exactly like for missing ones.
    async fn managed_key(&self, caller: Option<&Principal>, id: &str) -> Result<ApiKeyInfo, AuthError> {
        let not_found = || AuthError::NotFound(format!("API key {id}"));
        let (info, _, _) = store::key_by_id(self.store.db(), id).await?.ok_or_else(not_found)?;
        if let Some(caller) = caller {
            let (user, admin) = key_manager(caller)?;
            if !admin && info.owner_id.as_deref() != Some(user.as_str()) {
                return Err(not_found());
            }
        }
        Ok(info)
    }

    /// Issues a successor of key `id`; the old key keeps working for
    /// `grace` (default one hour). `caller` is `None` for operators.
    pub async fn rotate_api_key(&self, caller: Option<&Principal>, id: &str, grace: Option<Duration>) -> Result<NewApiKey, AuthError> {
        let grace = grace.unwrap_or(DEFAULT_GRACE);
        if grace > MAX_GRACE {
            return Err(AuthError::invalid("grace_period", format!("must be at most {} days", MAX_GRACE.as_secs() / 86_400)));
        }
        let old = self.managed_key(caller, id).await?;
        let time = now();
        if old.revoke_time.is_some() || old.expire_time.is_some_and(|e| e <= time) {
            return Err(AuthError::FailedPrecondition(format!("API key {id} is revoked or expired and cannot rotate")));
        }
        let generated = self.pepper.generate();
        let new = ApiKeyInfo {
            id: generated.id,
            owner_id: old.owner_id.clone(),
            name: old.name.clone(),
            scopes: old.scopes.clone(),
            create_time: time,
            expire_time: old.expire_time,
            revoke_time: None,
        };
        let grace_end = time + chrono::Duration::from_std(grace).map_err(|e| AuthError::Internal(e.to_string()))?;
        let old_end = old.expire_time.map_or(grace_end, |e| e.min(grace_end));
        let txn = self.store.begin().await?;
        store::insert_key(&txn, &new, &generated.secret_hash).await?;
        if !store::retire_key(&txn, id, old_end, &new.id).await? {
            return Err(AuthError::FailedPrecondition(format!("API key {id} was already rotated or revoked")));
        }
        let details = json!({"new_key_id": new.id, "grace_seconds": grace.as_secs()});
        let appended = self.audit_in(&txn, audit::event("apikey.rotate", Outcome::Success, &actor(caller), id, "", details)).await?;
        store::commit(txn).await?;
        valora_audit::log_committed(&appended);
        Ok(NewApiKey { info: new, secret: generated.text })
    }

    /// Revokes key `id` at once. `caller` is `None` for operators.
    pub async fn revoke_api_key(&self, caller: Option<&Principal>, id: &str) -> Result<ApiKeyInfo, AuthError> {
        self.managed_key(caller, id).await?;
        let txn = self.store.begin().await?;
        let revoked = store::revoke_key(&txn, id, now()).await?;
        let (info, _, _) = store::key_by_id(&txn, id).await?.ok_or_else(|| AuthError::NotFound(format!("API key {id}")))?;
        let appended = if revoked {
            Some(self.audit_in(&txn, audit::event("apikey.revoke", Outcome::Success, &actor(caller), id, "", json!({}))).await?)
        } else {
            None
        };
        store::commit(txn).await?;
        appended.iter().for_each(valora_audit::log_committed);
        Ok(info)
    }

    /// Checks a key's text: format and checksum first (no database access
    /// for typos), then the stored keyed hash, revocation and expiry.
    pub async fn verify_api_key(&self, text: &str) -> Result<KeyVerdict, KeyRejection> {
        let result = self.check_api_key(text).await;
        if let Err(rejection) = &result {
            if *rejection != KeyRejection::Unavailable {
                // The prefix identifies the key without revealing its secret.
                let prefix = apikeys::parse(text).map(|p| display_prefix(p.id)).unwrap_or_default();
                let event = audit::event("apikey.verify", Outcome::Failure, "", &prefix, rejection.as_str(), json!({}));
                self.audit_failure(event).await;
            }
        }
        result
    }

    async fn check_api_key(&self, text: &str) -> Result<KeyVerdict, KeyRejection> {
        let parsed = apikeys::parse(text).map_err(|e| match e {
            KeyFormatError::NotAKey | KeyFormatError::BadChecksum => KeyRejection::Unknown,
        })?;
        let found = store::key_by_id(self.store.db(), parsed.id).await.map_err(|error| {
            tracing::warn!(%error, "API key lookup failed");
            KeyRejection::Unavailable
        })?;
        let Some((info, hash, _)) = found else { return Err(KeyRejection::Unknown) };
        if !self.pepper.matches(parsed.secret, &hash) {
            return Err(KeyRejection::Unknown);
        }
        if info.revoke_time.is_some() {
            return Err(KeyRejection::Revoked);
        }
        if info.expire_time.is_some_and(|e| e <= now()) {
            return Err(KeyRejection::Expired);
        }
        Ok(KeyVerdict { info })
    }
}
