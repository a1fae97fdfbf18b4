//! Auth domain types and the service's error type.

use chrono::{DateTime, Utc};

/// What a user may do beyond their own data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    /// Database, token and log representation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::Admin => "ADMIN",
        }
    }

    /// Parses the database representation.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "USER" => Some(Self::User),
            "ADMIN" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A user as stored, without the password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub create_time: DateTime<Utc>,
}

/// An API key as stored, without its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: String,
    pub owner_id: Option<String>,
    pub name: String,
    pub scopes: Vec<String>,
    pub create_time: DateTime<Utc>,
    pub expire_time: Option<DateTime<Utc>>,
    pub revoke_time: Option<DateTime<Utc>>,
}

/// Scopes a key may carry.
pub const SCOPES: [&str; 3] = ["marketplace:read", "marketplace:write", "admin"];

/// One invalid request field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

/// Everything that can go wrong in an auth operation.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid request: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Violation>),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Too many attempts; retry after the given number of seconds.
    #[error("too many failed attempts; retry in {0} seconds")]
    Throttled(u64),
    #[error("{0}")]
    Aborted(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    /// A single invalid field.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::Invalid(vec![Violation { field: field.to_owned(), description: description.into() }])
    }
}

/// Normalises an email address for uniqueness: trimmed and lowercased.
/// Checks a plain `local@domain` shape; delivery is not verified.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let trimmed = email.trim();
    let invalid = |why: &str| AuthError::invalid("email", format!("{why}; expected an address such as ada@example.com"));
    if trimmed.is_empty() {
        return Err(invalid("is required"));
    }
    if trimmed.len() > 254 {
        return Err(invalid("is longer than 254 characters"));
    }
    let Some((local, domain)) = trimmed.rsplit_once('@') else {
        return Err(invalid("has no @"));
    };
    let plain = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@');
    if !plain(local) || local.len() > 64 {
        return Err(invalid("has an invalid part before the @"));
    }
    if !plain(domain) || !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
        return Err(invalid("has an invalid domain"));
    }
    Ok(trimmed.to_lowercase())
}

/// The current time, truncated to microseconds (PostgreSQL's precision).
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_normalise_case_insensitively() {
        assert_eq!(normalize_email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in ["", "ada", "ada@", "@example.com", "ada@example", "a da@example.com", "ada@.com"] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
    }
}
