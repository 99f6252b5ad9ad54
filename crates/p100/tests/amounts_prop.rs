//! Any amount P100 may send (up to 8 decimals, as a JSON string or number, padded or not)
//! decodes to exactly the decimal it spells.

use p100::model::Balances;
use proptest::prelude::*;
use rust_decimal::Decimal;

fn decode(amount_json: &str) -> Decimal {
    let body =
        format!(r#"{{"fiatBalances": [{{"id": "x", "amount": {amount_json}, "name": "eur"}}]}}"#);
    let balances: Balances =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{amount_json}: {e}"));
    balances.fiat_balances[0].amount
}

proptest! {
    #[test]
    fn strings_and_numbers_decode_exactly(mantissa in -999_999_999_999_999_999i64..=999_999_999_999_999_999i64, scale in 0u32..=8, pad in 0u32..=4) {
        let expected = Decimal::new(mantissa, scale);
        // Beyond the bound is refused (tested below), not decoded.
        prop_assume!(expected.abs() < p100::amount::MAX_ABS_AMOUNT);
        let text = expected.to_string();
        prop_assert_eq!(decode(&format!("\"{text}\"")), expected);
        prop_assert_eq!(decode(&text), expected);
        // Zero-padding to a wider scale (as balance strings are) keeps the value and its digits.
        let mut padded = expected;
        padded.rescale(scale + pad);
        let padded_text = padded.to_string();
        let decoded = decode(&format!("\"{padded_text}\""));
        prop_assert_eq!(decoded, expected);
        prop_assert_eq!(decoded.to_string(), padded_text);
    }

    #[test]
    fn sums_of_decoded_amounts_are_exact(cents in proptest::collection::vec(0i64..1_000_000, 1..50)) {
        let total: Decimal = cents.iter().map(|c| decode(&Decimal::new(*c, 2).to_string())).sum();
        prop_assert_eq!(total, Decimal::new(cents.iter().sum(), 2));
    }
}

#[test]
fn point_one_plus_point_two_is_point_three() {
    assert_eq!(decode("0.1") + decode("\"0.2\""), decode("0.3"));
}

/// Security review: an amount beyond any real balance is refused where it enters, so sums
/// downstream cannot overflow.
#[test]
fn amounts_at_or_beyond_ten_to_the_fifteen_are_refused() {
    assert_eq!(
        p100::amount::MAX_ABS_AMOUNT,
        Decimal::from(1_000_000_000_000_000u64)
    );
    for bad in [
        "1e40",
        "1000000000000000",
        "-1000000000000000.0",
        "79228162514264337593543950335",
        &"9".repeat(100),
    ] {
        assert!(p100::amount::parse_amount(bad).is_err(), "{bad}");
        let body =
            format!(r#"{{"fiatBalances": [{{"id": "x", "amount": "{bad}", "name": "eur"}}]}}"#);
        assert!(serde_json::from_str::<Balances>(&body).is_err(), "{bad}");
    }
    assert!(p100::amount::parse_amount("999999999999999.99999999").is_ok());
    assert!(p100::amount::parse_operation_amount("0").is_err());
    assert!(p100::amount::parse_operation_amount("1.123456789").is_err());
    assert_eq!(
        p100::amount::parse_operation_amount(" 12.50 ").unwrap(),
        Decimal::new(1250, 2)
    );
}
