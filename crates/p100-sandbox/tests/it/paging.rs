//! History paging: no gaps, no duplicates, (updatedAt, id) order, `from`/`to` inclusive.

use std::collections::HashSet;

use p100_sandbox::{Sandbox, Scenario, TxSpec, UserSpec};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::helpers::{Env, completed_sum};

const USER: &str = "pager";
const N: usize = 10_000;
const BASE_MS: i64 = 1_750_000_000_000;

/// 10k rows; pairs share a timestamp so ordering must fall back to the id.
fn scenario() -> Scenario {
    let statuses = ["COMPLETED", "COMPLETED", "PENDING", "FAILED", "COMPLETED"];
    let kinds = ["DEPOSIT", "CARD", "FEE", "WITHDRAWAL", "CASHBACK"];
    let transactions = (0..N)
        .map(|i| TxSpec {
            // Ids deliberately not in time order.
            id: Some(format!("tx-{:05}", (i * 7919) % N)),
            kind: kinds[i % 5].into(),
            status: statuses[i % 5].into(),
            currency: if i % 3 == 0 { "btc" } else { "eur" }.into(),
            amount: Decimal::new(i as i64 % 1000 - 300, 2),
            fee: Decimal::new(i as i64 % 7, 2),
            created_at: chrono::DateTime::from_timestamp_millis(BASE_MS + (i as i64 / 2) * 1000),
            ..TxSpec::default()
        })
        .collect();
    Scenario {
        users: vec![UserSpec {
            external_user_id: USER.into(),
            transactions,
            ..UserSpec::default()
        }],
        ..Scenario::default()
    }
}

fn key(r: &Value) -> (String, String) {
    (
        r["updatedAt"].as_str().unwrap().to_string(),
        r["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn ten_thousand_rows_page_without_gaps_or_duplicates() {
    let env = Env::start(Sandbox::from_scenario(scenario())).await;
    let path = format!("/v1/user/transactions/{USER}");
    let mut rows = Vec::new();
    for page in 1..=100 {
        let (s, body) = env.get(&format!("{path}?page={page}&size=100")).await;
        assert_eq!(s, 200);
        assert_eq!(body["total"], 10_000);
        assert_eq!(body["page"], page);
        assert_eq!(body["size"], 100);
        rows.extend(body["transactions"].as_array().unwrap().clone());
    }
    let (_, past_end) = env.get(&format!("{path}?page=101&size=100")).await;
    assert_eq!(past_end["transactions"].as_array().unwrap().len(), 0);
    assert_eq!(past_end["total"], 10_000);

    assert_eq!(rows.len(), N);
    let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), N, "duplicates");
    let keys: Vec<_> = rows.iter().map(key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "not ordered by (updatedAt, id)");

    // Amounts come in both JSON types, and strings are sometimes unpadded.
    assert!(rows.iter().any(|r| r["amount"].is_number()));
    assert!(rows.iter().any(|r| r["amount"].is_string()));
    assert!(rows.iter().any(|r| r["type"] == "CASHBACK"));

    // The balance is the sum of COMPLETED amount − fee.
    for cur in ["eur", "btc"] {
        let bal = env.balance(&format!("/v1/user/balances/{USER}"), cur).await;
        assert_eq!(completed_sum(&rows, cur), bal, "{cur}");
    }

    // Default page size is 20.
    let (_, first) = env.get(&path).await;
    assert_eq!(first["size"], 20);
    assert_eq!(first["transactions"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn from_and_to_are_inclusive_and_total_counts_the_window() {
    let env = Env::start(Sandbox::from_scenario(scenario())).await;
    let path = format!("/v1/user/transactions/{USER}");
    let all = env.all_rows(&path).await;
    let from = all[2500]["updatedAt"].as_str().unwrap().to_string();
    let to = all[7499]["updatedAt"].as_str().unwrap().to_string();
    let expected: Vec<_> = all
        .iter()
        .filter(|r| {
            let t = r["updatedAt"].as_str().unwrap();
            t >= from.as_str() && t <= to.as_str()
        })
        .map(key)
        .collect();
    let window = env.all_rows(&format!("{path}?from={from}&to={to}")).await;
    assert_eq!(window.iter().map(key).collect::<Vec<_>>(), expected);
    let (_, body) = env.get(&format!("{path}?from={from}&to={to}&size=1")).await;
    assert_eq!(body["total"].as_u64(), Some(expected.len() as u64));
    // Rows sharing the boundary timestamps are all included.
    assert!(expected.len() >= 5000);

    // An offset written with +00:00 (unencoded '+' arrives as a space) means the same.
    let from_offset = from.replace('Z', "+00:00");
    let (_, same) = env
        .get(&format!("{path}?from={from_offset}&to={to}&size=1"))
        .await;
    assert_eq!(same["total"], body["total"]);
}

#[tokio::test]
async fn bad_paging_parameters_are_p403_without_error_name() {
    let env = Env::start(Sandbox::from_scenario(scenario())).await;
    for q in [
        "size=101",
        "size=0",
        "page=0",
        "page=x",
        "from=yesterday",
        "to=2025-13-01",
    ] {
        let (s, b) = env.get(&format!("/v1/partner/transactions?{q}")).await;
        assert_eq!(s, 400, "{q}");
        assert_eq!(b["errorCode"], "P403", "{q}");
        assert!(b.get("errorName").is_none(), "{q}");
        assert!(b["errorMessage"].is_string(), "{q}");
    }
}
