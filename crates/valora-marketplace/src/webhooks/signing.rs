//! Standard Webhooks signing secrets and signatures, and sealing the
//! secrets at rest.
//!
//! A secret reads `whsec_` + base64 of 32 random bytes. A signature is
//! `v1,` + base64 of HMAC-SHA256(secret bytes, `{id}.{timestamp}.{body}`)
//! over the exact bytes sent. In the database, secrets are sealed with
//! ChaCha20-Poly1305 under the server's webhook key, so a database dump
//! alone cannot forge deliveries.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::Sha256;

/// Prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        Self(format!("{SECRET_PREFIX}{}", STANDARD.encode(rand::random::<[u8; 32]>())))
    }

    /// The secret's text, shown once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn key_bytes(&self) -> Vec<u8> {
        let encoded = self.0.strip_prefix(SECRET_PREFIX).unwrap_or(&self.0);
        STANDARD.decode(encoded).unwrap_or_default()
    }

    /// The `v1,` signature of a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = self.key_bytes();
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The server key that seals secrets at rest.
pub struct SealKey(LessSafeKey);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// A sealed secret that does not open with this key.
#[derive(Debug, thiserror::Error)]
#[error("a webhook secret does not open with the configured MARKETPLACE_WEBHOOK_KEY")]
pub struct UnsealError;

impl SealKey {
    /// A key from 32 bytes.
    pub fn new(bytes: &[u8; 32]) -> Option<Self> {
        UnboundKey::new(&CHACHA20_POLY1305, bytes).ok().map(|k| Self(LessSafeKey::new(k)))
    }

    /// Seals a secret: base64 of nonce, ciphertext and tag.
    pub fn seal(&self, secret: &SigningSecret) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut sealed = secret.0.as_bytes().to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        if self.0.seal_in_place_append_tag(nonce, Aad::empty(), &mut sealed).is_err() {
            return String::new();
        }
        let mut out = nonce_bytes.to_vec();
        out.extend(sealed);
        STANDARD.encode(out)
    }

    /// Opens a sealed secret.
    pub fn open(&self, sealed: &str) -> Result<SigningSecret, UnsealError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| UnsealError)?;
        if bytes.len() < NONCE_LEN {
            return Err(UnsealError);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| UnsealError)?;
        let mut rest = rest.to_vec();
        let plain = self.0.open_in_place(nonce, Aad::empty(), &mut rest).map_err(|_| UnsealError)?;
        String::from_utf8(plain.to_vec()).map(SigningSecret).map_err(|_| UnsealError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_specification_example() {
        // The example of the Standard Webhooks specification.
        let secret = SigningSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let body = br#"{"test": 2432232314}"#;
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn sealing_round_trips_and_rejects_other_keys() {
        let key = SealKey::new(&[7u8; 32]).unwrap();
        let secret = SigningSecret::generate();
        let sealed = key.seal(&secret);
        assert!(!sealed.contains(secret.expose()));
        assert_eq!(key.open(&sealed).unwrap(), secret);
        let other = SealKey::new(&[8u8; 32]).unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(format!("{secret:?}").starts_with("SigningSecret(.."));
    }
}
