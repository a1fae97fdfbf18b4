//! Field checks that collect every violation of a request at once.

use iso_currency::Currency;

use super::{MAX_AMOUNT_MINOR, MarketplaceError, Money, Violation};

/// Maximum title length, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Maximum description length, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
/// Maximum category length, in characters.
pub const MAX_CATEGORY_CHARS: usize = 64;
/// Maximum plan name length, in characters.
pub const MAX_PLAN_NAME_CHARS: usize = 100;
/// Maximum search text length, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// Collects field violations; [`Checker::finish`] turns them into an error.
#[derive(Debug, Default)]
pub struct Checker {
    violations: Vec<Violation>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.violations.push(Violation::new(field, description));
    }

    /// `Ok` when no violation was recorded.
    pub fn finish(self) -> Result<(), MarketplaceError> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(MarketplaceError::Invalid(self.violations))
        }
    }

    /// A required single-line text: trimmed, 1 to `max` characters, no
    /// control characters.
    pub fn line(&mut self, field: &str, value: &str, max: usize) -> String {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            self.add(field, "is required and must not be blank");
        } else if trimmed.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        } else if trimmed.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
        trimmed.to_owned()
    }

    /// An optional multi-line text: at most `max` characters; tabs and line
    /// breaks are the only control characters allowed.
    pub fn paragraph(&mut self, field: &str, value: &str, max: usize) -> String {
        if value.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        } else if value.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            self.add(field, "must not contain control characters other than tab and line breaks");
        }
        value.to_owned()
    }

    /// A category: 1 to 64 lowercase ASCII letters, digits and `-`,
    /// starting with a letter or digit.
    pub fn category(&mut self, field: &str, value: &str) -> String {
        if !is_category(value) {
            self.add(
                field,
                format!(
                    "must be 1 to {MAX_CATEGORY_CHARS} lowercase letters, digits or '-', \
                     starting with a letter or digit, such as \"books\""
                ),
            );
        }
        value.to_owned()
    }

    /// A required price.
    pub fn money(&mut self, field: &str, value: Option<(&str, i64)>) -> Option<Money> {
        let Some((code, amount)) = value else {
            self.add(field, "is required");
            return None;
        };
        let before = self.violations.len();
        match Currency::from_code(code) {
            Some(currency) if currency.exponent().is_some() => {}
            Some(_) => self.add(
                &format!("{field}.currency_code"),
                format!("{code:?} has no minor unit and cannot be used for prices"),
            ),
            None => self.add(
                &format!("{field}.currency_code"),
                format!("{code:?} is not an ISO 4217 currency code such as \"EUR\""),
            ),
        }
        if amount < 0 {
            self.add(&format!("{field}.amount_minor"), "must not be negative");
        } else if amount > MAX_AMOUNT_MINOR {
            self.add(
                &format!("{field}.amount_minor"),
                format!("must be at most {MAX_AMOUNT_MINOR}"),
            );
        }
        (self.violations.len() == before)
            .then(|| Money { currency_code: code.to_owned(), amount_minor: amount })
    }

    /// A required resource id: a UUID in its canonical lowercase form.
    pub fn id(&mut self, field: &str, value: &str) -> String {
        if value.is_empty() {
            self.add(field, "is required");
        } else if !is_canonical_uuid(value) {
            self.add(field, "must be an id returned by this API (a lowercase UUID)");
        }
        value.to_owned()
    }
}

fn is_category(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_CATEGORY_CHARS
        && bytes[0] != b'-'
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn is_canonical_uuid(value: &str) -> bool {
    value.len() == 36
        && uuid::Uuid::parse_str(value).is_ok_and(|u| u.hyphenated().to_string() == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(f: impl FnOnce(&mut Checker)) -> Vec<String> {
        let mut checker = Checker::new();
        f(&mut checker);
        match checker.finish() {
            Ok(()) => vec![],
            Err(MarketplaceError::Invalid(v)) => v.into_iter().map(|v| v.field).collect(),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn money_rules() {
        assert!(violations(|c| drop(c.money("price", Some(("EUR", 100))))).is_empty());
        assert_eq!(violations(|c| drop(c.money("price", None))), ["price"]);
        assert_eq!(violations(|c| drop(c.money("price", Some(("eur", 1))))), ["price.currency_code"]);
        assert_eq!(violations(|c| drop(c.money("price", Some(("XAU", 1))))), ["price.currency_code"]);
        assert_eq!(violations(|c| drop(c.money("price", Some(("EUR", -1))))), ["price.amount_minor"]);
        assert_eq!(
            violations(|c| drop(c.money("price", Some(("EUR", MAX_AMOUNT_MINOR + 1))))),
            ["price.amount_minor"]
        );
        assert!(violations(|c| drop(c.money("price", Some(("JPY", MAX_AMOUNT_MINOR))))).is_empty());
    }

    #[test]
    fn text_rules() {
        assert_eq!(violations(|c| drop(c.line("title", "   ", 10))), ["title"]);
        assert_eq!(violations(|c| drop(c.line("title", "abcdefghijk", 10))), ["title"]);
        assert!(violations(|c| drop(c.line("title", "éééééééééé", 10))).is_empty());
        assert_eq!(violations(|c| drop(c.line("title", "a\u{0}b", 10))), ["title"]);
        assert!(violations(|c| drop(c.paragraph("d", "a\nb\tc", 10))).is_empty());
    }

    #[test]
    fn category_and_id_rules() {
        assert!(violations(|c| drop(c.category("category", "books-2"))).is_empty());
        for bad in ["", "Books", "-x", "a b", &"a".repeat(65)] {
            assert_eq!(violations(|c| drop(c.category("category", bad))), ["category"], "{bad}");
        }
        let id = uuid::Uuid::now_v7().to_string();
        assert!(violations(|c| drop(c.id("id", &id))).is_empty());
        assert_eq!(violations(|c| drop(c.id("id", &id.to_uppercase()))), ["id"]);
        assert_eq!(violations(|c| drop(c.id("id", "42"))), ["id"]);
    }
}
