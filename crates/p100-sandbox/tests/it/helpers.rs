//! `Env`: a running sandbox and a plain reqwest client.

use std::str::FromStr;

use p100_sandbox::{RunningSandbox, Sandbox};
use rust_decimal::Decimal;
use serde_json::Value;

pub const KEY: &str = "sandbox-key";

pub struct Env {
    pub running: RunningSandbox,
    pub http: reqwest::Client,
}

impl Env {
    pub async fn start(sb: Sandbox) -> Env {
        let running = sb.spawn().await.expect("sandbox starts");
        Env {
            running,
            http: reqwest::Client::new(),
        }
    }

    pub fn sandbox(&self) -> &Sandbox {
        self.running.sandbox()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base_url())
    }

    /// GET with the API key; status and JSON body (parsed exactly: arbitrary precision).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .header("x-api-key", KEY)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let bytes = r.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: invalid JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .header("x-api-key", KEY)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let bytes = r.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).expect("JSON body"))
    }

    /// Every row of a history endpoint, page by page (size 100).
    pub async fn all_rows(&self, path: &str) -> Vec<Value> {
        let mut rows = Vec::new();
        for page in 1.. {
            let sep = if path.contains('?') { '&' } else { '?' };
            let (status, body) = self.get(&format!("{path}{sep}page={page}&size=100")).await;
            assert_eq!(status, 200, "{body}");
            let batch = body["transactions"]
                .as_array()
                .expect("transactions")
                .clone();
            if batch.is_empty() {
                break;
            }
            rows.extend(batch);
        }
        rows
    }

    /// A balance from the balances endpoint, as a decimal.
    pub async fn balance(&self, path: &str, currency: &str) -> Decimal {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{body}");
        let all = body["fiatBalances"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(body["cryptoBalances"].as_array().into_iter().flatten());
        for b in all {
            if b["name"] == currency {
                return dec(&b["amount"]);
            }
        }
        Decimal::ZERO
    }
}

/// A decimal from a JSON string or number.
pub fn dec(v: &Value) -> Decimal {
    match v {
        Value::String(s) => Decimal::from_str(s).expect("decimal string"),
        Value::Number(n) => Decimal::from_str(&n.to_string()).expect("decimal number"),
        other => panic!("not an amount: {other}"),
    }
}

pub fn d(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

/// The JSON "type skeleton": same keys, leaves replaced by their type name.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

/// Sum of `amount − fee` over COMPLETED rows, per currency.
pub fn completed_sum(rows: &[Value], currency: &str) -> Decimal {
    rows.iter()
        .filter(|r| r["status"] == "COMPLETED" && r["currency"] == currency)
        .map(|r| dec(&r["amount"]) - dec(&r["fee"]))
        .sum()
}
