//! Opaque page tokens.
//!
//! A token carries the position after the last item returned and a
//! fingerprint of the request's filters and caller, so a token is refused
//! when reused with other filters (as AIP-158 requires) or by another
//! caller.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::MarketplaceError;

/// Default page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: i32 = 50;
/// Largest page size; larger requests are reduced to it.
pub const MAX_PAGE_SIZE: i32 = 100;

#[derive(Serialize, Deserialize)]
struct Token {
    /// Position: the last id or revision returned.
    after: String,
    /// Fingerprint of the filters.
    scope: String,
}

/// Validates a page size: negative is invalid, 0 means the default.
pub fn page_size(requested: i32) -> Result<u64, MarketplaceError> {
    match requested {
        n if n < 0 => Err(MarketplaceError::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE as u64),
        n => Ok(n.min(MAX_PAGE_SIZE) as u64),
    }
}

/// Fingerprint of the parts of a request that a token is bound to.
pub fn scope(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    valora_mesh::apikey::hex(&hasher.finalize()[..12])
}

/// Encodes a token.
pub fn encode(after: &str, scope: &str) -> String {
    let token = Token { after: after.to_owned(), scope: scope.to_owned() };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Decodes a token; an empty token means the first page.
pub fn decode(token: &str, scope: &str) -> Result<Option<String>, MarketplaceError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        MarketplaceError::invalid(
            "page_token",
            "is not a next_page_token of this request; repeat the request without it",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.scope != scope {
        return Err(MarketplaceError::invalid(
            "page_token",
            "was issued for different filters; repeat the request without it",
        ));
    }
    Ok(Some(token.after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bind_to_scope() {
        let scope_a = scope(&["a", "b"]);
        let token = encode("42", &scope_a);
        assert_eq!(decode(&token, &scope_a).unwrap().as_deref(), Some("42"));
        assert!(decode(&token, &scope(&["ab", ""])).is_err());
        assert!(decode("not-a-token", &scope_a).is_err());
        assert_eq!(decode("", &scope_a).unwrap(), None);
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(1000).unwrap(), 100);
        assert!(page_size(-1).is_err());
    }
}
