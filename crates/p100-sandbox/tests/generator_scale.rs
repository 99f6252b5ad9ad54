//! The seeded generator at scale: 100k users and 1M transactions build quickly in little
//! memory, and computed pages agree with the precomputed balances.
//!
//! One test function in its own binary, so the memory figure is not disturbed by other tests.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use p100_sandbox::{GeneratorConfig, Sandbox};
use rust_decimal::Decimal;
use serde_json::Value;

const KEY: &str = "sandbox-key";

/// Resident memory of this process in KiB (Linux), or 0 elsewhere.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn dec(v: &Value) -> Decimal {
    match v {
        Value::String(s) => Decimal::from_str(s).unwrap(),
        Value::Number(n) => Decimal::from_str(&n.to_string()).unwrap(),
        other => panic!("not an amount: {other}"),
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
        )
    }

    /// All rows of a user plus the time of the slowest page.
    async fn user_rows(&self, user: &str) -> (Vec<Value>, Duration) {
        let mut rows = Vec::new();
        let mut slowest = Duration::ZERO;
        for page in 1.. {
            let t = Instant::now();
            let (s, b) = self
                .get(&format!(
                    "/v1/user/transactions/{user}?page={page}&size=100"
                ))
                .await;
            slowest = slowest.max(t.elapsed());
            assert_eq!(s, 200);
            let batch = b["transactions"].as_array().unwrap().clone();
            if batch.is_empty() {
                break;
            }
            rows.extend(batch);
        }
        (rows, slowest)
    }

    async fn balances(&self, user: &str) -> Vec<(String, Decimal)> {
        let (s, b) = self.get(&format!("/v1/user/balances/{user}")).await;
        assert_eq!(s, 200);
        b["fiatBalances"]
            .as_array()
            .unwrap()
            .iter()
            .chain(b["cryptoBalances"].as_array().unwrap())
            .map(|x| (x["name"].as_str().unwrap().to_string(), dec(&x["amount"])))
            .collect()
    }

    /// Pages agree with the balance: Σ COMPLETED (amount − fee) per currency.
    async fn check_user(&self, user: &str, expected_rows: usize) -> Duration {
        let (rows, slowest) = self.user_rows(user).await;
        assert_eq!(rows.len(), expected_rows, "{user}");
        let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), rows.len(), "{user}: duplicate ids");
        let keys: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r["updatedAt"].as_str().unwrap(), r["id"].as_str().unwrap()))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{user}: order");
        for (cur, bal) in self.balances(user).await {
            let sum: Decimal = rows
                .iter()
                .filter(|r| r["status"] == "COMPLETED" && r["currency"] == cur.as_str())
                .map(|r| dec(&r["amount"]) - dec(&r["fee"]))
                .sum();
            // Balance strings are rounded to the currency's precision; generated amounts
            // already have that precision, so the sums agree exactly.
            assert_eq!(sum, bal, "{user} {cur}");
        }
        slowest
    }
}

#[tokio::test]
async fn a_million_generated_transactions_are_cheap_and_consistent() {
    // Arrange: 100k users, 1M user rows, 100k partner rows.
    let before = rss_kib();
    let t = Instant::now();
    let sb = Sandbox::generated(GeneratorConfig {
        seed: 7,
        users: 100_000,
        transactions: 1_000_000,
        partner_transactions: 100_000,
        currencies: vec!["eur".into(), "btc".into(), "eth".into(), "usdc".into()],
    });
    let build = t.elapsed();
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    eprintln!("generator: 1M rows built in {build:?}, memory grew by {grown_mib} MiB");
    assert!(build < Duration::from_secs(60), "build took {build:?}");
    assert!(grown_mib < 100, "memory grew by {grown_mib} MiB");

    let running = sb.spawn().await.unwrap();
    let c = Client {
        http: reqwest::Client::new(),
        base: running.base_url(),
    };
    for user in ["user-000001", "user-050000", "user-100000"] {
        c.check_user(user, 10).await;
    }
    assert_eq!(c.get("/v1/user/balances/user-100001").await.0, 400);
    assert_eq!(c.get("/v1/user/balances/user-1").await.0, 400);

    // A deep partner page is computed, not scanned.
    let t = Instant::now();
    let (s, b) = c.get("/v1/partner/transactions?page=900&size=100").await;
    assert_eq!(s, 200);
    assert_eq!(b["total"], 100_000);
    assert_eq!(b["transactions"].as_array().unwrap().len(), 100);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // KYC varies deterministically: mostly VERIFIED, some of every other kind.
    let mut statuses = HashSet::new();
    for u in 1..=200 {
        let (s, b) = c.get(&format!("/v1/kyc/status/user-{u:06}")).await;
        statuses.insert((s, b["status"].as_str().unwrap_or("-").to_string()));
    }
    assert!(statuses.contains(&(200, "VERIFIED".into())));
    assert!(statuses.contains(&(200, "NOT_VERIFIED".into())));
    assert!(statuses.contains(&(404, "-".into())));

    // Same seed, same world.
    let again = Sandbox::generated(GeneratorConfig {
        seed: 7,
        users: 100_000,
        transactions: 1_000_000,
        partner_transactions: 100_000,
        currencies: vec!["eur".into(), "btc".into(), "eth".into(), "usdc".into()],
    });
    assert_eq!(
        again.balance("user-050000", "eur"),
        running.sandbox().balance("user-050000", "eur")
    );
    drop(again);

    // A user with 10k rows (100 users share 1M rows) pages in 100 pages, each fast.
    let sb = Sandbox::generated(GeneratorConfig {
        seed: 11,
        users: 100,
        transactions: 1_000_000,
        partner_transactions: 0,
        currencies: vec!["eur".into(), "usdc".into()],
    });
    let running = sb.spawn().await.unwrap();
    let c = Client {
        http: reqwest::Client::new(),
        base: running.base_url(),
    };
    let slowest = c.check_user("user-000042", 10_000).await;
    eprintln!("generator: slowest page of 100 rows took {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");

    // The from/to window is an index range: total matches the rows inside it.
    let (_, first) = c
        .get("/v1/user/transactions/user-000042?page=30&size=100")
        .await;
    let rows = first["transactions"].as_array().unwrap();
    let from = rows[0]["updatedAt"].as_str().unwrap();
    let to = rows[99]["updatedAt"].as_str().unwrap();
    let (_, window) = c
        .get(&format!(
            "/v1/user/transactions/user-000042?from={from}&to={to}&size=100"
        ))
        .await;
    assert_eq!(window["total"], 100);
    assert_eq!(window["transactions"].as_array().unwrap(), rows);
}
