//! `GET /v1/kyc/status/{externalUserId}`.

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Serialize;

use super::ok_json;
use crate::Sandbox;
use crate::error;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KycBody {
    status: String,
    attempt_status: String,
    /// Only while `attemptStatus` is `REJECTED_BY_PROVIDER`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejection_reason: Option<String>,
}

/// 200 `{"status","attemptStatus"}`; 400 P412 unknown user; 404 P445 no verification.
pub(crate) async fn status(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let read = sb.with_state(|st, now| st.read_kyc(&id, now));
    match read {
        Err(_) => error::invalid_user(),
        Ok(None) => error::kyc_not_found(),
        Ok(Some(v)) => ok_json(&KycBody {
            status: v.status,
            attempt_status: v.attempt_status,
            rejection_reason: v.rejection_reason,
        }),
    }
}
