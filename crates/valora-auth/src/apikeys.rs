//! The API key format and its keyed hash.
//!
//! A key reads `vlk_<id>_<secret><check>`:
//!
//! - `vlk_` marks it as a VALORA key, so secret scanners can find leaks;
//! - `<id>`, 16 lowercase hex digits (64 random bits), is the public key id
//!   that appears in listings, logs and audit events;
//! - `<secret>`, 64 hex digits, carries 256 random bits;
//! - `<check>`, 8 hex digits, is the CRC-32 of everything before it, so a
//!   mistyped key is rejected without a database round trip.
//!
//! Only HMAC-SHA256(pepper, secret) is stored. The pepper is a server
//! secret, so a stolen database alone does not allow offline guessing.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use valora_mesh::apikey::hex;

/// Prefix of every issued key.
pub const KEY_PREFIX: &str = "vlk_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;
const CHECK_HEX: usize = 8;
/// Total length of a key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + ID_HEX + 1 + SECRET_HEX + CHECK_HEX;
/// Shortest accepted pepper, in bytes.
pub const MIN_PEPPER_BYTES: usize = 32;

/// Why a string is not a well-formed issued key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("not a VALORA API key")]
    NotAKey,
    #[error("API key checksum does not match; the key was mistyped or truncated")]
    BadChecksum,
}

/// A freshly generated key: its id and the full text shown once.
pub struct NewKey {
    pub id: String,
    pub text: String,
    pub secret_hash: String,
}

/// The parts of a well-formed key.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

/// The server secret that keys the stored hashes.
#[derive(Clone)]
pub struct Pepper(Vec<u8>);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(..)")
    }
}

impl Pepper {
    /// Wraps pepper bytes; at least [`MIN_PEPPER_BYTES`].
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() >= MIN_PEPPER_BYTES).then_some(Self(bytes))
    }

    /// HMAC-SHA256 of `secret`, as lowercase hex.
    pub fn hash(&self, secret: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        mac.update(secret.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `secret` hashes to `stored`, compared in constant time.
    pub fn matches(&self, secret: &str, stored: &str) -> bool {
        self.hash(secret).as_bytes().ct_eq(stored.as_bytes()).into()
    }

    /// Generates a new key.
    pub fn generate(&self) -> NewKey {
        let id = hex(&rand::random::<[u8; 8]>());
        let secret = hex(&rand::random::<[u8; 32]>());
        let body = format!("{KEY_PREFIX}{id}_{secret}");
        let check = format!("{:08x}", crc32fast::hash(body.as_bytes()));
        NewKey { secret_hash: self.hash(&secret), text: format!("{body}{check}"), id }
    }
}

/// Whether `text` looks like an issued key (prefix only), so that callers
/// can route it to the auth service rather than to static keys.
pub fn is_issued_key(text: &str) -> bool {
    text.starts_with(KEY_PREFIX)
}

/// Splits a key into id and secret after checking its shape and checksum.
pub fn parse(text: &str) -> Result<ParsedKey<'_>, KeyFormatError> {
    // Checking for ASCII first makes every byte offset below a character
    // boundary, so the slicing cannot panic on multi-byte input.
    if text.len() != KEY_LEN || !text.is_ascii() || !text.starts_with(KEY_PREFIX) {
        return Err(KeyFormatError::NotAKey);
    }
    let rest = &text[KEY_PREFIX.len()..];
    let (id, rest) = rest.split_at(ID_HEX);
    let Some(rest) = rest.strip_prefix('_') else { return Err(KeyFormatError::NotAKey) };
    let (secret, check) = rest.split_at(SECRET_HEX);
    let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !lower_hex(id) || !lower_hex(secret) || !lower_hex(check) {
        return Err(KeyFormatError::NotAKey);
    }
    let expected = format!("{:08x}", crc32fast::hash(text[..text.len() - CHECK_HEX].as_bytes()));
    if expected != check {
        return Err(KeyFormatError::BadChecksum);
    }
    Ok(ParsedKey { id, secret })
}

/// The prefix shown for a key id, such as `vlk_0123456789abcdef`.
pub fn display_prefix(id: &str) -> String {
    format!("{KEY_PREFIX}{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pepper() -> Pepper {
        Pepper::new(vec![7u8; 32]).unwrap()
    }

    #[test]
    fn multibyte_text_is_not_a_key() {
        // A two-byte character straddles the end of the id.
        let text = format!("{KEY_PREFIX}0123456789abcde\u{e9}_{}", "0".repeat(KEY_LEN - KEY_PREFIX.len() - 18));
        assert_eq!(text.len(), KEY_LEN);
        assert_eq!(parse(&text).unwrap_err(), KeyFormatError::NotAKey);
    }

    #[test]
    fn generated_keys_parse_and_match() {
        let pepper = pepper();
        let key = pepper.generate();
        assert_eq!(key.text.len(), KEY_LEN);
        let parsed = parse(&key.text).unwrap();
        assert_eq!(parsed.id, key.id);
        assert!(pepper.matches(parsed.secret, &key.secret_hash));
        assert!(!pepper.matches(parsed.secret, &pepper.hash("other")));
        assert!(!key.secret_hash.contains(parsed.secret));
    }

    #[test]
    fn typos_fail_the_checksum() {
        let key = pepper().generate().text;
        let mut typo = key.clone().into_bytes();
        let position = KEY_PREFIX.len() + ID_HEX + 5;
        typo[position] = if typo[position] == b'a' { b'b' } else { b'a' };
        assert_eq!(parse(&String::from_utf8(typo).unwrap()), Err(KeyFormatError::BadChecksum));
        assert_eq!(parse(&key[..key.len() - 1]), Err(KeyFormatError::NotAKey));
        assert_eq!(parse(&key.to_uppercase()), Err(KeyFormatError::NotAKey));
    }

    #[test]
    fn short_peppers_are_refused() {
        assert!(Pepper::new(vec![1u8; 31]).is_none());
        assert_eq!(format!("{:?}", pepper()), "Pepper(..)");
    }
}
