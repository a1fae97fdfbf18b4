//! Opaque refresh tokens: 256 random bits, stored only as a SHA-256 hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use valora_mesh::apikey::hex;

/// Prefix of every refresh token, for secret scanners.
pub const PREFIX: &str = "vrt_";

/// A new refresh token and the hash to store.
pub struct NewRefreshToken {
    pub text: String,
    pub hash: String,
}

/// Generates a refresh token.
pub fn generate() -> NewRefreshToken {
    let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    NewRefreshToken { hash: hash(&text), text }
}

/// The stored form of a token. A plain hash suffices because the token
/// carries 256 random bits, so there is nothing to guess offline.
pub fn hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_unique_and_hashed() {
        let a = super::generate();
        let b = super::generate();
        assert_ne!(a.text, b.text);
        assert_eq!(a.hash, super::hash(&a.text));
        assert!(a.text.starts_with(super::PREFIX));
        assert_eq!(a.hash.len(), 64);
    }
}
