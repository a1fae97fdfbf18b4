//! Auth operations. Each validates, decides and stores in one transaction
//! where it changes more than one row.

mod audit;
pub mod keys;
mod sessions;
mod users;

use std::sync::Arc;
use std::time::Duration;

pub use audit::AUDIT_PREFIX;
pub use keys::{KeyVerdict, NewApiKey};
pub use sessions::Session;

use crate::apikeys::Pepper;
use crate::password::hasher::Hasher;
use crate::password::policy::PasswordPolicy;
use crate::store::Store;
use crate::throttle::LoginThrottle;
use crate::tokens::signing::SigningKeys;

/// Settings of the auth service.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// `iss` of access tokens.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub password_policy: PasswordPolicy,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "valora-auth".to_owned(),
            audience: "valora".to_owned(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            password_policy: PasswordPolicy::default(),
        }
    }
}

/// The auth service's domain logic.
#[derive(Clone)]
pub struct Auth {
    store: Store,
    hasher: Hasher,
    signing: SigningKeys,
    pepper: Pepper,
    throttle: Arc<LoginThrottle>,
    failure_budget: Arc<audit::FailureBudget>,
    config: Arc<AuthConfig>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(store: Store, hasher: Hasher, signing: SigningKeys, pepper: Pepper, config: AuthConfig) -> Self {
        Self {
            store,
            hasher,
            signing,
            pepper,
            throttle: Arc::new(LoginThrottle::default()),
            failure_budget: Arc::default(),
            config: Arc::new(config),
        }
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The signing keys, for the JWKS.
    pub fn signing(&self) -> &SigningKeys {
        &self.signing
    }

    /// The settings.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }
}
