//! Passlib's `pbkdf2_sha256` hashes, `$pbkdf2-sha256$ROUNDS$SALT$CHECKSUM`.
//!
//! ROUNDS is a decimal number without sign or leading zeros. SALT and
//! CHECKSUM use Passlib's "adapted base64": the standard alphabet with `.`
//! in place of `+` and no padding. The checksum is the 32-byte
//! PBKDF2-HMAC-SHA256 of the password's UTF-8 bytes with that salt and
//! rounds, as Passlib 1.7.4 computes it in `passlib/handlers/pbkdf2.py`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Prefix of every hash in this format: the scheme between two `$`.
pub const PREFIX: &str = "$pbkdf2-sha256$";
/// Length of the checksum in bytes, the output size of SHA-256.
pub const CHECKSUM_BYTES: usize = 32;
/// Minimum salt length in bytes, the minimum that PKCS #5 (RFC 2898, now RFC 8018) recommends.
///
/// Passlib 1.7.4 generates 16-byte salts by default.
// NOTE: Passlib 1.7.4 also accepts salts of 0 to 7 bytes, so a hash made
// with such a salt is rejected here.
pub const MIN_SALT_BYTES: usize = 8;
/// Maximum salt length in bytes, Passlib 1.7.4's own limit for this scheme.
pub const MAX_SALT_BYTES: usize = 1024;
/// Maximum iteration count accepted from a stored hash.
///
/// Passlib 1.7.4 defaults to 29,000 rounds and OWASP's Password Storage
/// Cheat Sheet (2023) recommends 600,000, so ten million leaves room for a
/// deployment tuned well above both. The bound limits the CPU time that one
/// corrupt or hostile hash can take. Python's OpenSSL-backed
/// `hashlib.pbkdf2_hmac` took 0.32 s for one million rounds on a 2-core AMD
/// EPYC with SHA extensions. By that estimate, a verification at this bound
/// takes about 3 s, and one at Passlib's own limit of 2^32 - 1 over 20 minutes.
pub const MAX_ROUNDS: u32 = 10_000_000;

/// Reason a string is not an acceptable `pbkdf2_sha256` hash.
///
/// Messages name the problem and never contain the hash.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasslibError {
    /// The hash does not start with [`PREFIX`].
    #[error("not a Passlib pbkdf2_sha256 hash: expected it to start with `$pbkdf2-sha256$`")]
    WrongScheme,
    /// The part after [`PREFIX`] does not have exactly 3 `$`-separated segments.
    #[error(
        "invalid pbkdf2_sha256 hash: expected 3 `$`-separated segments \
         (rounds, salt, checksum) after `$pbkdf2-sha256$`, found {found}"
    )]
    SegmentCount {
        /// Number of segments found after the prefix.
        found: usize,
    },
    /// A segment is empty.
    #[error("invalid pbkdf2_sha256 hash: the {segment} segment is empty")]
    EmptySegment {
        /// Name of the segment: `rounds`, `salt` or `checksum`.
        segment: &'static str,
    },
    /// The rounds segment is not a plain decimal number.
    #[error(
        "invalid pbkdf2_sha256 hash: rounds must be a decimal number \
         without sign, spaces or leading zeros"
    )]
    RoundsNotDecimal,
    /// The rounds segment is zero.
    #[error("invalid pbkdf2_sha256 hash: rounds is 0, expected at least 1")]
    RoundsZero,
    /// The rounds segment is above [`MAX_ROUNDS`].
    #[error("invalid pbkdf2_sha256 hash: rounds exceeds the maximum of {MAX_ROUNDS}")]
    RoundsTooLarge,
    /// The salt is not adapted base64.
    #[error(
        "invalid pbkdf2_sha256 hash: the salt is not Passlib adapted base64 \
         (A-Z, a-z, 0-9, `.` and `/`, no padding)"
    )]
    SaltEncoding,
    /// The salt decodes to fewer than [`MIN_SALT_BYTES`] bytes.
    #[error(
        "invalid pbkdf2_sha256 hash: the salt is {bytes} bytes long, \
         expected at least {MIN_SALT_BYTES}"
    )]
    SaltTooShort {
        /// Decoded salt length in bytes.
        bytes: usize,
    },
    /// The salt decodes to more than [`MAX_SALT_BYTES`] bytes.
    #[error(
        "invalid pbkdf2_sha256 hash: the salt is {bytes} bytes long, \
         expected at most {MAX_SALT_BYTES}"
    )]
    SaltTooLong {
        /// Decoded salt length in bytes.
        bytes: usize,
    },
    /// The checksum is not adapted base64.
    #[error(
        "invalid pbkdf2_sha256 hash: the checksum is not Passlib adapted base64 \
         (A-Z, a-z, 0-9, `.` and `/`, no padding)"
    )]
    ChecksumEncoding,
    /// The checksum does not decode to [`CHECKSUM_BYTES`] bytes.
    #[error(
        "invalid pbkdf2_sha256 hash: the checksum is {bytes} bytes long, \
         expected {CHECKSUM_BYTES}"
    )]
    ChecksumLength {
        /// Decoded checksum length in bytes.
        bytes: usize,
    },
}

/// A parsed Passlib `pbkdf2_sha256` hash.
#[derive(Clone)]
pub struct Pbkdf2Sha256 {
    rounds: u32,
    salt: Vec<u8>,
    checksum: [u8; CHECKSUM_BYTES],
}

impl fmt::Debug for Pbkdf2Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pbkdf2Sha256")
            .field("rounds", &self.rounds)
            .field("salt_bytes", &self.salt.len())
            .finish_non_exhaustive()
    }
}

impl Pbkdf2Sha256 {
    /// Parses `$pbkdf2-sha256$ROUNDS$SALT$CHECKSUM`, checking every bound before any decoding.
    pub fn parse(hash: &str) -> Result<Self, PasslibError> {
        let rest = hash.strip_prefix(PREFIX).ok_or(PasslibError::WrongScheme)?;
        let [rounds, salt, checksum] = split_segments(rest)?;
        Ok(Self {
            rounds: parse_rounds(rounds)?,
            salt: parse_salt(salt)?,
            checksum: parse_checksum(checksum)?,
        })
    }

    /// Checks a password against the hash, comparing the derived key with the checksum in constant time.
    ///
    /// The password's UTF-8 bytes are used as given, as Passlib does. Cost is
    /// linear in [`Self::rounds`].
    pub fn verify(&self, password: &str) -> bool {
        let mut derived = [0u8; CHECKSUM_BYTES];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &self.salt, self.rounds, &mut derived);
        derived.ct_eq(&self.checksum).into()
    }

    /// Returns the PBKDF2 iteration count.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }
}

fn split_segments(rest: &str) -> Result<[&str; 3], PasslibError> {
    let found = rest.split('$').count();
    let mut segments = rest.split('$');
    match (segments.next(), segments.next(), segments.next()) {
        (Some(rounds), Some(salt), Some(checksum)) if found == 3 => Ok([rounds, salt, checksum]),
        _ => Err(PasslibError::SegmentCount { found }),
    }
}

fn parse_rounds(segment: &str) -> Result<u32, PasslibError> {
    if segment.is_empty() {
        return Err(PasslibError::EmptySegment { segment: "rounds" });
    }
    let digits_only = segment.bytes().all(|byte| byte.is_ascii_digit());
    let zero_padded = segment.len() > 1 && segment.starts_with('0');
    if !digits_only || zero_padded {
        return Err(PasslibError::RoundsNotDecimal);
    }
    // Only digits remain, so parsing fails only on overflow.
    let rounds: u32 = segment.parse().map_err(|_| PasslibError::RoundsTooLarge)?;
    match rounds {
        0 => Err(PasslibError::RoundsZero),
        1..=MAX_ROUNDS => Ok(rounds),
        _ => Err(PasslibError::RoundsTooLarge),
    }
}

fn parse_salt(segment: &str) -> Result<Vec<u8>, PasslibError> {
    if segment.is_empty() {
        return Err(PasslibError::EmptySegment { segment: "salt" });
    }
    let bytes = ab64_decoded_len(segment).ok_or(PasslibError::SaltEncoding)?;
    if bytes < MIN_SALT_BYTES {
        return Err(PasslibError::SaltTooShort { bytes });
    }
    if bytes > MAX_SALT_BYTES {
        return Err(PasslibError::SaltTooLong { bytes });
    }
    ab64_decode(segment).ok_or(PasslibError::SaltEncoding)
}

fn parse_checksum(segment: &str) -> Result<[u8; CHECKSUM_BYTES], PasslibError> {
    if segment.is_empty() {
        return Err(PasslibError::EmptySegment {
            segment: "checksum",
        });
    }
    let bytes = ab64_decoded_len(segment).ok_or(PasslibError::ChecksumEncoding)?;
    if bytes != CHECKSUM_BYTES {
        return Err(PasslibError::ChecksumLength { bytes });
    }
    let decoded = ab64_decode(segment).ok_or(PasslibError::ChecksumEncoding)?;
    decoded
        .try_into()
        .map_err(|decoded: Vec<u8>| PasslibError::ChecksumLength {
            bytes: decoded.len(),
        })
}

/// Returns the decoded length of unpadded adapted base64, or `None` for a
/// character outside the alphabet or a length that no encoding has.
fn ab64_decoded_len(text: &str) -> Option<usize> {
    let in_alphabet = text
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'/');
    // Each 4 characters carry 3 bytes; a lone trailing character carries none.
    if !in_alphabet || text.len() % 4 == 1 {
        return None;
    }
    Some(text.len() * 3 / 4)
}

/// Decodes adapted base64 that passed [`ab64_decoded_len`], rejecting
/// non-zero trailing bits, which Passlib never writes.
fn ab64_decode(text: &str) -> Option<Vec<u8>> {
    // The text has no `+`, so mapping `.` to `+` gives standard base64.
    STANDARD_NO_PAD.decode(text.replace('.', "+")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::process::Command;

    /// Password of [`KNOWN_HASH`].
    const KNOWN_PASSWORD: &str = "correct horse battery staple";
    /// `pbkdf2_sha256.using(rounds=29000, salt=b"fixed-known-answer-salt!")`
    /// applied to [`KNOWN_PASSWORD`] by Passlib 1.7.4.
    const KNOWN_HASH: &str = "$pbkdf2-sha256$29000$Zml4ZWQta25vd24tYW5zd2VyLXNhbHQh$iM7QjX4GEq/8ep32bNdYB0qjYHjH2ggRio4TcEiTNg8";
    /// A valid adapted-base64 salt (24 bytes) and checksum (32 bytes).
    const SALT: &str = "Zml4ZWQta25vd24tYW5zd2VyLXNhbHQh";
    const CHECKSUM: &str = "iM7QjX4GEq/8ep32bNdYB0qjYHjH2ggRio4TcEiTNg8";

    /// Prints `HEX(PASSWORD) HASH` lines made by Passlib.
    const GENERATOR: &str = r#"
import hashlib
from passlib.hash import pbkdf2_sha256

def emit(password, rounds=None, salt=None):
    settings = {}
    if rounds is not None:
        settings["rounds"] = rounds
    if salt is not None:
        settings["salt"] = salt
    print(password.encode("utf-8").hex(), pbkdf2_sha256.using(**settings).hash(password))

# 0xfb 0xef 0xbe encodes to "....", 0xff 0xff 0xff to "////".
emit("correct horse battery staple", 1, bytes.fromhex("fbefbeffffff00112233445566778899"))
emit("p\u00e4ssw\u00f6rd \u2713 \u5bc6\u7801", 1000, bytes.fromhex("fbefbe0123456789"))
emit("tWy9#rLq!2mZ8vX", 100000, bytes.fromhex("ffffff") * 8)
emit("a" * 128, 5, bytes(range(256)) * 4)
emit("default settings")
emit("")

# Search fixed salts for checksums that contain both "." and "/".
found = 0
for i in range(10000):
    salt = hashlib.sha256(b"salt-%d" % i).digest()[:16]
    password = "vector %d" % i
    hash = pbkdf2_sha256.using(rounds=2000, salt=salt).hash(password)
    checksum = hash.rsplit("$", 1)[1]
    if "." in checksum and "/" in checksum:
        print(password.encode("utf-8").hex(), hash)
        found += 1
        if found == 2:
            break
"#;

    /// Skips outside CI and fails when `CI` is `true`.
    fn skip_or_fail(reason: &str) {
        let hint = "install it with `python3 -m pip install passlib==1.7.4`";
        if matches!(std::env::var("CI").as_deref(), Ok("true" | "1")) {
            panic!("{reason}; CI requires Passlib vectors, {hint}");
        }
        eprintln!("skipping Passlib vectors: {reason}; {hint}");
    }

    /// Runs [`GENERATOR`], or returns `None` after [`skip_or_fail`].
    fn passlib_vectors() -> Option<Vec<(String, String)>> {
        let probe = Command::new("python3")
            .args(["-c", "import passlib"])
            .output();
        match probe {
            Err(error) => {
                skip_or_fail(&format!("python3 could not be run ({error})"));
                return None;
            }
            Ok(output) if !output.status.success() => {
                skip_or_fail("python3 cannot import passlib");
                return None;
            }
            Ok(_) => {}
        }
        let output = Command::new("python3")
            .args(["-c", GENERATOR])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "Passlib generator failed: {stderr}"
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        Some(stdout.lines().map(parse_vector_line).collect())
    }

    fn parse_vector_line(line: &str) -> (String, String) {
        let (hex, hash) = line.split_once(' ').unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        (String::from_utf8(bytes).unwrap(), hash.to_owned())
    }

    /// Splits a hash into its salt and checksum segments.
    fn salt_and_checksum(hash: &str) -> (&str, &str) {
        let segments: Vec<&str> = hash.split('$').collect();
        (segments[3], segments[4])
    }

    #[test]
    fn passlib_vectors_verify() {
        let Some(vectors) = passlib_vectors() else {
            return;
        };
        assert_eq!(vectors.len(), 8, "generator must print 8 vectors");
        for (password, hash) in &vectors {
            let parsed = Pbkdf2Sha256::parse(hash);
            let Ok(parsed) = parsed else {
                panic!("{hash}: parse failed: {parsed:?}");
            };
            assert!(
                parsed.verify(password),
                "{hash}: correct password must verify"
            );
            let wrong = format!("{password}x");
            assert!(
                !parsed.verify(&wrong),
                "{hash}: longer password must not verify"
            );
            let upper = password.to_uppercase();
            if upper != *password {
                assert!(
                    !parsed.verify(&upper),
                    "{hash}: changed case must not verify"
                );
            }
        }
    }

    #[test]
    fn passlib_vectors_cover_alphabet_and_rounds() {
        let Some(vectors) = passlib_vectors() else {
            return;
        };
        let hashes: Vec<&str> = vectors.iter().map(|(_, hash)| hash.as_str()).collect();
        let salts: Vec<&str> = hashes
            .iter()
            .map(|hash| salt_and_checksum(hash).0)
            .collect();
        let checksums: Vec<&str> = hashes
            .iter()
            .map(|hash| salt_and_checksum(hash).1)
            .collect();
        assert!(
            salts.iter().any(|salt| salt.contains('.')),
            "some salt must contain '.'"
        );
        assert!(
            salts.iter().any(|salt| salt.contains('/')),
            "some salt must contain '/'"
        );
        assert!(
            checksums.iter().any(|chk| chk.contains('.')),
            "some checksum must contain '.'"
        );
        assert!(
            checksums.iter().any(|chk| chk.contains('/')),
            "some checksum must contain '/'"
        );

        let mut rounds: Vec<u32> = hashes
            .iter()
            .map(|hash| Pbkdf2Sha256::parse(hash).unwrap().rounds())
            .collect();
        rounds.sort_unstable();
        rounds.dedup();
        assert_eq!(
            rounds,
            [1, 5, 1000, 2000, 29000, 100000],
            "round counts of the vectors"
        );
    }

    #[test]
    fn known_hash_verifies() {
        let parsed = Pbkdf2Sha256::parse(KNOWN_HASH).unwrap();
        assert_eq!(parsed.rounds(), 29000, "rounds of the known hash");
        assert!(parsed.verify(KNOWN_PASSWORD), "known password must verify");
        assert!(
            !parsed.verify("correct horse battery stapl"),
            "shorter password must not verify"
        );
        assert!(!parsed.verify(""), "empty password must not verify");
    }

    #[test]
    fn debug_omits_salt_and_checksum() {
        let parsed = Pbkdf2Sha256::parse(KNOWN_HASH).unwrap();
        let debug = format!("{parsed:?}");
        assert!(debug.contains("29000"), "Debug shows the rounds: {debug}");
        assert!(!debug.contains('['), "Debug shows no byte arrays: {debug}");
        assert!(!debug.contains(SALT), "Debug shows no salt: {debug}");
        assert!(
            !debug.contains(CHECKSUM),
            "Debug shows no checksum: {debug}"
        );
    }

    #[test]
    fn bounds_are_inclusive() {
        let max_rounds = format!("$pbkdf2-sha256${MAX_ROUNDS}${SALT}${CHECKSUM}");
        let parsed = Pbkdf2Sha256::parse(&max_rounds).map(|hash| hash.rounds());
        assert_eq!(parsed, Ok(MAX_ROUNDS), "MAX_ROUNDS itself must parse");

        let min_salt = format!("$pbkdf2-sha256$1${}${CHECKSUM}", "A".repeat(11));
        assert!(
            Pbkdf2Sha256::parse(&min_salt).is_ok(),
            "an 8-byte salt must parse"
        );

        let max_salt = format!("$pbkdf2-sha256$1${}${CHECKSUM}", "A".repeat(1366));
        assert!(
            Pbkdf2Sha256::parse(&max_salt).is_ok(),
            "a 1024-byte salt must parse"
        );
    }

    fn with_rounds(rounds: &str) -> String {
        format!("$pbkdf2-sha256${rounds}${SALT}${CHECKSUM}")
    }

    fn with_salt(salt: &str) -> String {
        format!("$pbkdf2-sha256$29000${salt}${CHECKSUM}")
    }

    fn with_checksum(checksum: &str) -> String {
        format!("$pbkdf2-sha256$29000${SALT}${checksum}")
    }

    fn malformed_cases() -> Vec<(&'static str, String, PasslibError)> {
        use PasslibError::*;
        let body = format!("29000${SALT}${CHECKSUM}");
        vec![
            ("empty string", String::new(), WrongScheme),
            ("no leading $", format!("pbkdf2-sha256${body}"), WrongScheme),
            (
                "sha512 scheme",
                format!("$pbkdf2-sha512${body}"),
                WrongScheme,
            ),
            ("sha1 scheme", format!("$pbkdf2${body}"), WrongScheme),
            (
                "upper-case scheme",
                format!("$PBKDF2-SHA256${body}"),
                WrongScheme,
            ),
            (
                "PHC string",
                format!("$pbkdf2-sha256$i=29000,l=32${SALT}${CHECKSUM}"),
                RoundsNotDecimal,
            ),
            (
                "prefix only",
                "$pbkdf2-sha256$".to_owned(),
                SegmentCount { found: 1 },
            ),
            (
                "no checksum",
                format!("$pbkdf2-sha256$29000${SALT}"),
                SegmentCount { found: 2 },
            ),
            (
                "extra segment",
                format!("$pbkdf2-sha256${body}$x"),
                SegmentCount { found: 4 },
            ),
            (
                "trailing $",
                format!("$pbkdf2-sha256${body}$"),
                SegmentCount { found: 4 },
            ),
            (
                "only separators",
                "$pbkdf2-sha256$$$$".to_owned(),
                SegmentCount { found: 4 },
            ),
            (
                "empty rounds",
                with_rounds(""),
                EmptySegment { segment: "rounds" },
            ),
            (
                "empty salt",
                with_salt(""),
                EmptySegment { segment: "salt" },
            ),
            (
                "empty checksum",
                with_checksum(""),
                EmptySegment {
                    segment: "checksum",
                },
            ),
            ("rounds 0", with_rounds("0"), RoundsZero),
            (
                "rounds MAX_ROUNDS + 1",
                with_rounds("10000001"),
                RoundsTooLarge,
            ),
            ("rounds u32::MAX", with_rounds("4294967295"), RoundsTooLarge),
            (
                "rounds above u32",
                with_rounds("99999999999"),
                RoundsTooLarge,
            ),
            (
                "rounds above u64",
                with_rounds("99999999999999999999999"),
                RoundsTooLarge,
            ),
            ("rounds letters", with_rounds("abc"), RoundsNotDecimal),
            ("rounds negative", with_rounds("-1"), RoundsNotDecimal),
            ("rounds plus sign", with_rounds("+29000"), RoundsNotDecimal),
            (
                "rounds leading space",
                with_rounds(" 29000"),
                RoundsNotDecimal,
            ),
            (
                "rounds trailing space",
                with_rounds("29000 "),
                RoundsNotDecimal,
            ),
            ("rounds exponent", with_rounds("1e5"), RoundsNotDecimal),
            ("rounds hexadecimal", with_rounds("0x10"), RoundsNotDecimal),
            (
                "rounds zero-padded",
                with_rounds("029000"),
                RoundsNotDecimal,
            ),
            ("rounds double zero", with_rounds("00"), RoundsNotDecimal),
            (
                "rounds fullwidth digits",
                with_rounds("\u{FF11}\u{FF10}\u{FF10}"),
                RoundsNotDecimal,
            ),
            (
                "salt with +",
                with_salt("Zml4ZWQta25v+d24tYW5z"),
                SaltEncoding,
            ),
            (
                "salt with _",
                with_salt("Zml4ZWQta25v_d24tYW5z"),
                SaltEncoding,
            ),
            (
                "salt with -",
                with_salt("Zml4ZWQta25v-d24tYW5z"),
                SaltEncoding,
            ),
            (
                "salt with space",
                with_salt("Zml4ZWQta25v d24tYW5z"),
                SaltEncoding,
            ),
            (
                "salt with padding",
                with_salt("Zml4ZWQta25vd24tYW5zdA=="),
                SaltEncoding,
            ),
            (
                "salt non-ASCII",
                with_salt("Zml4ZWQta25vd24tYW5z\u{E9}"),
                SaltEncoding,
            ),
            (
                "salt impossible length",
                with_salt("AAAAAAAAAAAAA"),
                SaltEncoding,
            ),
            ("salt trailing bits", with_salt("AAAAAAAAAAB"), SaltEncoding),
            (
                "salt 5 bytes",
                with_salt("AAAAAAA"),
                SaltTooShort { bytes: 5 },
            ),
            (
                "salt 1025 bytes",
                with_salt(&"A".repeat(1367)),
                SaltTooLong { bytes: 1025 },
            ),
            (
                "checksum with +",
                with_checksum("iM7QjX4GEq+8ep32bNdYB0qjYHjH2ggRio4TcEiTNg8"),
                ChecksumEncoding,
            ),
            (
                "checksum with _",
                with_checksum("iM7QjX4GEq_8ep32bNdYB0qjYHjH2ggRio4TcEiTNg8"),
                ChecksumEncoding,
            ),
            (
                "checksum with padding",
                with_checksum("iM7QjX4GEq/8ep32bNdYB0qjYHjH2ggRio4TcEiTNg8="),
                ChecksumEncoding,
            ),
            (
                "checksum trailing bits",
                with_checksum("iM7QjX4GEq/8ep32bNdYB0qjYHjH2ggRio4TcEiTNg9"),
                ChecksumEncoding,
            ),
            (
                "checksum impossible length",
                with_checksum(&"A".repeat(41)),
                ChecksumEncoding,
            ),
            (
                "checksum 31 bytes",
                with_checksum(&"A".repeat(42)),
                ChecksumLength { bytes: 31 },
            ),
            (
                "checksum 33 bytes",
                with_checksum(&"A".repeat(44)),
                ChecksumLength { bytes: 33 },
            ),
            (
                "checksum 64 bytes",
                with_checksum(&"A".repeat(86)),
                ChecksumLength { bytes: 64 },
            ),
        ]
    }

    #[test]
    fn malformed_hashes_rejected() {
        for (name, hash, expected) in malformed_cases() {
            let result = Pbkdf2Sha256::parse(&hash).map(|parsed| parsed.rounds());
            assert_eq!(result, Err(expected), "{name}: wrong outcome");
        }
    }

    #[test]
    fn error_messages_omit_hash() {
        for (name, hash, _) in malformed_cases() {
            let Err(error) = Pbkdf2Sha256::parse(&hash) else {
                panic!("{name}: expected an error");
            };
            let message = error.to_string();
            // Messages quote the prefix, so only a longer hash can leak.
            let leaks_hash = hash.len() > PREFIX.len() && message.contains(&hash);
            assert!(!leaks_hash, "{name}: message contains the hash");
            assert!(!message.contains(SALT), "{name}: message contains the salt");
            assert!(
                !message.contains(CHECKSUM),
                "{name}: message contains the checksum"
            );
        }
    }
}
