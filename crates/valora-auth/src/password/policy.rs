//! The password policy, after NIST SP 800-63B-4 (single-factor passwords)
//! and OWASP ASVS.
//!
//! A new password is 15 to 128 Unicode code points long after NFKC
//! normalisation, contains no context word (the product name, the email's
//! local part, the display name) and reaches a zxcvbn score of at least 3.
//! There are no composition rules and no truncation. Every path, login
//! included, first checks the byte length of the raw input, which bounds the
//! work done before normalising and hashing.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Default minimum length of a new password, in code points after NFKC.
pub const DEFAULT_MIN_CHARS: usize = 15;
/// Default maximum length of a new password, in code points after NFKC.
pub const DEFAULT_MAX_CHARS: usize = 128;
/// Default maximum length of any password input, in UTF-8 bytes before normalisation.
///
/// Checked before anything else on every path, login included.
pub const DEFAULT_MAX_BYTES: usize = 1024;
/// Minimum zxcvbn score (0 to 4) of a new password.
pub const MIN_STRENGTH_SCORE: u8 = 3;
/// Context words shorter than this, in code points, are not checked.
pub const MIN_CONTEXT_WORD_CHARS: usize = 4;
/// Product name, a context word of every password.
pub const PRODUCT_NAME: &str = "valora";

/// Length limits of the password policy.
#[derive(Clone, Debug)]
pub struct PasswordPolicy {
    /// Minimum length of a new password, in code points after NFKC.
    pub min_chars: usize,
    /// Maximum length of a new password, in code points after NFKC.
    pub max_chars: usize,
    /// Maximum length of any password input, in UTF-8 bytes before normalisation.
    pub max_bytes: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: DEFAULT_MIN_CHARS,
            max_chars: DEFAULT_MAX_CHARS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Origin of a context word found in a password.
///
/// [`PasswordPolicy::check_new`] derives it from the position of the context
/// value: the email's local part first, then the display name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextSource {
    /// The product name, [`PRODUCT_NAME`].
    ProductName,
    /// The local part of the account's email address (`context[0]`).
    EmailLocalPart,
    /// The account's display name (`context[1]`).
    DisplayName,
    /// A further context value (`context[2]` onwards).
    Other,
}

impl ContextSource {
    fn from_position(position: usize) -> Self {
        match position {
            0 => Self::EmailLocalPart,
            1 => Self::DisplayName,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for ContextSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::ProductName => "the product name",
            Self::EmailLocalPart => "the local part of the account's email address",
            Self::DisplayName => "the account's display name",
            Self::Other => "a word from the account's details",
        };
        f.write_str(text)
    }
}

/// Reason a password breaks the policy.
///
/// Messages name the limits and measured lengths, never the password or a context word.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordProblem {
    /// The raw input is longer than the byte cap.
    #[error(
        "password is {bytes} bytes long in UTF-8, \
         expected at most {max} bytes"
    )]
    TooManyBytes {
        /// Length of the raw input in UTF-8 bytes.
        bytes: usize,
        /// The byte cap.
        max: usize,
    },
    /// The normalised password has fewer code points than the minimum.
    #[error(
        "password is {chars} characters long after Unicode normalisation, \
         expected at least {min} characters"
    )]
    TooShort {
        /// Length in code points after NFKC.
        chars: usize,
        /// The minimum length.
        min: usize,
    },
    /// The normalised password has more code points than the maximum.
    #[error(
        "password is {chars} characters long after Unicode normalisation, \
         expected at most {max} characters"
    )]
    TooLong {
        /// Length in code points after NFKC.
        chars: usize,
        /// The maximum length.
        max: usize,
    },
    /// The password contains a context word, compared case-insensitively.
    #[error("password contains {context}, expected a password without it")]
    ContainsContext {
        /// Origin of the context word. The word itself is left out because it is part of the password.
        context: ContextSource,
    },
    /// zxcvbn scores the password below [`MIN_STRENGTH_SCORE`].
    #[error(
        "password is too easy to guess: strength score {score} of 4, \
         expected at least {MIN_STRENGTH_SCORE}{}",
        feedback_suffix(.warning.as_deref(), .suggestions)
    )]
    Guessable {
        /// zxcvbn score from 0 to 4.
        score: u8,
        /// zxcvbn's explanation of the weakness, if it gives one.
        warning: Option<String>,
        /// zxcvbn's suggestions for a stronger password.
        suggestions: Vec<String>,
    },
}

/// Joins zxcvbn's feedback into the tail of a message, starting with ". ".
fn feedback_suffix(warning: Option<&str>, suggestions: &[String]) -> String {
    let parts: Vec<&str> = warning
        .into_iter()
        .chain(suggestions.iter().map(String::as_str))
        .collect();
    if parts.is_empty() {
        return String::new();
    }
    format!(". {}", parts.join(" "))
}

impl PasswordPolicy {
    /// Checks the byte cap only: cheap, done first on every path (login too).
    pub fn check_bytes(&self, raw: &str) -> Result<(), PasswordProblem> {
        if raw.len() > self.max_bytes {
            return Err(PasswordProblem::TooManyBytes {
                bytes: raw.len(),
                max: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Checks a new password (register, change) and returns the normalised password to hash.
    ///
    /// The checks run in order: byte cap, NFKC normalisation, length in code
    /// points, context words, zxcvbn score. `context` is the email's local
    /// part, then the display name, then any further account values, and the
    /// position decides the [`ContextSource`] of a match. Each value counts
    /// whole and split into its alphanumeric words, and [`PRODUCT_NAME`] is
    /// always added. Values and words shorter than [`MIN_CONTEXT_WORD_CHARS`]
    /// are ignored. The same words are zxcvbn's user inputs.
    pub fn check_new(&self, raw: &str, context: &[&str]) -> Result<String, PasswordProblem> {
        self.check_bytes(raw)?;
        let password = normalize(raw);
        self.check_chars(&password)?;
        let words = context_words(context);
        check_context(&password, &words)?;
        check_strength(&password, &words)?;
        Ok(password)
    }

    fn check_chars(&self, password: &str) -> Result<(), PasswordProblem> {
        let chars = password.chars().count();
        if chars < self.min_chars {
            return Err(PasswordProblem::TooShort {
                chars,
                min: self.min_chars,
            });
        }
        if chars > self.max_chars {
            return Err(PasswordProblem::TooLong {
                chars,
                max: self.max_chars,
            });
        }
        Ok(())
    }
}

/// Normalises a password to Unicode NFKC, for both hashing and verifying.
pub fn normalize(raw: &str) -> String {
    raw.nfkc().collect()
}

/// A lower-case, normalised context word and where it came from.
struct ContextWord {
    word: String,
    source: ContextSource,
}

/// Collects the product name and the context values, whole and split into words.
fn context_words(context: &[&str]) -> Vec<ContextWord> {
    let mut words = Vec::new();
    push_value(&mut words, PRODUCT_NAME, ContextSource::ProductName);
    for (position, value) in context.iter().enumerate() {
        push_value(&mut words, value, ContextSource::from_position(position));
    }
    words
}

fn push_value(words: &mut Vec<ContextWord>, value: &str, source: ContextSource) {
    let value = normalize(value).to_lowercase();
    let parts = value.split(|c: char| !c.is_alphanumeric());
    for word in std::iter::once(value.as_str()).chain(parts) {
        let long_enough = word.chars().count() >= MIN_CONTEXT_WORD_CHARS;
        let known = words.iter().any(|existing| existing.word == word);
        if long_enough && !known {
            words.push(ContextWord {
                word: word.to_owned(),
                source,
            });
        }
    }
}

fn check_context(password: &str, words: &[ContextWord]) -> Result<(), PasswordProblem> {
    let lowered = password.to_lowercase();
    match words.iter().find(|context| lowered.contains(&context.word)) {
        Some(context) => Err(PasswordProblem::ContainsContext {
            context: context.source,
        }),
        None => Ok(()),
    }
}

fn check_strength(password: &str, words: &[ContextWord]) -> Result<(), PasswordProblem> {
    let user_inputs: Vec<&str> = words.iter().map(|context| context.word.as_str()).collect();
    let estimate = zxcvbn::zxcvbn(password, &user_inputs);
    let score = u8::from(estimate.score());
    if score >= MIN_STRENGTH_SCORE {
        return Ok(());
    }
    let feedback = estimate.feedback();
    let warning = feedback.and_then(|feedback| feedback.warning());
    let suggestions = feedback.map_or(&[][..], |feedback| feedback.suggestions());
    Err(PasswordProblem::Guessable {
        score,
        warning: warning.map(|warning| warning.to_string()),
        suggestions: suggestions.iter().map(ToString::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 15-code-point password that zxcvbn scores at least 3.
    const STRONG_15: &str = "tWy9#rLq!2mZ8vX";

    /// Expected outcome of one policy case.
    enum Expect {
        Accept,
        Reject(PasswordProblem),
        RejectGuessable,
    }

    struct Case {
        name: &'static str,
        password: String,
        context: Vec<&'static str>,
        expect: Expect,
    }

    fn case(name: &'static str, password: impl Into<String>, expect: Expect) -> Case {
        Case {
            name,
            password: password.into(),
            context: Vec::new(),
            expect,
        }
    }

    fn with_context(mut case: Case, context: &[&'static str]) -> Case {
        case.context = context.to_vec();
        case
    }

    /// Maps every printable ASCII character to its fullwidth compatibility form.
    fn fullwidth(ascii: &str) -> String {
        ascii
            .chars()
            .map(|c| match c {
                '!'..='~' => char::from_u32(u32::from(c) + 0xFEE0).unwrap(),
                other => other,
            })
            .collect()
    }

    /// 128 code points that zxcvbn scores at least 3.
    fn strong_128() -> String {
        "x7#Kq2!Lm9@Rt4$W".repeat(8)
    }

    fn cases() -> Vec<Case> {
        vec![
            case(
                "too short",
                "tWy9#rLq!2mZ8v",
                Expect::Reject(PasswordProblem::TooShort { chars: 14, min: 15 }),
            ),
            case("exactly 15 code points", STRONG_15, Expect::Accept),
            case("exactly 128 code points", strong_128(), Expect::Accept),
            case(
                "129 code points",
                strong_128() + "z",
                Expect::Reject(PasswordProblem::TooLong {
                    chars: 129,
                    max: 128,
                }),
            ),
            case(
                "1025 ASCII bytes",
                "a".repeat(1025),
                Expect::Reject(PasswordProblem::TooManyBytes {
                    bytes: 1025,
                    max: 1024,
                }),
            ),
            case(
                "257 four-byte characters",
                "\u{1F600}".repeat(257),
                Expect::Reject(PasswordProblem::TooManyBytes {
                    bytes: 1028,
                    max: 1024,
                }),
            ),
            case(
                // 120 Hangul syllables written as conjoining jamo: 360 code
                // points and 1080 bytes raw, 120 code points after NFKC.
                "jamo over byte cap, under 128 after NFKC",
                "\u{1100}\u{1161}\u{11A8}".repeat(120),
                Expect::Reject(PasswordProblem::TooManyBytes {
                    bytes: 1080,
                    max: 1024,
                }),
            ),
            case(
                "common password",
                "passwordpassword1",
                Expect::RejectGuessable,
            ),
            case("digit sequence", "123456789012345", Expect::RejectGuessable),
            case(
                "repeated character",
                "aaaaaaaaaaaaaaaa",
                Expect::RejectGuessable,
            ),
            case(
                "product name",
                "tWy9#valora!2mZ8vX",
                Expect::Reject(PasswordProblem::ContainsContext {
                    context: ContextSource::ProductName,
                }),
            ),
            case(
                "product name in capitals",
                "tWy9#VaLoRa!2mZ8vX",
                Expect::Reject(PasswordProblem::ContainsContext {
                    context: ContextSource::ProductName,
                }),
            ),
            case(
                "product name in fullwidth letters",
                format!("tWy9#{}!2mZ8vX", fullwidth("valora")),
                Expect::Reject(PasswordProblem::ContainsContext {
                    context: ContextSource::ProductName,
                }),
            ),
            with_context(
                case(
                    "whole email local part",
                    "tWy9#Margaret.Hamilton!2mZ",
                    Expect::Reject(PasswordProblem::ContainsContext {
                        context: ContextSource::EmailLocalPart,
                    }),
                ),
                &["margaret.hamilton", "Peggy Smith"],
            ),
            with_context(
                case(
                    "word of email local part",
                    "tWy9#hamilton!2mZ8vX",
                    Expect::Reject(PasswordProblem::ContainsContext {
                        context: ContextSource::EmailLocalPart,
                    }),
                ),
                &["margaret.hamilton", "Peggy Smith"],
            ),
            with_context(
                case(
                    "word of display name",
                    "tWy9#peggy!2mZ8vX",
                    Expect::Reject(PasswordProblem::ContainsContext {
                        context: ContextSource::DisplayName,
                    }),
                ),
                &["margaret.hamilton", "Peggy Smith"],
            ),
            with_context(
                case(
                    "context word under 4 characters",
                    "tWy9#bob!2mZ8vXq",
                    Expect::Accept,
                ),
                &["bob", "Bo Li"],
            ),
        ]
    }

    #[test]
    fn policy_cases() {
        let policy = PasswordPolicy::default();
        for case in cases() {
            let result = policy.check_new(&case.password, &case.context);
            match case.expect {
                Expect::Accept => {
                    assert!(
                        result.is_ok(),
                        "{}: expected acceptance, got {result:?}",
                        case.name
                    );
                }
                Expect::Reject(problem) => {
                    assert_eq!(result, Err(problem), "{}: wrong outcome", case.name);
                }
                Expect::RejectGuessable => {
                    assert!(
                        matches!(result, Err(PasswordProblem::Guessable { .. })),
                        "{}: expected Guessable, got {result:?}",
                        case.name,
                    );
                }
            }
        }
    }

    #[test]
    fn policy_returns_normalized_password() {
        let policy = PasswordPolicy::default();
        let accepted = policy.check_new(&fullwidth(STRONG_15), &[]);
        assert_eq!(
            accepted.as_deref(),
            Ok(STRONG_15),
            "fullwidth input must come back as its NFKC form"
        );
    }

    #[test]
    fn policy_normalizes_nfc_nfd_and_fullwidth() {
        let nfc = "Cr\u{E8}me-br\u{FB}l\u{E9}e-\u{D1}and\u{FA}-47";
        let nfd = "Cre\u{300}me-bru\u{302}le\u{301}e-N\u{303}andu\u{301}-47";
        assert_ne!(
            nfc, nfd,
            "the two spellings must differ before normalisation"
        );
        assert_eq!(
            normalize(nfd),
            normalize(nfc),
            "NFD must normalise to the NFC form"
        );
        assert_eq!(normalize(nfc), nfc, "NFC input must come back unchanged");
        assert_eq!(
            normalize(&fullwidth(STRONG_15)),
            STRONG_15,
            "fullwidth letters must become ASCII"
        );
        assert_eq!(
            normalize("\u{FB01}"),
            "fi",
            "the fi ligature must become two letters"
        );

        let policy = PasswordPolicy::default();
        let from_nfc = policy.check_new(nfc, &[]);
        let from_nfd = policy.check_new(nfd, &[]);
        assert!(from_nfc.is_ok(), "NFC spelling must pass: {from_nfc:?}");
        assert_eq!(
            from_nfc, from_nfd,
            "both spellings must yield the same password"
        );
    }

    #[test]
    fn policy_counts_length_after_normalisation() {
        let policy = PasswordPolicy::default();

        // 14 code points raw; the ligature becomes "fi", so 15 after NFKC.
        let ligature = "\u{FB01}y9#rLq!2mZ8vX";
        assert_eq!(
            ligature.chars().count(),
            14,
            "raw ligature input has 14 code points"
        );
        let accepted = policy.check_new(ligature, &[]);
        assert_eq!(
            accepted.as_deref(),
            Ok("fiy9#rLq!2mZ8vX"),
            "15 code points after NFKC must pass"
        );

        // 15 code points raw in NFD, 14 after NFKC composes e + U+0301.
        let decomposed = "e\u{301}Wy9#rLq!2mZ8v";
        assert_eq!(
            decomposed.chars().count(),
            15,
            "raw NFD input has 15 code points"
        );
        assert_eq!(
            policy.check_new(decomposed, &[]),
            Err(PasswordProblem::TooShort { chars: 14, min: 15 }),
            "14 code points after NFKC must fail",
        );
    }

    #[test]
    fn check_bytes_boundaries() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.check_bytes(&"a".repeat(1024)),
            Ok(()),
            "1024 bytes must pass"
        );
        assert_eq!(
            policy.check_bytes(&"a".repeat(1025)),
            Err(PasswordProblem::TooManyBytes {
                bytes: 1025,
                max: 1024
            }),
            "1025 bytes must fail",
        );
        assert_eq!(
            policy.check_bytes(""),
            Ok(()),
            "the byte cap alone accepts an empty input"
        );
    }

    #[test]
    fn byte_cap_applies_to_raw_input() {
        // 100 four-byte characters: 400 bytes, under 128 code points.
        let policy = PasswordPolicy {
            max_bytes: 256,
            ..PasswordPolicy::default()
        };
        let emoji = "\u{1F600}".repeat(100);
        assert_eq!(emoji.chars().count(), 100, "input has 100 code points");
        assert_eq!(
            policy.check_new(&emoji, &[]),
            Err(PasswordProblem::TooManyBytes {
                bytes: 400,
                max: 256
            }),
            "byte cap must reject before the length check",
        );
    }

    #[test]
    fn problem_messages_name_numbers() {
        let short = PasswordProblem::TooShort { chars: 9, min: 15 }.to_string();
        assert!(short.contains('9'), "TooShort names the length: {short}");
        assert!(short.contains("15"), "TooShort names the minimum: {short}");

        let long = PasswordProblem::TooLong {
            chars: 129,
            max: 128,
        }
        .to_string();
        assert!(long.contains("129"), "TooLong names the length: {long}");
        assert!(long.contains("128"), "TooLong names the maximum: {long}");

        let bytes = PasswordProblem::TooManyBytes {
            bytes: 1025,
            max: 1024,
        }
        .to_string();
        assert!(
            bytes.contains("1025"),
            "TooManyBytes names the length: {bytes}"
        );
        assert!(
            bytes.contains("1024"),
            "TooManyBytes names the cap: {bytes}"
        );
    }

    #[test]
    fn problem_messages_omit_password() {
        let policy = PasswordPolicy::default();
        let context = ["margaret.hamilton", "Peggy Smith"];
        let rejected = [
            "passwordpassword1",
            "tWy9#valora!2mZ8vX",
            "tWy9#hamilton!2mZ8vX",
            "tWy9#rLq!2mZ8v",
        ];
        for password in rejected {
            let message = match policy.check_new(password, &context) {
                Err(problem) => problem.to_string(),
                Ok(_) => panic!("{password}: expected a rejection"),
            };
            assert!(
                !message.contains(password),
                "message contains the password: {message}"
            );
            assert!(
                !message.contains("hamilton"),
                "message contains a context word: {message}"
            );
            assert!(
                !message.contains("valora"),
                "message contains a context word: {message}"
            );
        }
    }

    #[test]
    fn guessable_message_includes_feedback() {
        let problem = PasswordPolicy::default().check_new("passwordpassword1", &[]);
        let Err(problem @ PasswordProblem::Guessable { score, .. }) = problem else {
            panic!("expected Guessable, got {problem:?}");
        };
        let message = problem.to_string();
        assert!(
            score < MIN_STRENGTH_SCORE,
            "score {score} must be below the minimum"
        );
        assert!(
            message.contains(&format!("score {score} of 4")),
            "message names the score: {message}"
        );
        assert!(
            message.contains("at least 3"),
            "message names the minimum: {message}"
        );
        assert!(
            message.ends_with('.'),
            "message ends with zxcvbn's feedback: {message}"
        );
    }
}
