//! Exchange (partner only): lock, create-and-finalize, details.
//!
//! Sandbox-invented codes (P100 documents none for these cases): P431 `lock-not-found`,
//! P432 `lock-expired` (both HTTP 400) and P433 `exchange-not-found` (HTTP 404).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::{amount_field, amount_text, currency_field, json_body, ok_json, required_str};
use crate::Sandbox;
use crate::error;
use crate::money;
use crate::state::StateError;
use crate::util::rfc3339_ms;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LockBody {
    lock_id: String,
    rate: Value,
    expires_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedBody {
    exchange_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetailsBody {
    exchange_id: String,
    status: String,
    currency_from: String,
    currency_to: String,
    amount_from: Value,
    amount_to: Value,
    fee: Value,
    created_at: String,
}

/// `GET /v1/partner/exchange/lock?currencyFrom=&currencyTo=&amount=`.
pub(crate) async fn lock(
    State(sb): State<Sandbox>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return error::validation(&[format!("invalid query string: {e}")]),
    };
    let mut problems = Vec::new();
    let field = |name: &str, problems: &mut Vec<String>| -> Option<String> {
        match q.get(name).map(|s| s.trim()) {
            Some(s) if !s.is_empty() => Some(s.to_string()),
            _ => {
                problems.push(format!("{name} should not be empty"));
                None
            }
        }
    };
    let from = field("currencyFrom", &mut problems);
    let from = currency_field(from, "currencyFrom", &mut problems);
    let to = field("currencyTo", &mut problems);
    let to = currency_field(to, "currencyTo", &mut problems);
    let amount = match field("amount", &mut problems) {
        Some(a) => amount_text(money::parse_decimal(&a), &mut problems),
        None => None,
    };
    if let (Some(f), Some(t)) = (&from, &to)
        && f == t
    {
        problems.push("currencyFrom and currencyTo must differ".into());
    }
    let (Some(from), Some(to), Some(amount), true) = (from, to, amount, problems.is_empty()) else {
        return error::validation(&problems);
    };
    let lock = sb.with_state(|st, now| st.create_lock(&from, &to, amount, now));
    ok_json(&LockBody {
        lock_id: lock.id,
        rate: money::number(lock.rate),
        expires_at: rfc3339_ms(lock.expires_ms),
    })
}

/// `POST /v1/partner/exchange` `{"amount","currencyFrom","currencyTo","lockId"}`.
///
/// Not idempotent, on purpose: a second POST with the same `lockId` creates a second
/// exchange (P100 documents no idempotency), so tests catch double submission.
pub(crate) async fn finalize(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let m = match json_body(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut problems = Vec::new();
    let amount = amount_field(m.get("amount"), &mut problems);
    let from = required_str(&m, "currencyFrom", &mut problems);
    let from = currency_field(from, "currencyFrom", &mut problems);
    let to = required_str(&m, "currencyTo", &mut problems);
    let to = currency_field(to, "currencyTo", &mut problems);
    let lock_id = required_str(&m, "lockId", &mut problems);
    let (Some(amount), Some(from), Some(to), Some(lock_id), true) =
        (amount, from, to, lock_id, problems.is_empty())
    else {
        return error::validation(&problems);
    };
    let created = sb.with_state(|st, now| st.finalize_exchange(&lock_id, &from, &to, amount, now));
    match created {
        Ok(exchange_id) => ok_json(&CreatedBody { exchange_id }),
        Err(StateError::LockNotFound) => error::lock_not_found(),
        Err(StateError::LockExpired) => error::lock_expired(),
        Err(StateError::Invalid(msg)) => error::validation(&[msg]),
        Err(StateError::UnknownUser) => error::invalid_user(),
    }
}

/// `GET /v1/partner/exchange/{exchangeId}`; each read counts as a poll.
pub(crate) async fn details(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let Some(e) = sb.with_state(|st, now| st.read_exchange(&id, now)) else {
        return error::exchange_not_found();
    };
    let id = e.exchange_id.clone();
    ok_json(&DetailsBody {
        amount_from: money::mixed(e.amount_from, &e.currency_from, &id, "amountFrom"),
        amount_to: money::mixed(e.amount_to, &e.currency_to, &id, "amountTo"),
        fee: money::mixed(e.fee, &e.currency_from, &id, "fee"),
        exchange_id: e.exchange_id,
        status: e.status,
        currency_from: e.currency_from,
        currency_to: e.currency_to,
        created_at: e.created_at,
    })
}
