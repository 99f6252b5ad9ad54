//! `GET /v1/partner/balances`, `GET /v1/user/balances/{id}` (and the legacy
//! `GET /v1/user/{id}/balances`), shaped as `operations.md` §5.1.

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::ok_json;
use crate::Sandbox;
use crate::error;
use crate::money::{self, FIAT};
use crate::state::PARTNER;
use crate::util::{fnv64, mix, uuid_from_key};

#[derive(Serialize)]
struct FiatBalance {
    id: String,
    /// String zero-padded to the currency's precision.
    amount: String,
    name: String,
    /// Number.
    rate: Value,
    /// Null until the balance is active.
    iban: Option<String>,
    status: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CryptoBalance {
    id: String,
    amount: String,
    name: String,
    wallet: Option<String>,
    rate: Value,
    network_config: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Balances {
    fiat_balances: Vec<FiatBalance>,
    crypto_balances: Vec<CryptoBalance>,
}

pub(crate) async fn partner(State(sb): State<Sandbox>) -> Response {
    owner_balances(&sb, PARTNER)
}

pub(crate) async fn user(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    if id == PARTNER {
        return error::invalid_user();
    }
    owner_balances(&sb, &id)
}

fn owner_balances(sb: &Sandbox, id: &str) -> Response {
    let (balances, fiat_status) = sb.with_state(|st, _| (st.balances(id), st.fiat_status(id)));
    let Some(balances) = balances else {
        return error::invalid_user();
    };
    let mut body = Balances {
        fiat_balances: Vec::new(),
        crypto_balances: Vec::new(),
    };
    for (currency, amount) in balances {
        let bal_id = uuid_from_key(&format!("{id}/balance/{currency}"));
        let amount_text = money::padded(amount, money::precision(&currency));
        let rate = money::number(money::eur_rate(&currency));
        if currency == FIAT {
            let active = fiat_status == "ACTIVE";
            body.fiat_balances.push(FiatBalance {
                id: bal_id,
                amount: amount_text,
                name: currency,
                rate,
                iban: active.then(|| iban(id)),
                status: fiat_status.clone(),
            });
        } else {
            body.crypto_balances.push(CryptoBalance {
                id: bal_id,
                amount: amount_text,
                wallet: wallet(id, &currency),
                network_config: money::network_config(&currency),
                name: currency,
                rate,
            });
        }
    }
    ok_json(&body)
}

/// The partner's IBAN is the reference's example; users get a stable made-up one.
fn iban(owner: &str) -> String {
    if owner == PARTNER {
        return "LT683130019950000568".into();
    }
    let h = fnv64(owner.as_bytes());
    format!(
        "LT{:02}3130{:012}",
        h % 97,
        mix(h, 3, 0) % 1_000_000_000_000
    )
}

/// A stable deposit address; one EVM address serves every EVM token of an owner, as in the
/// reference's example.
fn wallet(owner: &str, currency: &str) -> Option<String> {
    let h = fnv64(owner.as_bytes());
    let hex = |salt: u64, len: usize| -> String {
        let mut s = String::new();
        let mut i = 0;
        while s.len() < len {
            s.push_str(&format!("{:016x}", mix(h, salt, i)));
            i += 1;
        }
        s.truncate(len);
        s
    };
    match currency {
        "eth" | "usdc" | "usdt" | "pol" => Some(format!("0x{}", hex(1, 40))),
        "btc" => Some(format!("tb1q{}", hex(2, 38))),
        "ltc" => Some(format!("tltc1q{}", hex(3, 38))),
        _ => None,
    }
}
