//! Registration, password changes, roles and legacy import.

use serde_json::json;
use valora_audit::Outcome;

use crate::domain::{AuthError, Role, User, Violation, normalize_email, now};
use crate::password::passlib::Pbkdf2Sha256;
use crate::password::policy::PasswordProblem;
use crate::password::hasher::Verification;
use crate::store;

use super::{Auth, audit};

/// Maximum display name length, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// Product name, refused inside passwords.
const PRODUCT_NAME: &str = "valora";

impl Auth {
    /// Creates a USER account.
    pub async fn register(&self, email: &str, password: &str, display_name: &str) -> Result<User, AuthError> {
        let policy = &self.config.password_policy;
        policy.check_bytes(password).map_err(|p| password_error("password", p))?;
        let mut violations = Vec::new();
        let normalized = match normalize_email(email) {
            Ok(n) => Some(n),
            Err(AuthError::Invalid(v)) => {
                violations.extend(v);
                None
            }
            Err(other) => return Err(other),
        };
        let display_name = display_name.trim();
        if display_name.chars().count() > MAX_DISPLAY_NAME_CHARS {
            violations.push(violation("display_name", format!("must be at most {MAX_DISPLAY_NAME_CHARS} characters")));
        } else if display_name.chars().any(char::is_control) {
            violations.push(violation("display_name", "must not contain control characters"));
        }
        let local_part = normalized.as_deref().and_then(|e| e.split('@').next()).unwrap_or_default().to_owned();
        let context = [local_part.as_str(), display_name, PRODUCT_NAME];
        let password = match policy.check_new(password, &context) {
            Ok(p) => Some(p),
            Err(problem) => {
                violations.push(violation("password", problem.to_string()));
                None
            }
        };
        let (Some(normalized), Some(password), true) = (normalized, password, violations.is_empty()) else {
            return Err(AuthError::Invalid(violations));
        };

        let hash = self.hasher.hash(password).await.map_err(|e| AuthError::Internal(e.to_string()))?;
        let user = User {
            id: uuid::Uuid::now_v7().to_string(),
            email: email.trim().to_owned(),
            display_name: if display_name.is_empty() { local_part } else { display_name.to_owned() },
            role: Role::User,
            create_time: now(),
        };
        let txn = self.store.begin().await?;
        store::insert_user(&txn, &user, &normalized, &hash).await?;
        let appended = self.audit_in(&txn, audit::event("user.register", Outcome::Success, &user.id, &user.id, "", json!({}))).await?;
        store::commit(txn).await?;
        valora_audit::log_committed(&appended);
        Ok(user)
    }

    /// Changes the password of `user_id` after checking the current one,
    /// and ends every session of the user.
    pub async fn change_password(
        &self,
        user_id: &str,
        current: &str,
        new: &str,
        client_addr: &str,
    ) -> Result<(), AuthError> {
        let policy = &self.config.password_policy;
        policy.check_bytes(current).map_err(|p| password_error("current_password", p))?;
        policy.check_bytes(new).map_err(|p| password_error("new_password", p))?;
        let (user, stored) = store::user_by_id(self.store.db(), user_id)
            .await?
            .ok_or_else(|| AuthError::Unauthenticated("the signed-in user no longer exists".into()))?;
        let account = user.email.to_lowercase();
        self.throttle.check(&account, client_addr).map_err(AuthError::Throttled)?;
        let verdict = self
            .hasher
            .verify(current.to_owned(), Some(stored))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        if verdict == Verification::Invalid {
            self.throttle.record_failure(&account, client_addr);
            let event = audit::event("user.password_change", Outcome::Failure, user_id, user_id, "login_failed", json!({"cause": "wrong_password"}));
            self.audit_failure(event).await;
            return Err(AuthError::invalid("current_password", "is not the current password"));
        }
        let local_part = account.split('@').next().unwrap_or_default().to_owned();
        let context = [local_part.as_str(), user.display_name.as_str(), PRODUCT_NAME];
        let new = policy.check_new(new, &context).map_err(|p| password_error("new_password", p))?;
        let hash = self.hasher.hash(new).await.map_err(|e| AuthError::Internal(e.to_string()))?;
        let txn = self.store.begin().await?;
        let time = now();
        store::set_password_hash(&txn, user_id, &hash, time).await?;
        let ended = store::revoke_user_tokens(&txn, user_id, time).await?;
        let event = audit::event("user.password_change", Outcome::Success, user_id, user_id, "", json!({"sessions_ended": ended}));
        let appended = self.audit_in(&txn, event).await?;
        store::commit(txn).await?;
        valora_audit::log_committed(&appended);
        Ok(())
    }

    /// Grants or removes the ADMIN role (operators only, from the CLI).
    pub async fn set_role(&self, email: &str, role: Role) -> Result<(), AuthError> {
        let normalized = normalize_email(email)?;
        let txn = self.store.begin().await?;
        if !store::set_role(&txn, &normalized, role, now()).await? {
            return Err(AuthError::NotFound(format!("user {normalized}")));
        }
        let (user, _) = store::user_by_email(&txn, &normalized).await?.ok_or_else(|| AuthError::NotFound(format!("user {normalized}")))?;
        let event = audit::event("user.role_change", Outcome::Success, "operator", &user.id, "", json!({"role": role.as_str()}));
        let appended = self.audit_in(&txn, event).await?;
        store::commit(txn).await?;
        valora_audit::log_committed(&appended);
        Ok(())
    }

    /// Imports a user with a Passlib `pbkdf2_sha256` hash, which is replaced
    /// by an argon2id hash at the first login.
    pub async fn import_user(&self, email: &str, legacy_hash: &str, display_name: &str) -> Result<User, AuthError> {
        let normalized = normalize_email(email)?;
        Pbkdf2Sha256::parse(legacy_hash).map_err(|e| AuthError::invalid("password_hash", e.to_string()))?;
        let local_part = normalized.split('@').next().unwrap_or_default().to_owned();
        let display_name = display_name.trim();
        let user = User {
            id: uuid::Uuid::now_v7().to_string(),
            email: email.trim().to_owned(),
            display_name: if display_name.is_empty() { local_part } else { display_name.to_owned() },
            role: Role::User,
            create_time: now(),
        };
        let txn = self.store.begin().await?;
        store::insert_user(&txn, &user, &normalized, legacy_hash).await?;
        let appended = self.audit_in(&txn, audit::event("user.import", Outcome::Success, "operator", &user.id, "", json!({}))).await?;
        store::commit(txn).await?;
        valora_audit::log_committed(&appended);
        Ok(user)
    }
}

fn violation(field: &str, description: impl Into<String>) -> Violation {
    Violation { field: field.to_owned(), description: description.into() }
}

/// A password problem as an INVALID_ARGUMENT naming `field`.
pub(super) fn password_error(field: &str, problem: PasswordProblem) -> AuthError {
    AuthError::invalid(field, problem.to_string())
}
