//! Rates such as `100/second`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// At most `count` calls per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

/// A rate setting that is not `COUNT/second`, `COUNT/minute`,
/// `COUNT/hour` or `off`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a rate: use COUNT/second, COUNT/minute or COUNT/hour with COUNT from 1 to 1000000, or off")]
pub struct BadRate(pub String);

/// Parses a rate; `off` (or an empty value) means no limit.
pub fn parse_rate(text: &str) -> Result<Option<Rate>, BadRate> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some)
}

impl FromStr for Rate {
    type Err = BadRate;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadRate(text.to_owned());
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 || count > 1_000_000 {
            return Err(bad());
        }
        let window = match unit.trim() {
            "second" | "s" => Duration::from_secs(1),
            "minute" | "m" => Duration::from_secs(60),
            "hour" | "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Self { count, window })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.window.as_secs() {
            1 => "second",
            60 => "minute",
            _ => "hour",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("100/second").unwrap(), Some(Rate { count: 100, window: Duration::from_secs(1) }));
        assert_eq!(parse_rate("10/minute").unwrap().unwrap().window, Duration::from_secs(60));
        assert_eq!(parse_rate("off").unwrap(), None);
        for bad in ["100", "0/second", "ten/second", "5/day", "-1/second", "2000000/second"] {
            assert_eq!(parse_rate(bad), Err(BadRate(bad.to_owned())), "{bad}");
        }
    }
}
