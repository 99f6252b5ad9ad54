//! Amounts and currencies exactly as P100 sends them.
//!
//! P100 writes amounts as JSON strings (`"0.00000000"`, `"3.8"`) in some places and as JSON
//! numbers (`0.001`, `100`) in others (`p100-api/overview.md` §7). Both are decoded into
//! [`rust_decimal::Decimal`] from their *text*: the workspace enables serde_json's
//! `arbitrary_precision`, so a JSON number reaches us as its literal digits and never passes
//! through `f64`.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The most decimal places P100 accepts or sends (its validation message says 8).
pub const MAX_SCALE: u32 = 8;

/// Every amount the product accepts, from P100, the CLI or an intake table, is below this in
/// absolute value (10^15 units of any currency, far above any real balance). Sums of up to
/// 10^13 such amounts stay inside `Decimal`, so no total can overflow; migration 0017 holds
/// the tables to the same bound (`abs(amount) < 1e15`).
pub const MAX_ABS_AMOUNT: Decimal = Decimal::from_parts(0xA4C6_8000, 0x38D7E, 0, false, 0);

/// Parses an amount from P100's text form: optional sign, digits, optional fraction,
/// optionally an exponent (JSON numbers may use one). Refuses anything at or beyond
/// [`MAX_ABS_AMOUNT`].
pub fn parse_amount(text: &str) -> Result<Decimal, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty amount".to_owned());
    }
    // Longer text is no amount we accept; refused before any parsing work.
    if trimmed.len() > 64 {
        return Err(format!("invalid amount: {} characters long", trimmed.len()));
    }
    let parsed = if trimmed.contains(['e', 'E']) {
        Decimal::from_scientific(trimmed)
    } else {
        Decimal::from_str_exact(trimmed)
    };
    let amount = parsed.map_err(|e| format!("invalid amount {trimmed:?}: {e}"))?;
    if amount.abs() >= MAX_ABS_AMOUNT {
        return Err(format!(
            "amount {trimmed} is beyond the largest accepted ({MAX_ABS_AMOUNT})"
        ));
    }
    Ok(amount)
}

/// An amount a person enters for an operation (a SEPA transfer, an exchange): positive, at
/// most [`MAX_SCALE`] decimals, below [`MAX_ABS_AMOUNT`]. The CLI's one validator.
pub fn parse_operation_amount(text: &str) -> Result<Decimal, String> {
    let amount = parse_amount(text)?;
    if amount <= Decimal::ZERO {
        return Err(format!("amount {} is not positive", text.trim()));
    }
    if amount.scale() > MAX_SCALE {
        return Err(format!(
            "amount {} has more than {MAX_SCALE} decimals",
            text.trim()
        ));
    }
    Ok(amount)
}

/// Serde adapter: `#[serde(deserialize_with = "amount::de")]` for a required amount.
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    d.deserialize_any(AmountVisitor)
}

/// Serde adapter for an amount that may be absent or `null`.
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Decimal>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an amount (string or number) or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            de(d).map(Some)
        }
    }
    d.deserialize_option(OptVisitor)
}

/// Serialises an amount as an exact JSON number (P100's request bodies use numbers).
pub fn ser_number<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    let number = serde_json::Number::from_str(&value.normalize().to_string())
        .map_err(serde::ser::Error::custom)?;
    number.serialize(s)
}

struct AmountVisitor;

impl<'de> Visitor<'de> for AmountVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an amount as a JSON string or number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse_amount(v).map_err(E::custom)
    }

    // Integers take the same path as text, so the same bound applies.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        parse_amount(&v.to_string()).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        parse_amount(&v.to_string()).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
        // Only reachable if `arbitrary_precision` were off; refuse rather than guess.
        Err(E::custom(format!(
            "amount {v} arrived as a binary float; refusing to round it"
        )))
    }

    // With `arbitrary_precision`, serde_json hands numbers over as a one-entry map that
    // `serde_json::Number` knows how to read; its `Display` is the literal text.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Decimal, A::Error> {
        let number = serde_json::Number::deserialize(de::value::MapAccessDeserializer::new(map))?;
        parse_amount(&number.to_string()).map_err(de::Error::custom)
    }
}

/// A currency code, normalised to lowercase (P100 sends `eur`, one legacy example `BTC`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    /// Normalises and validates a currency code: 2 to 10 ASCII letters or digits.
    pub fn parse(code: &str) -> Result<Currency, String> {
        let code = code.trim();
        let valid =
            (2..=10).contains(&code.len()) && code.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid {
            return Err(format!("invalid currency code {code:?}"));
        }
        Ok(Currency(code.to_ascii_lowercase()))
    }

    /// The lowercase code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.0)
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Currency::parse(&raw).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "de")]
        amount: Decimal,
    }

    fn check(json: &str, expected: &str) {
        let h: Holder = serde_json::from_str(&format!(r#"{{"amount": {json}}}"#)).unwrap();
        assert_eq!(h.amount.to_string(), expected, "decoding {json}");
    }

    #[test]
    fn every_documented_amount_form_is_exact() {
        check(r#""0.00000000""#, "0.00000000");
        check(r#""0.00""#, "0.00");
        check(r#""3.8""#, "3.8");
        check(r#""16.02""#, "16.02");
        check("0.001", "0.001");
        check("100", "100");
        check("0.000469", "0.000469");
        check("102178.03394219", "102178.03394219");
        check(r#""-12.5""#, "-12.5");
        check("-0.1", "-0.1");
        check("1e-8", "0.00000001");
    }

    #[test]
    fn numbers_that_floats_cannot_hold_are_kept_exact() {
        check("0.30000000000000004", "0.30000000000000004");
        check("12345678901234.12345678", "12345678901234.12345678");
    }

    #[test]
    fn garbage_is_an_error_that_names_the_value() {
        let err = serde_json::from_str::<Holder>(r#"{"amount": "12,5"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("12,5"), "{err}");
        assert!(serde_json::from_str::<Holder>(r#"{"amount": true}"#).is_err());
        assert!(serde_json::from_str::<Holder>(r#"{"amount": ""}"#).is_err());
    }

    #[test]
    fn currencies_are_case_insensitive() {
        let c: Currency = serde_json::from_str(r#""BTC""#).unwrap();
        assert_eq!(c.as_str(), "btc");
        assert!(Currency::parse("e").is_err());
        assert!(Currency::parse("eu r").is_err());
    }

    #[test]
    fn amounts_serialise_as_exact_numbers() {
        #[derive(Serialize)]
        struct Out {
            #[serde(serialize_with = "ser_number")]
            amount: Decimal,
        }
        let json = serde_json::to_string(&Out {
            amount: Decimal::from_str("0.10000000").unwrap(),
        })
        .unwrap();
        assert_eq!(json, r#"{"amount":0.1}"#);
    }
}
