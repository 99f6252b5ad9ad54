//! SEPA transfers: creation (with their SEPA_TRANSFER row), settlement when due, details
//! reads.
//!
//! Webhooks: a transfer settling `SUCCESSFUL` or `FAILED` emits the SEPA Transfer webhook
//! (route `sepa-transfer`, `webhooks.md` §4.2): the reference's SUCCESSFUL example shape, plus
//! on FAILED the `error` object the details endpoint shows. Transfers created already final
//! emit nothing.

use std::collections::VecDeque;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;

use super::{Ms, PARTNER, State, StateError, Tx, due};
use crate::money;
use crate::scenario::{ErrorSpec, SepaSpec};
use crate::util::{rfc3339_ms, uuid_from_key};

/// Route of the SEPA Transfer webhook.
const SEPA_ROUTE: &str = "sepa-transfer";

/// SEPA Transfer webhook body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SepaHook<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    /// Unpadded string (`"3.8"`).
    amount: String,
    transfer_title: &'a str,
    destination_iban: &'a str,
    receiver_first_name: Option<&'a str>,
    receiver_last_name: Option<&'a str>,
    status: &'a str,
    currency: &'a str,
    /// Number.
    fee: Value,
    created_at: String,
    /// Only on FAILED.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// A SEPA transfer.
#[derive(Debug, Clone)]
pub(crate) struct Sepa {
    pub id: String,
    pub owner: String,
    pub amount: Decimal,
    pub fee: Decimal,
    pub currency: String,
    pub destination_iban: String,
    pub transfer_title: String,
    pub receiver_first_name: Option<String>,
    pub receiver_last_name: Option<String>,
    pub status: String,
    final_status: String,
    pub error: ErrorSpec,
    after_polls: Option<u32>,
    after_seconds: Option<f64>,
    pub created_ms: Ms,
    reads: u64,
    row_id: String,
}

impl Sepa {
    fn is_final(&self) -> bool {
        self.status == self.final_status
    }

    /// The `error` object of a FAILED transfer (`errorCode`, and `errorName` and
    /// `errorMessage` when configured), as details and the webhook show it; `None` otherwise.
    pub fn error_json(&self) -> Option<Value> {
        (self.status == "FAILED").then(|| {
            let mut m = serde_json::Map::new();
            m.insert("errorCode".into(), Value::String(self.error.code.clone()));
            if let Some(n) = &self.error.name {
                m.insert("errorName".into(), Value::String(n.clone()));
            }
            if let Some(msg) = &self.error.message {
                m.insert("errorMessage".into(), Value::String(msg.clone()));
            }
            Value::Object(m)
        })
    }
}

impl State {
    pub fn sepa_fee(&self, amount: Decimal) -> Decimal {
        money::round(amount * self.sepa_cfg.fee_rate, 2).max(self.sepa_cfg.min_fee)
    }

    /// Adds a SEPA transfer (scenario, control or API). Its SEPA_TRANSFER row is added to the
    /// owner's history at once, PENDING until the transfer is final.
    pub fn add_sepa(&mut self, spec: SepaSpec, now: Ms) -> Result<String, StateError> {
        if !self.exists(&spec.owner) {
            return Err(StateError::UnknownUser);
        }
        let n = self.sepa.len();
        let id = spec
            .id
            .clone()
            .unwrap_or_else(|| uuid_from_key(&format!("sepa/{n}/{}", spec.owner)));
        if self.sepa.contains_key(&id) {
            return Err(StateError::Invalid(format!(
                "transfer id {id:?} already exists"
            )));
        }
        let created = spec.created_at.map(|t| t.timestamp_millis()).unwrap_or(now);
        let fee = spec.fee.unwrap_or_else(|| self.sepa_fee(spec.amount));
        let final_status = spec
            .final_status
            .clone()
            .unwrap_or_else(|| "SUCCESSFUL".into());
        let status = spec.status.clone().unwrap_or_else(|| "PROCESSING".into());
        let is_user = spec.owner != PARTNER;
        let profile = self.owner(&spec.owner).map(|o| o.profile.clone());
        let (first, last) = match (&spec.receiver_first_name, &spec.receiver_last_name, is_user) {
            (None, None, true) => {
                // Closed loop: P100 fills the receiver from the user's KYC profile.
                let p = profile.unwrap_or_default();
                (
                    Some(p.first_name.unwrap_or_else(|| "John".into())),
                    Some(p.last_name.unwrap_or_else(|| "Doe".into())),
                )
            }
            (f, l, _) => (f.clone(), l.clone()),
        };
        let currency = spec.currency.trim().to_lowercase();
        let row_id = uuid_from_key(&format!("{id}/row"));
        let terminal = matches!(status.as_str(), "SUCCESSFUL" | "FAILED");
        let sepa = Sepa {
            id: id.clone(),
            owner: spec.owner.clone(),
            amount: spec.amount,
            fee,
            currency: currency.clone(),
            destination_iban: spec
                .destination_iban
                .clone()
                .unwrap_or_else(|| "PL49109024028743516259813188".into()),
            transfer_title: spec
                .transfer_title
                .clone()
                .unwrap_or_else(|| "Partner SEPA Transfer".into()),
            receiver_first_name: first,
            receiver_last_name: last,
            // A transfer created already terminal ends where it starts.
            final_status: if terminal {
                status.clone()
            } else {
                final_status
            },
            status: status.clone(),
            error: spec
                .error
                .clone()
                .unwrap_or_else(|| self.sepa_cfg.error.clone()),
            after_polls: spec.after_polls.or(if spec.after_seconds.is_some() {
                None
            } else {
                Some(1)
            }),
            after_seconds: spec.after_seconds,
            created_ms: created,
            reads: 0,
            row_id: row_id.clone(),
        };
        let row_status = match status.as_str() {
            "SUCCESSFUL" => "COMPLETED",
            "FAILED" => "FAILED",
            _ => "PENDING",
        };
        let row = Tx {
            id: row_id,
            kind: "SEPA_TRANSFER".into(),
            status: row_status.into(),
            currency,
            amount: -spec.amount,
            fee,
            created_ms: created,
            updated_ms: created.max(if terminal { created } else { now }),
            reference: Some(id.clone()),
            exchange_id: None,
            hidden: spec.hidden,
            steps: VecDeque::new(),
            changed_ms: now,
            reads_at_change: 0,
        };
        let owner = self
            .owner_materialized(&spec.owner, now)
            .ok_or(StateError::UnknownUser)?;
        owner.push(row).map_err(StateError::Invalid)?;
        let final_now = sepa.is_final();
        self.sepa.insert(id.clone(), sepa);
        if !final_now {
            self.active_sepa.push(id.clone());
        }
        Ok(id)
    }

    /// Moves a transfer to its final status when due; true once it is final.
    pub(super) fn advance_sepa(&mut self, id: &str, now: Ms) -> bool {
        let Some(t) = self.sepa.get_mut(id) else {
            return true;
        };
        if t.is_final() {
            return true;
        }
        // P100 settles when the transfer is due, not when someone next asks.
        let Some(at) = due(t.after_polls, t.after_seconds, t.reads, t.created_ms, now) else {
            return false;
        };
        t.status = t.final_status.clone();
        let row_status = match t.status.as_str() {
            "SUCCESSFUL" => Some("COMPLETED"),
            "FAILED" => Some("FAILED"),
            _ => None,
        };
        if row_status.is_some() {
            self.outbox.emit(SEPA_ROUTE, &t.id, |_| SepaHook {
                id: &t.id,
                kind: "external",
                amount: money::plain(t.amount),
                transfer_title: &t.transfer_title,
                destination_iban: &t.destination_iban,
                receiver_first_name: t.receiver_first_name.as_deref(),
                receiver_last_name: t.receiver_last_name.as_deref(),
                status: &t.status,
                currency: &t.currency,
                fee: money::number(t.fee),
                created_at: rfc3339_ms(t.created_ms),
                error: t.error_json(),
            });
        }
        let (owner_id, row_id) = (t.owner.clone(), t.row_id.clone());
        if let Some(status) = row_status
            && let Some(o) = self.owner_mut(&owner_id)
            && let Some(&i) = o.index.get(&row_id)
        {
            o.set_status(i, status, at);
        }
        true
    }

    /// One detail read of a transfer.
    pub fn read_sepa(&mut self, id: &str, now: Ms) -> Option<Sepa> {
        self.advance_sepa(id, now);
        let t = self.sepa.get_mut(id)?;
        let out = t.clone();
        t.reads += 1;
        Some(out)
    }

    /// Final status for the next API-created transfer.
    pub fn next_sepa_outcome(&mut self) -> String {
        if self.sepa_cfg.outcomes.is_empty() {
            self.sepa_cfg.final_status.clone()
        } else {
            self.sepa_cfg.outcomes.remove(0)
        }
    }
}
