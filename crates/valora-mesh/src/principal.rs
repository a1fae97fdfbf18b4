//! The caller on whose behalf a mesh call runs.
//!
//! The edge authenticates API keys and bearer tokens, then forwards the
//! result in the `x-valora-principal` header. Internal services accept that
//! header only from the edge's identity.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Header carrying the principal from the edge to internal services.
pub const PRINCIPAL_HEADER: &str = "x-valora-principal";

/// Scope that allows reading marketplace data.
pub const SCOPE_MARKETPLACE_READ: &str = "marketplace:read";
/// Scope that allows changing marketplace data.
pub const SCOPE_MARKETPLACE_WRITE: &str = "marketplace:write";
/// Scope that allows everything.
pub const SCOPE_ADMIN: &str = "admin";

/// The application (API key) and, when signed in, the user behind a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Public id of the API key, never the secret.
    pub key_id: String,
    /// User who owns the key; none for static operator keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_owner: Option<String>,
    /// Scopes granted to the key.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Signed-in user, from a verified bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserPrincipal>,
}

/// A signed-in user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPrincipal {
    pub id: String,
    /// `USER` or `ADMIN`.
    pub role: String,
}

/// The principal header could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed {PRINCIPAL_HEADER} header")]
pub struct MalformedPrincipal;

impl Principal {
    /// Whether the key carries `scope`; `admin` carries every scope.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == SCOPE_ADMIN)
    }

    /// Whether the caller acts as an administrator: an admin user, or an
    /// admin-scoped key without a user.
    pub fn is_admin(&self) -> bool {
        match &self.user {
            Some(user) => user.role == "ADMIN",
            None => self.scopes.iter().any(|s| s == SCOPE_ADMIN),
        }
    }

    /// The id that owns what this caller creates: the signed-in user, else
    /// the key's owner, else the key itself.
    pub fn actor_id(&self) -> String {
        if let Some(user) = &self.user {
            return user.id.clone();
        }
        match &self.key_owner {
            Some(owner) => owner.clone(),
            None => format!("key:{}", self.key_id),
        }
    }

    /// Encodes the principal as a header value: base64url of its JSON form.
    pub fn to_header_value(&self) -> String {
        // Serializing plain strings and vectors cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a header value made by [`Principal::to_header_value`].
    pub fn from_header_value(value: &[u8]) -> Result<Self, MalformedPrincipal> {
        let json = URL_SAFE_NO_PAD.decode(value).map_err(|_| MalformedPrincipal)?;
        serde_json::from_slice(&json).map_err(|_| MalformedPrincipal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let principal = Principal {
            key_id: "k1".into(),
            key_owner: Some("u1".into()),
            scopes: vec![SCOPE_MARKETPLACE_READ.into()],
            user: Some(UserPrincipal { id: "u2".into(), role: "USER".into() }),
        };
        let decoded = Principal::from_header_value(principal.to_header_value().as_bytes()).unwrap();
        assert_eq!(decoded, principal);
        assert_eq!(decoded.actor_id(), "u2");
    }

    #[test]
    fn garbage_header_is_rejected() {
        assert!(Principal::from_header_value(b"not json!").is_err());
        assert!(Principal::from_header_value(b"e30").is_err()); // "{}" lacks key_id
    }
}
