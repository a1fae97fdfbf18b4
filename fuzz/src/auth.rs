//! API keys (the shared syntax check, static key lists and issued keys)
//! and Passlib `pbkdf2_sha256` hashes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use valora_auth::apikeys::{self, KEY_LEN, KEY_PREFIX, KeyFormatError};
use valora_auth::password::passlib::{self, MAX_ROUNDS, PREFIX, PasslibError, Pbkdf2Sha256};
use valora_mesh::apikey::{KeyRejection, MAX_KEY_LEN, MIN_STATIC_KEY_LEN, StaticKeyError, StaticKeys, check_key_syntax};

/// Everything that parses an API key, on the same bytes.
///
/// Properties:
/// - `check_key_syntax` accepts exactly 1 to 256 visible ASCII characters
///   and returns them unchanged; it answers `Missing` only when empty;
/// - `StaticKeys::parse` accepts a list exactly when every entry, trimmed,
///   is 32 to 256 visible ASCII characters; an error names the first bad
///   entry and why; every accepted entry is then found by `lookup`;
/// - `apikeys::parse` accepts only `vlk_` + 16 hex + `_` + 64 hex + the
///   CRC-32 of the rest, and returns its id and secret; the same text with
///   its CRC-32 appended is parsed as well, so that the fuzzer reaches
///   accepted keys.
pub fn api_key(data: &[u8]) {
    match check_key_syntax(data) {
        Ok(key) => {
            assert_eq!(key.as_bytes(), data);
            assert!(data.len() <= MAX_KEY_LEN && data.iter().all(u8::is_ascii_graphic));
        }
        Err(KeyRejection::Missing) => assert!(data.is_empty()),
        Err(KeyRejection::Malformed) => {
            assert!(!data.is_empty());
            assert!(data.len() > MAX_KEY_LEN || !data.iter().all(u8::is_ascii_graphic));
        }
        Err(other) => panic!("check_key_syntax answered {other:?}"),
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    static_keys(text);
    issued_key(text);
    let with_check = format!("{text}{:08x}", crc32fast::hash(text.as_bytes()));
    issued_key(&with_check);
}

fn static_keys(text: &str) {
    let entries: Vec<&str> = text.split(',').map(str::trim).collect();
    let problem = |position: usize, key: &str| -> Option<StaticKeyError> {
        if key.is_empty() {
            Some(StaticKeyError::Empty { position })
        } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
            Some(StaticKeyError::BadCharacters { position })
        } else if key.len() > MAX_KEY_LEN {
            Some(StaticKeyError::TooLong { position })
        } else if key.len() < MIN_STATIC_KEY_LEN {
            Some(StaticKeyError::TooShort { position, length: key.len() })
        } else {
            None
        }
    };
    let first_problem = entries.iter().enumerate().find_map(|(index, key)| problem(index + 1, key));
    match (StaticKeys::parse(text), first_problem) {
        (Ok(keys), None) => {
            assert_eq!(keys.len(), entries.len());
            for entry in &entries {
                assert!(keys.lookup(entry).is_some(), "an accepted static key is not found");
            }
        }
        (Err(error), Some(expected)) => assert_eq!(error, expected),
        (result, expected) => panic!("StaticKeys::parse gave {result:?}, expected {expected:?}"),
    }
}

fn issued_key(text: &str) {
    let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match apikeys::parse(text) {
        Ok(parsed) => {
            assert_eq!(text.len(), KEY_LEN);
            assert!(apikeys::is_issued_key(text));
            assert!(parsed.id.len() == 16 && lower_hex(parsed.id));
            assert!(parsed.secret.len() == 64 && lower_hex(parsed.secret));
            let body = format!("{KEY_PREFIX}{}_{}", parsed.id, parsed.secret);
            assert_eq!(format!("{body}{:08x}", crc32fast::hash(body.as_bytes())), text);
        }
        Err(KeyFormatError::BadChecksum) => {
            assert_eq!(text.len(), KEY_LEN);
            assert!(text.starts_with(KEY_PREFIX));
        }
        Err(KeyFormatError::NotAKey) => {}
    }
}

/// Passlib `pbkdf2_sha256` hashes, as stored text and as hashes built from
/// chosen parts.
///
/// Input: the whole input as a stored hash; then 4 bytes of rounds, one
/// byte of salt length, one byte choosing the checksum length, and the
/// salt and checksum bytes, which are encoded the way Passlib encodes them.
///
/// Properties:
/// - an accepted hash has `$pbkdf2-sha256$`, rounds from 1 to 10,000,000
///   written without leading zeros, and three segments;
/// - a hash built from parts is accepted exactly when the rounds, the salt
///   length (8 to 1024 bytes) and the checksum length (32 bytes) are within
///   bounds, and then reports the rounds it was built with.
pub fn passlib_hash(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(hash) = Pbkdf2Sha256::parse(text) {
            let rest = text.strip_prefix(PREFIX).unwrap_or_default();
            let segments: Vec<&str> = rest.split('$').collect();
            assert_eq!(segments.len(), 3, "{hash:?}");
            assert!((1..=MAX_ROUNDS).contains(&hash.rounds()));
            assert_eq!(segments[0], hash.rounds().to_string());
            // Cheap hashes are verified too, to reach the PBKDF2 call.
            if hash.rounds() <= 8 {
                let _ = hash.verify("correct horse battery staple");
            }
        }
    }
    let Some((head, rest)) = data.split_first_chunk::<6>() else { return };
    let rounds = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let salt_len = usize::from(head[4]).min(rest.len());
    let (salt, rest) = rest.split_at(salt_len);
    let checksum_len = if head[5] & 1 == 0 { passlib::CHECKSUM_BYTES } else { usize::from(head[5] >> 1) };
    let checksum = &rest[..checksum_len.min(rest.len())];
    let ab64 = |bytes: &[u8]| STANDARD_NO_PAD.encode(bytes).replace('+', ".");
    let hash = format!("{PREFIX}{rounds}${}${}", ab64(salt), ab64(checksum));
    let result = Pbkdf2Sha256::parse(&hash);
    let expected = if rounds == 0 {
        Err(PasslibError::RoundsZero)
    } else if rounds > MAX_ROUNDS {
        Err(PasslibError::RoundsTooLarge)
    } else if salt.is_empty() {
        Err(PasslibError::EmptySegment { segment: "salt" })
    } else if salt.len() < passlib::MIN_SALT_BYTES {
        Err(PasslibError::SaltTooShort { bytes: salt.len() })
    } else if checksum.is_empty() {
        Err(PasslibError::EmptySegment { segment: "checksum" })
    } else if checksum.len() != passlib::CHECKSUM_BYTES {
        Err(PasslibError::ChecksumLength { bytes: checksum.len() })
    } else {
        Ok(rounds)
    };
    assert_eq!(result.map(|h| h.rounds()), expected, "built hash {hash}");
}
