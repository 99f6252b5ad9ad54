//! Transaction history (assumed contract, SPEC §8): `GET /v1/partner/transactions` and
//! `GET /v1/user/transactions/{externalUserId}` with `from`, `to`, `page`, `size`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::ok_json;
use crate::Sandbox;
use crate::error;
use crate::money;
use crate::state::{HistoryQuery, PARTNER, Tx};
use crate::util::{ms_ceil, parse_rfc3339, rfc3339_ms};

/// Default and largest page size.
const DEFAULT_SIZE: u64 = 20;
const MAX_SIZE: u64 = 100;

#[derive(Serialize)]
struct PageBody {
    transactions: Vec<TxJson>,
    page: u64,
    size: u64,
    total: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TxJson {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    currency: String,
    /// Signed; a number or a (padded or unpadded) string, chosen by id.
    amount: Value,
    fee: Value,
    created_at: String,
    updated_at: String,
    reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange_id: Option<String>,
}

impl From<Tx> for TxJson {
    fn from(t: Tx) -> Self {
        let exchange_id = if t.kind == "EXCHANGE" {
            Some(t.exchange_id.clone().unwrap_or_default())
        } else {
            t.exchange_id.clone()
        };
        TxJson {
            amount: money::mixed(t.amount, &t.currency, &t.id, "amount"),
            fee: money::mixed(t.fee, &t.currency, &t.id, "fee"),
            created_at: rfc3339_ms(t.created_ms),
            updated_at: rfc3339_ms(t.updated_ms),
            id: t.id,
            kind: t.kind,
            status: t.status,
            currency: t.currency,
            reference: t.reference,
            exchange_id,
        }
    }
}

type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;

pub(crate) async fn partner(State(sb): State<Sandbox>, q: RawQuery) -> Response {
    history(&sb, PARTNER, q)
}

pub(crate) async fn user(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    q: RawQuery,
) -> Response {
    if id == PARTNER {
        return error::invalid_user();
    }
    history(&sb, &id, q)
}

fn history(sb: &Sandbox, owner: &str, q: RawQuery) -> Response {
    let query = match parse_query(q) {
        Ok(query) => query,
        Err(problems) => return error::validation(&problems),
    };
    sb.with_stats(|s| {
        s.record_history(crate::stats::HistoryRequest {
            owner: owner.to_owned(),
            from_ms: query.from_ms,
            to_ms: query.to_ms,
            page: query.page,
        })
    });
    let page = sb.with_state(|st, now| st.history(owner, query, now));
    let Some(page) = page else {
        return error::invalid_user();
    };
    ok_json(&PageBody {
        transactions: page.rows.into_iter().map(TxJson::from).collect(),
        page: query.page,
        size: query.size,
        total: page.total,
    })
}

/// Validates the query like P100's class-validator pipes: every problem in one P403 message.
fn parse_query(q: RawQuery) -> Result<HistoryQuery, Vec<String>> {
    let pairs = match q {
        Ok(Query(pairs)) => pairs,
        Err(e) => return Err(vec![format!("invalid query string: {e}")]),
    };
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
    };
    let mut problems = Vec::new();
    let mut time = |name: &str, lower: bool| -> Option<i64> {
        let raw = get(name).filter(|v| !v.is_empty())?;
        match parse_rfc3339(raw) {
            Some(t) if lower => Some(ms_ceil(t)),
            Some(t) => Some(t.timestamp_millis()),
            None => {
                problems.push(format!("{name} must be a valid ISO 8601 date string"));
                None
            }
        }
    };
    let from_ms = time("from", true);
    let to_ms = time("to", false);
    let mut int = |name: &str, default: u64, max: Option<u64>| -> u64 {
        let Some(raw) = get(name).filter(|v| !v.is_empty()) else {
            return default;
        };
        match raw.parse::<u64>() {
            Ok(0) => {
                problems.push(format!("{name} must not be less than 1"));
                default
            }
            Ok(n) if max.is_some_and(|m| n > m) => {
                problems.push(format!(
                    "{name} must not be greater than {}",
                    max.unwrap_or(n)
                ));
                default
            }
            Ok(n) => n,
            Err(_) => {
                problems.push(format!("{name} must be an integer number"));
                default
            }
        }
    };
    let page = int("page", 1, None);
    let size = int("size", DEFAULT_SIZE, Some(MAX_SIZE));
    if problems.is_empty() {
        Ok(HistoryQuery {
            from_ms,
            to_ms,
            page,
            size,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> RawQuery {
        Ok(Query(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        ))
    }

    #[test]
    fn bad_paging_is_p403_with_every_problem() {
        let err =
            parse_query(q(&[("size", "101"), ("page", "0"), ("from", "yesterday")])).unwrap_err();
        assert_eq!(
            err,
            [
                "from must be a valid ISO 8601 date string",
                "page must not be less than 1",
                "size must not be greater than 100"
            ]
        );
        assert!(parse_query(q(&[("size", "x")])).is_err());
        let ok = parse_query(q(&[])).unwrap();
        assert_eq!((ok.page, ok.size), (1, 20));
    }
}
