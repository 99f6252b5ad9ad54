//! How serious a discrepancy is: it grows with the amount at stake and with its age.
//!
//! Amount thresholds are per currency (a tenth of a bitcoin is not a tenth of a euro); a
//! currency without thresholds counts any amount as `medium`. An unresolved discrepancy goes
//! up one level after a day and is `high` after a week, whatever its amount.

use std::time::Duration;

use rust_decimal::Decimal;

/// Severity, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Small and recent.
    Low,
    /// Worth a look today.
    Medium,
    /// Worth a look now.
    High,
}

impl Severity {
    /// Stored and reported spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            _ => None,
        }
    }

    fn up(self) -> Severity {
        match self {
            Severity::Low => Severity::Medium,
            _ => Severity::High,
        }
    }
}

/// (medium from, high from) in units of the currency.
fn thresholds(currency: &str) -> Option<(Decimal, Decimal)> {
    let fiat = (Decimal::from(100), Decimal::from(10_000));
    Some(match currency {
        "eur" | "usd" | "gbp" | "chf" | "usdt" | "usdc" => fiat,
        "pln" => (Decimal::from(400), Decimal::from(40_000)),
        "btc" => (Decimal::new(1, 3), Decimal::new(1, 1)),
        "eth" => (Decimal::new(3, 2), Decimal::from(3)),
        _ => return None,
    })
}

/// The severity of `amount` (absolute value is used) in `currency`, open for `age`.
pub fn of(amount: Decimal, currency: Option<&str>, age: Duration) -> Severity {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let amount = amount.abs();
    let base = match currency.and_then(thresholds) {
        Some((_, high)) if amount >= high => Severity::High,
        Some((medium, _)) if amount >= medium => Severity::Medium,
        Some(_) => Severity::Low,
        None => Severity::Medium,
    };
    if age >= 7 * DAY {
        Severity::High
    } else if age >= DAY {
        base.up()
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn severity_grows_with_amount_and_age() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        let h = |n: u64| Duration::from_secs(n * 3600);
        let cases = [
            ("0.01", Some("eur"), h(0), Severity::Low),
            ("-99.99", Some("eur"), h(0), Severity::Low),
            ("100", Some("eur"), h(0), Severity::Medium),
            ("-10000", Some("eur"), h(0), Severity::High),
            ("0.0009", Some("btc"), h(0), Severity::Low),
            ("0.001", Some("btc"), h(0), Severity::Medium),
            ("0.5", Some("btc"), h(0), Severity::High),
            ("0.01", Some("xyz"), h(0), Severity::Medium),
            ("0", None, h(0), Severity::Medium),
            ("0.01", Some("eur"), h(24), Severity::Medium),
            ("100", Some("eur"), h(30), Severity::High),
            ("0.01", Some("eur"), h(24 * 7), Severity::High),
        ];
        for (amount, currency, age, expected) in cases {
            assert_eq!(
                of(d(amount), currency, age),
                expected,
                "{amount} {currency:?} {age:?}"
            );
        }
    }
}
