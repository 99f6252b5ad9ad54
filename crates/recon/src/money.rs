//! Amounts as people read them: each currency with its own decimal places, the same way in
//! every table, summary and page. Never rounded: an amount with more decimals than its
//! currency's shows them all. (The report's JSON and CSV keep P100's exact strings.)

use rust_decimal::Decimal;

/// Decimal places a currency is shown with: 2 for fiat, 8 for bitcoin and ether, 6 for the
/// dollar stablecoins; an unknown currency shows the amount's own digits, at least 2.
pub fn places(currency: &str) -> u32 {
    match currency.to_ascii_lowercase().as_str() {
        "btc" | "eth" | "ltc" | "bch" => 8,
        "usdc" | "usdt" | "eurc" => 6,
        "eur" | "usd" | "gbp" | "chf" | "pln" | "czk" | "sek" | "nok" | "dkk" | "huf" | "ron"
        | "bgn" => 2,
        _ => 2,
    }
}

/// `amount` in `currency`'s decimal places (more when it has more).
pub fn shown(amount: Decimal, currency: &str) -> String {
    let own = amount.normalize().scale();
    let mut fixed = amount;
    fixed.rescale(places(currency).max(own));
    fixed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn each_currency_has_its_places_and_nothing_is_rounded() {
        let cases = [
            ("0.75", "btc", "0.75000000"),
            ("0.75000000", "btc", "0.75000000"),
            ("300", "eur", "300.00"),
            ("-120.00", "eur", "-120.00"),
            ("80.5", "eur", "80.50"),
            ("85.50", "EUR", "85.50"),
            ("42.123456", "usdc", "42.123456"),
            ("50", "usdc", "50.000000"),
            ("0.001", "eur", "0.001"),
            ("1.23456789012", "btc", "1.23456789012"),
            ("7", "xyz", "7.00"),
            ("0", "eur", "0.00"),
        ];
        for (amount, currency, expect) in cases {
            assert_eq!(shown(d(amount), currency), expect, "{amount} {currency}");
        }
    }
}
