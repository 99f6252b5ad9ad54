//! The webhook receiver (SPEC §10): P100's deliveries checked, stored, answered; and the inbox
//! worker that turns them into brought-forward polling jobs ([`jobs::webhooks`]).
//!
//! Order of a delivery: token (503 when none is configured, 401 and nothing stored when it
//! does not match), body read up to 64 KiB, parsed ([`p100::webhook`]), stored durably (a
//! repeat counted on its first row), then answered: 200 `{}` when accepted, 400 with the
//! reason when rejected (kept as rejected), 503 when the database could not store it (P100
//! retries). Acting on it happens after the answer, from the inbox, so a slow job table never
//! makes P100 time out.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use ledger::webhooks::{DeliveryState, NewDelivery};
use p100::webhook::{MAX_BODY, Route};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, watch};

/// Of a body over the limit, this much is kept to show what it was.
const KEPT_OF_OVERSIZE: usize = 4 * 1024;

/// What the receiver needs.
#[derive(Clone)]
pub struct Receiver {
    /// The database.
    pub pool: ledger::PgPool,
    /// `P100_WEBHOOK_TOKEN`; without it every route answers 503.
    pub token: Option<Arc<SecretString>>,
    /// Wakes the inbox worker when a new delivery is stored.
    pub wake: Arc<Notify>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// The webhook routes: `/webhooks/p100/<route>`, P100's own partner-side paths, and health.
pub fn router(receiver: Receiver) -> Router {
    Router::new()
        .route("/webhooks/p100/{route}", post(receive_named))
        .route(
            "/webhook/user/status",
            post(|s: State<Receiver>, h: HeaderMap, b: Body| receive(s, Route::User, h, b)),
        )
        .route(
            "/webhook/poa-verification/status",
            post(|s: State<Receiver>, h: HeaderMap, b: Body| {
                receive(s, Route::PoaVerification, h, b)
            }),
        )
        .route("/webhook/health", get(health).post(health))
        .with_state(receiver)
}

async fn health() -> impl IntoResponse {
    json_response(StatusCode::OK, serde_json::json!({}))
}

async fn receive_named(
    state: State<Receiver>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match Route::parse(&name) {
        Some(route) => receive(state, route, headers, body).await,
        None => json_response(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no webhook route {name:?}") }),
        ),
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    route: Route,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let outcome = |outcome: &'static str| {
        metrics::counter!("webhook_deliveries_total", "route" => route.name(), "outcome" => outcome)
            .increment(1);
    };
    let Some(token) = &receiver.token else {
        outcome("unconfigured");
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "webhooks are off: P100_WEBHOOK_TOKEN is not set" }),
        );
    };
    if !authorized(&headers, token) {
        outcome("unauthorized");
        tracing::warn!(webhook.route = %route, "webhook refused: missing or wrong Authorization");
        return json_response(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "missing or wrong Authorization" }),
        );
    }
    let (bytes, oversize) = read_bounded(body).await;
    let parsed = match (oversize, &bytes) {
        (true, _) => Err(p100::webhook::Rejection::TooLarge),
        (false, Ok(bytes)) => p100::webhook::parse(route, bytes),
        (false, Err(e)) => {
            // The connection broke mid-body: nothing to store, P100 will retry.
            outcome("unreadable");
            tracing::warn!(webhook.route = %route, error = %e, "webhook body could not be read");
            return json_response(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": "body could not be read" }),
            );
        }
    };
    let bytes = bytes.unwrap_or_default();
    let body_bytes = bytes.len();
    let kept = if oversize {
        &bytes[..KEPT_OF_OVERSIZE.min(bytes.len())]
    } else {
        &bytes[..]
    };
    // Postgres text holds no NUL; a body that is not UTF-8 is kept readable.
    let text = String::from_utf8_lossy(kept).replace('\0', "\u{fffd}");
    let canonical = p100::webhook::canonical(kept);
    let reason = parsed.as_ref().err().map(ToString::to_string);
    let hint = parsed.as_ref().ok();
    let delivery = NewDelivery {
        route: route.name(),
        state: if hint.is_some() {
            DeliveryState::Accepted
        } else {
            DeliveryState::Rejected
        },
        reason: reason.as_deref(),
        entity_id: hint.map(|h| h.entity_id.as_str()),
        external_user_id: hint.and_then(|h| h.external_user_id.as_deref()),
        status: hint.and_then(|h| h.status.as_deref()),
        body: &text,
        body_bytes: i32::try_from(body_bytes).unwrap_or(i32::MAX),
        canonical: &canonical,
    };
    let stored = ledger::webhooks::receive(&receiver.pool, &delivery).await;
    let (id, repeated) = match stored {
        Ok(stored) => stored,
        Err(e) => {
            outcome("unstored");
            tracing::error!(webhook.route = %route, error = %e, "webhook not stored; P100 will retry it");
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": "could not store the delivery; retry" }),
            );
        }
    };
    match (&reason, repeated) {
        (Some(reason), _) => {
            outcome("rejected");
            tracing::warn!(webhook.id = id, webhook.route = %route, reason = %reason, "webhook rejected: {reason}");
            json_response(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": reason }),
            )
        }
        (None, true) => {
            outcome("repeated");
            tracing::debug!(webhook.id = id, webhook.route = %route, "webhook repeated");
            json_response(StatusCode::OK, serde_json::json!({}))
        }
        (None, false) => {
            outcome("accepted");
            tracing::debug!(webhook.id = id, webhook.route = %route, "webhook stored");
            receiver.wake.notify_one();
            json_response(StatusCode::OK, serde_json::json!({}))
        }
    }
}

/// The `Authorization` header is the token, bare or as `Bearer <token>`; compared in constant
/// time (the length of a wrong value may show, its content never).
fn authorized(headers: &HeaderMap, token: &SecretString) -> bool {
    let expected = token.expose_secret().as_bytes();
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let bearer = value
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"bearer "))
        .then(|| &value[7..]);
    let bare: bool = value.ct_eq(expected).into();
    let prefixed: bool = bearer.is_some_and(|b| b.ct_eq(expected).into());
    bare | prefixed
}

/// Reads at most `MAX_BODY + 1` bytes; says whether there was more than `MAX_BODY`.
async fn read_bounded(body: Body) -> (Result<Vec<u8>, axum::Error>, bool) {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                let room = MAX_BODY + 1 - bytes.len();
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if bytes.len() > MAX_BODY {
                    return (Ok(bytes), true);
                }
            }
            Err(e) => return (Err(e), false),
        }
    }
    (Ok(bytes), false)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// How often the inbox is looked at without a wake-up (deliveries stored by other replicas,
/// or left by a crash), and how often confirmations are checked.
const INBOX_POLL: Duration = Duration::from_secs(1);
const CONFIRM_POLL: Duration = Duration::from_millis(250);

/// Acts on the inbox until `stop`: at once when this process stored a delivery, otherwise
/// every second; notes confirmations every 250 ms.
pub async fn run_inbox(
    pool: ledger::PgPool,
    schedule: Arc<jobs::schedule::ScheduleFile>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut confirm_tick = tokio::time::interval(CONFIRM_POLL);
    confirm_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inbox_tick = tokio::time::interval(INBOX_POLL);
    inbox_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut confirm_failing = false;
    loop {
        tokio::select! {
            () = wake.notified() => act_all(&pool, &schedule, &mut failing).await,
            _ = inbox_tick.tick() => act_all(&pool, &schedule, &mut failing).await,
            _ = confirm_tick.tick() => match jobs::webhooks::confirm(&pool).await {
                Ok(confirmed) => {
                    confirm_failing = false;
                    for (route, seconds) in confirmed {
                        metrics::histogram!("webhook_confirm_seconds", "route" => route).record(seconds);
                    }
                }
                Err(e) => {
                    // Said once per outage, like acting on the inbox.
                    if !confirm_failing {
                        tracing::warn!(error = %e, "cannot note webhook confirmations; webhook_confirm_seconds waits");
                        confirm_failing = true;
                    }
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn act_all(
    pool: &ledger::PgPool,
    schedule: &jobs::schedule::ScheduleFile,
    failing: &mut bool,
) {
    loop {
        match jobs::webhooks::act(pool, schedule).await {
            Ok(n) => {
                if *failing {
                    tracing::info!("webhook inbox is being acted on again");
                    *failing = false;
                }
                if n < jobs::webhooks::BATCH as usize {
                    return;
                }
            }
            Err(e) => {
                // Said once per outage; the deliveries stay in the inbox and are acted on later.
                if !*failing {
                    tracing::warn!(error = %e, "cannot act on the webhook inbox; will retry");
                    *failing = true;
                }
                return;
            }
        }
    }
}
