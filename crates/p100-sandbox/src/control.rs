//! `/__control` endpoints: drive the sandbox from a test or a script. No API key needed.
//!
//! | method and path | body | does |
//! |---|---|---|
//! | `GET /__control/stats` | | request counters ([`RequestStats`](crate::RequestStats) shape) |
//! | `POST /__control/reset_stats` | | zero the counters |
//! | `GET /__control/faults` | | active faults with `seen`/`fired` counters |
//! | `POST /__control/faults` | `{"faults":[{...}]}` | add faults ([`Fault`] shape) |
//! | `DELETE /__control/faults` | | remove all faults |
//! | `POST /__control/drift` | `{"owner","currency","delta"}` | change a balance with no history row |
//! | `POST /__control/users` | `{"users":[...]}` | add users (scenario shape) |
//! | `POST /__control/transactions` | `{"owner","transactions":[...]}` | add history rows |
//! | `POST /__control/sepa` | `{"transfers":[...]}` | add SEPA transfers (scenario shape) |
//! | `POST /__control/kyc` | `{"external_user_id","kyc":{...} or null}` | set a user's KYC |
//! | `POST /__control/clock` | `{"advance_seconds": n}` | move the sandbox clock forward |
//! | `POST /__control/config` | `{"exchange":{...},"sepa":{...}}` | replace those config sections |
//! | `GET /__control/exchanges` | | every exchange created so far |
//! | `GET /__control/webhooks` | | `{"configured","dropping","drop_remaining","webhooks":[...]}`: the webhook log ([`WebhookRecord`] shape, `body` as JSON), oldest first |
//! | `POST /__control/webhooks/drop` | `{"times": n}` or `{"times": null}` | drop the next n webhook events, or all until cleared: never sent, logged `dropped` |
//! | `DELETE /__control/webhooks/drop` | | stop dropping webhook events |
//!
//! Errors are HTTP 400 (bad body) or 404 (unknown owner) with `{"error": "..."}`.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::json_response;
use crate::faults::Fault;
use crate::routes::ok_json;
use crate::scenario::{ExchangeConfig, KycSpec, SepaConfig, SepaSpec, TxSpec, UserSpec};
use crate::{ControlError, Sandbox, WebhookRecord};

pub(crate) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/__control/stats", get(stats))
        .route("/__control/reset_stats", post(reset_stats))
        .route(
            "/__control/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/__control/drift", post(drift))
        .route("/__control/users", post(users))
        .route("/__control/transactions", post(transactions))
        .route("/__control/sepa", post(sepa))
        .route("/__control/kyc", post(kyc))
        .route("/__control/clock", post(clock))
        .route("/__control/config", post(config))
        .route("/__control/exchanges", get(exchanges))
        .route("/__control/webhooks", get(webhooks))
        .route(
            "/__control/webhooks/drop",
            post(drop_webhooks).delete(clear_webhook_drop),
        )
}

fn bad(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    json_response(status, &json!({ "error": msg.to_string() }))
}

// An early-return `Response` is the natural error of a request helper; it is built once
// per request, so its size does not matter.
#[allow(clippy::result_large_err)]
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad(StatusCode::BAD_REQUEST, e))
}

fn done(r: Result<(), ControlError>) -> Response {
    match r {
        Ok(()) => ok_json(&json!({"ok": true})),
        Err(e @ ControlError::UnknownOwner(_)) => bad(StatusCode::NOT_FOUND, e),
        Err(e) => bad(StatusCode::BAD_REQUEST, e),
    }
}

async fn stats(State(sb): State<Sandbox>) -> Response {
    ok_json(&sb.request_stats())
}

async fn reset_stats(State(sb): State<Sandbox>) -> Response {
    sb.reset_stats();
    ok_json(&json!({"ok": true}))
}

async fn list_faults(State(sb): State<Sandbox>) -> Response {
    ok_json(&json!({ "faults": sb.faults() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    faults: Vec<Fault>,
}

async fn add_faults(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match parse::<FaultsBody>(&body) {
        Ok(b) => {
            sb.add_faults(b.faults);
            ok_json(&json!({"ok": true}))
        }
        Err(r) => r,
    }
}

async fn clear_faults(State(sb): State<Sandbox>) -> Response {
    sb.clear_faults();
    ok_json(&json!({"ok": true}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DriftBody {
    owner: String,
    currency: String,
    #[serde(with = "crate::scenario::decimal_text")]
    delta: Decimal,
}

async fn drift(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match parse::<DriftBody>(&body) {
        Ok(b) => done(sb.add_drift(&b.owner, &b.currency, b.delta)),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersBody {
    users: Vec<UserSpec>,
}

async fn users(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match parse::<UsersBody>(&body) {
        Ok(b) => done(sb.add_users(b.users)),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransactionsBody {
    owner: String,
    transactions: Vec<TxSpec>,
}

async fn transactions(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match parse::<TransactionsBody>(&body) {
        Ok(b) => done(sb.add_transactions(&b.owner, b.transactions)),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SepaBody {
    transfers: Vec<SepaSpec>,
}

async fn sepa(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match parse::<SepaBody>(&body) {
        Ok(b) => match sb.add_sepa_transfers(b.transfers) {
            Ok(ids) => ok_json(&json!({ "transfer_ids": ids })),
            Err(e) => done(Err(e)),
        },
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KycBody {
    external_user_id: String,
    kyc: Option<KycSpec>,
}

async fn kyc(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match parse::<KycBody>(&body) {
        Ok(b) => done(sb.set_kyc(&b.external_user_id, b.kyc)),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    advance_seconds: f64,
}

/// Longest single step of the clock: a century is past every lock, hold and grace period.
const MAX_ADVANCE_SECONDS: f64 = 100.0 * 365.0 * 86_400.0;

async fn clock(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match parse::<ClockBody>(&body) {
        Ok(b) if (0.0..=MAX_ADVANCE_SECONDS).contains(&b.advance_seconds) => {
            sb.advance_clock(Duration::from_secs_f64(b.advance_seconds));
            ok_json(&json!({"ok": true}))
        }
        Ok(_) => bad(
            StatusCode::BAD_REQUEST,
            "advance_seconds must be between 0 and 3153600000 (a century)",
        ),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    exchange: Option<ExchangeConfig>,
    sepa: Option<SepaConfig>,
}

async fn config(State(sb): State<Sandbox>, body: Bytes) -> Response {
    match parse::<ConfigBody>(&body) {
        Ok(b) => {
            if let Some(e) = b.exchange {
                sb.configure_exchange(|c| *c = e);
            }
            if let Some(s) = b.sepa {
                sb.configure_sepa(|c| *c = s);
            }
            ok_json(&json!({"ok": true}))
        }
        Err(r) => r,
    }
}

async fn exchanges(State(sb): State<Sandbox>) -> Response {
    ok_json(&json!({ "exchanges": sb.exchanges() }))
}

#[derive(Serialize)]
struct WebhooksBody {
    configured: bool,
    dropping: bool,
    /// Events still to drop; null while dropping means all until cleared.
    drop_remaining: Option<u32>,
    webhooks: Vec<WebhookRecord>,
}

async fn webhooks(State(sb): State<Sandbox>) -> Response {
    let (configured, (dropping, drop_remaining), webhooks) =
        sb.with_hooks(|h| (h.is_configured(), h.drop_status(), h.log()));
    ok_json(&WebhooksBody {
        configured,
        dropping,
        drop_remaining,
        webhooks,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DropBody {
    /// How many events to drop; absent or null: all until cleared.
    #[serde(default)]
    times: Option<u32>,
}

async fn drop_webhooks(State(sb): State<Sandbox>, body: Bytes) -> Response {
    // An empty body means "drop everything", like `{"times": null}`.
    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(DropBody { times: None })
    } else {
        parse::<DropBody>(&body)
    };
    match parsed {
        Ok(b) => {
            sb.drop_webhooks(b.times);
            ok_json(&json!({"ok": true}))
        }
        Err(r) => r,
    }
}

async fn clear_webhook_drop(State(sb): State<Sandbox>) -> Response {
    sb.clear_webhook_drop();
    ok_json(&json!({"ok": true}))
}
