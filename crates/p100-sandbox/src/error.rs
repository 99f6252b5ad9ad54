//! P100 error bodies, exactly as the reference shows them.
//!
//! Three shapes exist and the sandbox emits all of them: the three-field business error
//! (`errorCode`, `errorName`, `errorMessage`), the legacy two-field form (`errorCode`,
//! `errorName`, e.g. P428), and validation/system errors without `errorName` (P403, and
//! P500/P501 as the brief fixes them). Auth failures are `{"message": "Access Denied. xoN"}`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Builds a JSON response.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// An error body with the fields given (absent ones are left out, not null).
pub(crate) fn p_error(
    status: StatusCode,
    code: &str,
    name: Option<&str>,
    message: Option<&str>,
) -> Response {
    let mut m = Map::new();
    m.insert("errorCode".into(), Value::String(code.into()));
    if let Some(n) = name {
        m.insert("errorName".into(), Value::String(n.into()));
    }
    if let Some(msg) = message {
        m.insert("errorMessage".into(), Value::String(msg.into()));
    }
    json_response(status, &Value::Object(m))
}

/// 401 `Access Denied. xo1` (no key) / `xo2` (wrong key).
pub(crate) fn access_denied(which: &str) -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({ "message": format!("Access Denied. {which}") }),
    )
}

/// 400 P403 without `errorName`; several failures are joined into one message as P100 does.
pub(crate) fn validation(messages: &[String]) -> Response {
    p_error(
        StatusCode::BAD_REQUEST,
        "P403",
        None,
        Some(
            &messages
                .iter()
                .map(|m| m.trim_end_matches('.'))
                .collect::<Vec<_>>()
                .join(". "),
        ),
    )
}

/// 400 P412 invalid-user.
pub(crate) fn invalid_user() -> Response {
    p_error(
        StatusCode::BAD_REQUEST,
        "P412",
        Some("invalid-user"),
        Some("User does not exist"),
    )
}

/// 404 P445. The reference documents neither name nor message; these are the sandbox's.
pub(crate) fn kyc_not_found() -> Response {
    p_error(
        StatusCode::NOT_FOUND,
        "P445",
        Some("kyc-not-found"),
        Some("KYC not found"),
    )
}

/// 404 P428 in the legacy two-field form.
pub(crate) fn sepa_not_found() -> Response {
    p_error(
        StatusCode::NOT_FOUND,
        "P428",
        Some("sepa-transfer-not-found"),
        None,
    )
}

/// 400 P431 — sandbox invention (P100 does not document the unknown-lock error).
pub(crate) fn lock_not_found() -> Response {
    p_error(
        StatusCode::BAD_REQUEST,
        "P431",
        Some("lock-not-found"),
        Some("Lock not found"),
    )
}

/// 400 P432 — sandbox invention (expired lock).
pub(crate) fn lock_expired() -> Response {
    p_error(
        StatusCode::BAD_REQUEST,
        "P432",
        Some("lock-expired"),
        Some("Lock expired"),
    )
}

/// 404 P433 — sandbox invention (unknown exchange id).
pub(crate) fn exchange_not_found() -> Response {
    p_error(
        StatusCode::NOT_FOUND,
        "P433",
        Some("exchange-not-found"),
        Some("Exchange not found"),
    )
}

/// 400 P500 (yes, 400: as documented).
pub(crate) fn p500() -> Response {
    p_error(
        StatusCode::BAD_REQUEST,
        "P500",
        None,
        Some("Unknown exception"),
    )
}

/// 400 P501.
pub(crate) fn p501() -> Response {
    p_error(
        StatusCode::BAD_REQUEST,
        "P501",
        None,
        Some("Service temporarily unavailable"),
    )
}
