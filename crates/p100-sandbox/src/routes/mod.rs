//! The P100 routes and the layer in front of them (stats, faults, API key).

mod balances;
mod exchange;
mod kyc;
mod sepa;
mod transactions;

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Sandbox;
use crate::error::{self, json_response};
use crate::faults::FaultKind;

/// Marks a response whose connection must be closed without answering (the `drop` fault).
/// The sandbox's own server turns it into a service error, which makes hyper close the
/// connection before writing anything.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// Largest request body read (P100 bodies are tiny).
const BODY_LIMIT: usize = 1 << 20;

/// Invalid JSON sent by the `malformed` fault.
const MALFORMED_BODY: &str = "{\"transactions\": [";

/// All P100 routes with the P100 layer.
pub(crate) fn p100_routes(sb: Sandbox) -> Router<Sandbox> {
    Router::new()
        .route("/v1/kyc/status/{externalUserId}", get(kyc::status))
        .route("/v1/partner/balances", get(balances::partner))
        .route("/v1/user/balances/{externalUserId}", get(balances::user))
        // Legacy spelling of the same endpoint (older docs, a third-party client).
        .route("/v1/user/{externalUserId}/balances", get(balances::user))
        .route("/v1/partner/transactions", get(transactions::partner))
        .route(
            "/v1/user/transactions/{externalUserId}",
            get(transactions::user),
        )
        .route("/v1/partner/exchange/lock", get(exchange::lock))
        .route("/v1/partner/exchange", post(exchange::finalize))
        .route("/v1/partner/exchange/{exchangeId}", get(exchange::details))
        .route("/v1/sepa-transfer/details/{transferId}", get(sepa::details))
        .route("/v1/partner/sepa-transfer", post(sepa::create_partner))
        .route("/v1/sepa-transfer", post(sepa::create_user))
        .route_layer(axum::middleware::from_fn_with_state(sb, p100_layer))
}

/// Unknown paths: the NestJS-style 404 P100's framework would give.
pub(crate) async fn not_found(req: Request) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({
            "message": format!("Cannot {} {}", req.method(), req.uri().path()),
            "error": "Not Found",
            "statusCode": 404
        }),
    )
}

/// `"GET /v1/kyc/status"`: method plus the route with its parameters left out.
fn route_key(method: &str, matched: Option<&MatchedPath>, path: &str) -> String {
    let template = matched.map_or(path, |m| m.as_str());
    let stripped: Vec<&str> = template
        .split('/')
        .filter(|s| !s.starts_with('{'))
        .collect();
    format!("{method} {}", stripped.join("/"))
}

/// Checks `x-api-key` (header names are case-insensitive in `HeaderMap`).
// An early-return `Response` is the natural error of a request helper; it is built once
// per request, so its size does not matter.
#[allow(clippy::result_large_err)]
fn check_key(headers: &HeaderMap, expected: &str) -> Result<(), Response> {
    match headers.get("x-api-key").map(HeaderValue::as_bytes) {
        None | Some(b"") => Err(error::access_denied("xo1")),
        Some(k) if k == expected.as_bytes() => Ok(()),
        Some(_) => Err(error::access_denied("xo2")),
    }
}

/// Counts, injects faults, checks the key, runs the handler, then applies after-faults.
async fn p100_layer(
    State(sb): State<Sandbox>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let key = route_key(&method, matched.as_ref(), &path);
    let now = sb.now_ms();
    sb.with_stats(|s| s.record_request(&key, now.div_euclid(1000)));
    let auth = check_key(req.headers(), &sb.api_key());

    // Count finalize calls per lockId before anything else can answer, so a client that
    // retries through faults is seen.
    let req = if method == "POST" && path == "/v1/partner/exchange" {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .unwrap_or_default();
        if auth.is_ok()
            && let Some(lock) = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("lockId").and_then(Value::as_str).map(String::from))
        {
            sb.with_stats(|s| s.record_finalize(&lock));
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req
    };

    if !sb.admit() {
        let rejected = fault_response(&FaultKind::RateLimit {
            retry_after_seconds: 1,
        });
        sb.with_stats(|s| s.record_response(rejected.status().as_str()));
        return rejected;
    }
    let decision = sb.with_faults(|f| f.decide(&method, &path));
    let fired = decision.before.is_some()
        || decision.after.is_some()
        || decision.latency_before_ms > 0
        || decision.latency_after_ms > 0;
    if fired {
        sb.with_stats(|s| s.snap.faults_fired += 1);
    }
    if decision.latency_before_ms > 0 {
        tokio::time::sleep(Duration::from_millis(decision.latency_before_ms)).await;
    }
    let response = if let Some(kind) = decision.before {
        fault_response(&kind)
    } else if let Err(denied) = auth {
        denied
    } else {
        let response = next.run(req).await;
        if decision.latency_after_ms > 0 {
            tokio::time::sleep(Duration::from_millis(decision.latency_after_ms)).await;
        }
        match decision.after {
            Some(kind) => after_fault(&kind, response).await,
            None => response,
        }
    };
    let status = if response.extensions().get::<DropConnection>().is_some() {
        "drop".to_string()
    } else {
        response.status().as_u16().to_string()
    };
    sb.with_stats(|s| s.record_response(&status));
    response
}

/// The answer a fault gives instead of P100's.
fn fault_response(kind: &FaultKind) -> Response {
    match kind {
        FaultKind::P501 => error::p501(),
        FaultKind::P500 => error::p500(),
        FaultKind::HttpStatus { status } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            let title = format!(
                "{} {}",
                code.as_u16(),
                code.canonical_reason().unwrap_or("Error")
            );
            (
                code,
                [(header::CONTENT_TYPE, "text/html")],
                format!(
                    "<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center></body></html>"
                ),
            )
                .into_response()
        }
        FaultKind::RateLimit {
            retry_after_seconds,
        } => {
            let mut r = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"message": "Too Many Requests"}),
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_seconds.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        FaultKind::Drop => drop_response(),
        FaultKind::Malformed => malformed(),
        // These need the real answer; before the handler they degrade to `malformed`.
        FaultKind::Truncated | FaultKind::UnknownEnum => malformed(),
        FaultKind::Latency { .. } => StatusCode::OK.into_response(),
    }
}

fn malformed() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        MALFORMED_BODY,
    )
        .into_response()
}

/// A response that never completes: marked for the sandbox's server to drop the connection,
/// and with a failing body for servers that ignore the mark (plain `axum::serve` of
/// [`Sandbox::router`]), so the client still sees a broken response.
fn drop_response() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "connection dropped by a sandbox fault",
        ))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.extensions_mut().insert(DropConnection);
    r
}

/// Applies a fault to the handler's answer.
async fn after_fault(kind: &FaultKind, response: Response) -> Response {
    match kind {
        FaultKind::Truncated | FaultKind::UnknownEnum => {
            let (mut parts, body) = response.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
                return malformed();
            };
            let out: Vec<u8> = if matches!(kind, FaultKind::Truncated) {
                bytes[..bytes.len() / 2].to_vec()
            } else {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(mut v) => {
                        replace_enums(&mut v);
                        v.to_string().into_bytes()
                    }
                    Err(_) => bytes.to_vec(),
                }
            };
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(out))
        }
        other => fault_response(other),
    }
}

/// Replaces every string value of a `status`, `attemptStatus` or `type` key.
fn replace_enums(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if matches!(k.as_str(), "status" | "attemptStatus" | "type") && child.is_string() {
                    *child = Value::String("SOMETHING_NEW".into());
                } else {
                    replace_enums(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(replace_enums),
        _ => {}
    }
}

/// 200 with a body serialized in struct field order (not through `Value`, whose map would
/// sort the keys).
pub(crate) fn ok_json<T: Serialize>(body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(_) => error::p500(),
    }
}

/// Parses a JSON request body, or answers P403.
// An early-return `Response` is the natural error of a request helper; it is built once
// per request, so its size does not matter.
#[allow(clippy::result_large_err)]
pub(crate) fn json_body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error::validation(&["body must be a JSON object".into()])),
        Err(e) => Err(error::validation(&[format!("body is not valid JSON: {e}")])),
    }
}

/// A required non-empty string field of a body, or the class-validator style message.
pub(crate) fn required_str(
    m: &serde_json::Map<String, Value>,
    field: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match m.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            problems.push(format!("{field} should not be empty"));
            None
        }
        Some(_) => {
            problems.push(format!("{field} must be a string"));
            None
        }
    }
}

/// A positive amount with at most 8 decimals, from a JSON string or number.
pub(crate) fn amount_field(
    v: Option<&Value>,
    problems: &mut Vec<String>,
) -> Option<rust_decimal::Decimal> {
    match v {
        None | Some(Value::Null) => {
            problems.push("amount should not be empty".into());
            None
        }
        Some(v) => amount_text(crate::money::decimal_from_value(v), problems),
    }
}

/// Checks a parsed amount.
pub(crate) fn amount_text(
    d: Option<rust_decimal::Decimal>,
    problems: &mut Vec<String>,
) -> Option<rust_decimal::Decimal> {
    match d {
        Some(d) if d > rust_decimal::Decimal::ZERO => {
            if d.normalize().scale() > 8 {
                problems.push("Amount can have at most 8 decimal places.".into());
                None
            } else {
                Some(d)
            }
        }
        _ => {
            problems.push("amount must be a positive number".into());
            None
        }
    }
}

/// A currency slug: lowercased, letters and digits only.
pub(crate) fn currency_field(
    raw: Option<String>,
    field: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    let c = raw?.to_lowercase();
    if c.chars().all(|ch| ch.is_ascii_alphanumeric()) {
        Some(c)
    } else {
        problems.push(format!("{field} must be a currency code like eur or btc"));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_leave_parameters_out() {
        assert_eq!(
            route_key("GET", None, "/v1/partner/balances"),
            "GET /v1/partner/balances"
        );
        assert_eq!(
            route_key("GET", None, "/v1/user/{externalUserId}/balances"),
            "GET /v1/user/balances"
        );
    }

    #[test]
    fn unknown_enum_replaces_nested_values_only_for_enum_keys() {
        let mut v = json!({"status": "A", "x": [{"type": "B", "id": "C"}], "attemptStatus": "D"});
        replace_enums(&mut v);
        assert_eq!(
            v,
            json!({"status": "SOMETHING_NEW", "x": [{"type": "SOMETHING_NEW", "id": "C"}], "attemptStatus": "SOMETHING_NEW"})
        );
    }
}
