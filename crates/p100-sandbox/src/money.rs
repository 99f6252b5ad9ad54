//! Amounts, currencies and their JSON forms.
//!
//! P100 is not uniform about amounts (see `p100-api/overview.md` §7): balance amounts are
//! strings zero-padded to the currency's precision, SEPA amounts are unpadded strings, fees and
//! rates are JSON numbers. Everything here produces exact decimal text: `serde_json` is built
//! with `arbitrary_precision`, so a [`serde_json::Number`] parsed from `"0.001"` is emitted as
//! `0.001`, never as a binary float.

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Number, Value};

use crate::util::fnv64;

/// The one fiat currency P100 serves; everything else is reported as a crypto balance.
pub const FIAT: &str = "eur";

/// Currencies an owner gets when the scenario does not list any.
pub const DEFAULT_CURRENCIES: &[&str] = &["eur", "btc", "eth", "ltc", "pol", "usdc", "usdt"];

/// Number of decimals a currency's balance `amount` string is padded to.
///
/// eur 2; usdc/usdt 6; btc, eth, ltc, pol and anything unknown 8 (8 is P100's validation
/// maximum, so an unknown currency never loses digits).
pub fn precision(currency: &str) -> u32 {
    match currency {
        "eur" => 2,
        "usdc" | "usdt" => 6,
        _ => 8,
    }
}

/// Value of one unit in EUR, as shown in the balance objects' `rate`.
///
/// Taken from the reference's examples; unknown currencies are worth 1.
pub fn eur_rate(currency: &str) -> Decimal {
    let text = match currency {
        "eur" => "1",
        "usdc" => "0.963728",
        "usdt" => "0.963486",
        "btc" => "102178.03394219",
        "eth" => "3160.21051755",
        "ltc" => "103.62980236",
        "pol" => "0.19598695",
        "doge" => "0.18210564",
        _ => "1",
    };
    Decimal::from_str(text).unwrap_or(Decimal::ONE)
}

/// Fixed P100 withdrawal service fee per currency (Fees page), used by the generator.
pub fn withdrawal_fee(currency: &str) -> Decimal {
    let text = match currency {
        "eur" => "1.00",
        "btc" => "0.0003",
        "eth" => "0.003",
        "ltc" => "0.002",
        "pol" => "0.5",
        "usdc" | "usdt" => "0.5",
        "doge" => "5",
        _ => "0",
    };
    Decimal::from_str(text).unwrap_or(Decimal::ZERO)
}

/// Rounds half away from zero to `dp` decimals (how money is usually rounded).
pub fn round(d: Decimal, dp: u32) -> Decimal {
    d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero)
}

/// `d` as a string with exactly `dp` decimals: `"0.00"`, `"0.000000"`.
pub fn padded(d: Decimal, dp: u32) -> String {
    let mut r = round(d, dp);
    r.rescale(dp);
    r.to_string()
}

/// `d` as a string without trailing zeros: `"3.8"`, `"5.51"`, `"10"`.
pub fn plain(d: Decimal) -> String {
    d.normalize().to_string()
}

/// `d` as an exact JSON number: `3.8`, `0.0003`, `1`.
pub fn number(d: Decimal) -> Value {
    match Number::from_str(&plain(d)) {
        Ok(n) => Value::Number(n),
        // Cannot happen for a Decimal's own text; fall back to a string rather than panic.
        Err(_) => Value::String(plain(d)),
    }
}

/// How an amount is written in a history row or exchange details.
///
/// P100 sends amounts both as strings and as numbers, and strings are not always padded;
/// the sandbox mixes all three forms, chosen deterministically from the row id (and a salt
/// so `amount` and `fee` of one row need not agree), so clients meet every form.
pub fn mixed(d: Decimal, currency: &str, id: &str, salt: &str) -> Value {
    let h = fnv64(id.as_bytes()) ^ fnv64(salt.as_bytes());
    match h % 3 {
        0 => number(d),
        1 => Value::String(plain(d)),
        _ => Value::String(padded(d, precision(currency))),
    }
}

/// Parses an amount given as a JSON string or number (exact, thanks to arbitrary_precision).
pub fn decimal_from_value(v: &Value) -> Option<Decimal> {
    match v {
        Value::String(s) => parse_decimal(s),
        Value::Number(n) => parse_decimal(&n.to_string()),
        _ => None,
    }
}

/// Parses decimal text, accepting scientific notation as JSON numbers may use it.
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    Decimal::from_str(s)
        .ok()
        .or_else(|| Decimal::from_scientific(s).ok())
}

/// The `networkConfig` object of a crypto balance, as in the reference's staging examples.
pub fn network_config(currency: &str) -> Value {
    fn net(name: &str, fee: &str, min_w: &str, min_d: &str) -> Value {
        let n = |s: &str| number(parse_decimal(s).unwrap_or(Decimal::ZERO));
        serde_json::json!({
            "mainnet": false,
            "name": name,
            "withdrawal": { "feeWithdrawal": n(fee), "minWithdrawal": n(min_w) },
            "deposit": { "minDeposit": n(min_d) }
        })
    }
    let mut m = serde_json::Map::new();
    match currency {
        "usdc" | "usdt" => {
            m.insert("ethereum".into(), net("sepolia", "10", "15", "5"));
            m.insert("polygon".into(), net("amoy", "10", "15", "5"));
        }
        "eth" => {
            m.insert("ethereum".into(), net("sepolia", "0.003", "0.0006", "0"));
        }
        "pol" => {
            m.insert("polygon".into(), net("amoy", "0.001", "0.00005", "0"));
        }
        "btc" => {
            m.insert("btc".into(), net("test", "0.0003", "0.0005", "0.00005"));
        }
        "ltc" => {
            m.insert("ltc".into(), net("test", "0.002", "0.001", "0"));
        }
        other => {
            m.insert(other.to_string(), net("test", "0", "0", "0"));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn formats_match_the_reference() {
        assert_eq!(padded(Decimal::ZERO, precision("eur")), "0.00");
        assert_eq!(padded(Decimal::ZERO, precision("usdc")), "0.000000");
        assert_eq!(padded(Decimal::ZERO, precision("btc")), "0.00000000");
        assert_eq!(padded(d("12.5"), 2), "12.50");
        assert_eq!(padded(d("-3.805"), 2), "-3.81");
        assert_eq!(plain(d("3.80")), "3.8");
        assert_eq!(number(d("0.0010")).to_string(), "0.001");
        assert_eq!(number(d("1")).to_string(), "1");
        assert_eq!(number(d("102178.03394219")).to_string(), "102178.03394219");
    }

    #[test]
    fn amounts_parse_from_strings_and_numbers() {
        assert_eq!(
            decimal_from_value(&serde_json::json!("3.8")),
            Some(d("3.8"))
        );
        let n: Value = serde_json::from_str("0.00000001").unwrap();
        assert_eq!(decimal_from_value(&n), Some(d("0.00000001")));
        assert_eq!(decimal_from_value(&serde_json::json!(true)), None);
        assert_eq!(parse_decimal("1e2"), Some(d("100")));
    }
}
