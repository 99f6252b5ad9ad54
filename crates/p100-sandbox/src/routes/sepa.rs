//! SEPA transfers: create (partner and user) and details (`sepa.md` §3–4).
//!
//! While a transfer is not final the sandbox reports status `PROCESSING`: P100 documents only
//! `SUCCESSFUL` and `FAILED`, so clients must treat any other value as non-terminal.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};

use super::{amount_field, json_body, ok_json, required_str};
use crate::Sandbox;
use crate::error;
use crate::money;
use crate::scenario::SepaSpec;
use crate::state::{PARTNER, Sepa, StateError};
use crate::util::rfc3339_ms;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedBody {
    transfer_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetailsBody {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    /// Unpadded string (`"3.8"`).
    amount: String,
    transfer_title: String,
    destination_iban: String,
    receiver_first_name: Option<String>,
    receiver_last_name: Option<String>,
    status: String,
    currency: String,
    /// Number.
    fee: Value,
    created_at: String,
    /// The owning user; left out for partner transfers.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Value>,
    /// Only on FAILED.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// `GET /v1/sepa-transfer/details/{transferId}`; each read counts as a poll.
pub(crate) async fn details(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let read = sb.with_state(|st, now| st.read_sepa(&id, now).map(|t| (st.profile(&t.owner), t)));
    let Some((profile, t)) = read else {
        return error::sepa_not_found();
    };
    let user = (t.owner != PARTNER).then(|| {
        json!({
            "externalUserId": t.owner,
            "email": profile.email.clone().unwrap_or_else(|| format!("{}@example.com", t.owner)),
            "firstName": profile.first_name.clone().unwrap_or_else(|| "John".into()),
            "lastName": profile.last_name.clone().unwrap_or_else(|| "Doe".into()),
            "country": profile.country.clone().unwrap_or_else(|| "PL".into()),
            "pesel": null,
            "birthCountry": null,
            "birthDate": null
        })
    });
    ok_json(&details_body(t, user))
}

fn details_body(t: Sepa, user: Option<Value>) -> DetailsBody {
    let error = t.error_json();
    DetailsBody {
        id: t.id,
        kind: "external",
        amount: money::plain(t.amount),
        transfer_title: t.transfer_title,
        destination_iban: t.destination_iban,
        receiver_first_name: t.receiver_first_name,
        receiver_last_name: t.receiver_last_name,
        status: t.status,
        currency: t.currency,
        fee: money::number(t.fee),
        created_at: rfc3339_ms(t.created_ms),
        user,
        error,
    }
}

/// `POST /v1/partner/sepa-transfer`.
pub(crate) async fn create_partner(State(sb): State<Sandbox>, body: Bytes) -> Response {
    create(&sb, &body, false)
}

/// `POST /v1/sepa-transfer` (adds `sourceExternalUserId`).
pub(crate) async fn create_user(State(sb): State<Sandbox>, body: Bytes) -> Response {
    create(&sb, &body, true)
}

fn create(sb: &Sandbox, body: &[u8], user: bool) -> Response {
    let m = match json_body(body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut problems = Vec::new();
    let owner = if user {
        required_str(&m, "sourceExternalUserId", &mut problems)
    } else {
        Some(PARTNER.to_string())
    };
    let amount = amount_field(m.get("amount"), &mut problems);
    let currency = required_str(&m, "currency", &mut problems).map(|c| c.to_lowercase());
    if let Some(c) = &currency
        && c != "eur"
    {
        problems.push("currency must be one of the following values: eur".into());
    }
    let iban = required_str(&m, "destinationIban", &mut problems);
    let title = required_str(&m, "transferTitle", &mut problems);
    let opt = |k: &str| m.get(k).and_then(Value::as_str).map(String::from);
    let (Some(owner), Some(amount), Some(currency), Some(iban), Some(title), true) =
        (owner, amount, currency, iban, title, problems.is_empty())
    else {
        return error::validation(&problems);
    };
    let created = sb.with_state(|st, now| {
        if !st.is_user(&owner) && owner != PARTNER {
            return Err(StateError::UnknownUser);
        }
        let final_status = st.next_sepa_outcome();
        let cfg = st.sepa_cfg.clone();
        let spec = SepaSpec {
            id: Some(uuid::Uuid::new_v4().to_string()),
            owner: owner.clone(),
            amount,
            fee: None,
            currency,
            destination_iban: Some(iban),
            transfer_title: Some(title),
            receiver_first_name: opt("receiverFirstName"),
            receiver_last_name: opt("receiverLastName"),
            status: None,
            final_status: Some(final_status),
            error: Some(cfg.error),
            after_polls: cfg.after_polls,
            after_seconds: cfg.after_seconds,
            created_at: None,
            hidden: false,
        };
        st.add_sepa(spec, now)
    });
    match created {
        Ok(transfer_id) => ok_json(&CreatedBody { transfer_id }),
        Err(StateError::UnknownUser) => error::invalid_user(),
        Err(StateError::Invalid(msg)) => error::validation(&[msg]),
        Err(_) => error::p500(),
    }
}
