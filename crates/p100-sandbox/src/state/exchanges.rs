//! Exchange rate locks and exchanges: lock, finalize, settle when due, details reads.
//!
//! Webhooks: an exchange leaving `PROCESSING` for its outcome (terminal) emits an Exchange
//! webhook (route `exchange`); P100 documents no payload, see [`ExchangeHook`].

use std::collections::{BTreeMap, VecDeque};

use rust_decimal::Decimal;
use serde::Serialize;

use super::{Ms, State, StateError, Tx, due};
use crate::money;
use crate::util::{rfc3339_ms, uuid_from_key};

/// Route of the Exchange webhook.
const EXCHANGE_ROUTE: &str = "exchange";

/// Exchange webhook body. P100 documents no payload: this is the sandbox's guess, the details
/// endpoint's fields plus `lockId`, amounts as unpadded strings and the fee as a number (as
/// in the SEPA webhook).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeHook<'a> {
    exchange_id: &'a str,
    lock_id: &'a str,
    status: &'a str,
    currency_from: &'a str,
    currency_to: &'a str,
    amount_from: String,
    amount_to: String,
    fee: serde_json::Value,
    created_at: &'a str,
}

/// An exchange rate lock.
#[derive(Debug, Clone)]
pub(crate) struct Lock {
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: Decimal,
    pub rate: Decimal,
    pub expires_ms: Ms,
}

/// An exchange created by `POST /v1/partner/exchange`.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeInfo {
    /// `exchangeId`.
    pub exchange_id: String,
    /// The lock it was created from.
    pub lock_id: String,
    /// `PROCESSING`, then `COMPLETED`, `FAILED` or the configured outcome.
    pub status: String,
    /// Source currency.
    pub currency_from: String,
    /// Target currency.
    pub currency_to: String,
    /// Amount debited (plus fee).
    pub amount_from: Decimal,
    /// Amount credited.
    pub amount_to: Decimal,
    /// Fee in the source currency.
    pub fee: Decimal,
    /// Locked rate.
    pub rate: Decimal,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    pub info: ExchangeInfo,
    pub created_ms: Ms,
    outcome: String,
    after_polls: Option<u32>,
    after_seconds: Option<f64>,
    reads: u64,
}

impl State {
    pub fn rate(&self, from: &str, to: &str) -> Decimal {
        if let Some(r) = self.exchange_cfg.rates.get(&format!("{from}/{to}")) {
            return *r;
        }
        let to_rate = money::eur_rate(to);
        if to_rate.is_zero() {
            return Decimal::ONE;
        }
        money::round(money::eur_rate(from) / to_rate, 8)
    }

    pub fn create_lock(&mut self, from: &str, to: &str, amount: Decimal, now: Ms) -> Lock {
        let ttl_ms = (self.exchange_cfg.lock_ttl_seconds.max(0.0) * 1000.0).round() as i64;
        let lock = Lock {
            id: uuid::Uuid::new_v4().to_string(),
            from: from.to_string(),
            to: to.to_string(),
            amount,
            rate: self.rate(from, to),
            expires_ms: now.saturating_add(ttl_ms),
        };
        self.locks.insert(lock.id.clone(), lock.clone());
        lock
    }

    /// `POST /v1/partner/exchange`. A second call with the same lock is *not* rejected: it
    /// creates a second exchange, so tests catch clients that submit twice.
    pub fn finalize_exchange(
        &mut self,
        lock_id: &str,
        from: &str,
        to: &str,
        amount: Decimal,
        now: Ms,
    ) -> Result<String, StateError> {
        let lock = self
            .locks
            .get(lock_id)
            .cloned()
            .ok_or(StateError::LockNotFound)?;
        if now > lock.expires_ms {
            return Err(StateError::LockExpired);
        }
        let mut problems = Vec::new();
        if lock.from != from {
            problems.push(format!("currencyFrom must be {} (as locked)", lock.from));
        }
        if lock.to != to {
            problems.push(format!("currencyTo must be {} (as locked)", lock.to));
        }
        if lock.amount != amount {
            problems.push(format!(
                "amount must be {} (as locked)",
                money::plain(lock.amount)
            ));
        }
        if !problems.is_empty() {
            return Err(StateError::Invalid(problems.join(". ")));
        }
        let cfg = &mut self.exchange_cfg;
        let outcome = if cfg.outcomes.is_empty() {
            cfg.outcome.clone()
        } else {
            cfg.outcomes.remove(0)
        };
        let id = uuid::Uuid::new_v4().to_string();
        let fee = money::round(amount * cfg.fee_rate, money::precision(from));
        let amount_to = money::round(amount * lock.rate, money::precision(to));
        let ex = Exchange {
            info: ExchangeInfo {
                exchange_id: id.clone(),
                lock_id: lock_id.to_string(),
                status: "PROCESSING".into(),
                currency_from: from.to_string(),
                currency_to: to.to_string(),
                amount_from: amount,
                amount_to,
                fee,
                rate: lock.rate,
                created_at: rfc3339_ms(now),
            },
            created_ms: now,
            outcome,
            after_polls: cfg.after_polls,
            after_seconds: cfg.after_seconds,
            reads: 0,
        };
        self.exchanges.insert(id.clone(), ex);
        self.exchange_order.push(id.clone());
        self.active_exchanges.push(id.clone());
        Ok(id)
    }

    /// Moves an exchange to its outcome when due; true once it is final.
    pub(super) fn advance_exchange(&mut self, id: &str, now: Ms) -> bool {
        let Some(ex) = self.exchanges.get_mut(id) else {
            return true;
        };
        if ex.info.status != "PROCESSING" {
            return true;
        }
        // It executes when due, not when someone next asks.
        let Some(at) = due(
            ex.after_polls,
            ex.after_seconds,
            ex.reads,
            ex.created_ms,
            now,
        ) else {
            return false;
        };
        ex.info.status = ex.outcome.clone();
        let i = &ex.info;
        self.outbox
            .emit(EXCHANGE_ROUTE, &i.exchange_id, |_| ExchangeHook {
                exchange_id: &i.exchange_id,
                lock_id: &i.lock_id,
                status: &i.status,
                currency_from: &i.currency_from,
                currency_to: &i.currency_to,
                amount_from: money::plain(i.amount_from),
                amount_to: money::plain(i.amount_to),
                fee: money::number(i.fee),
                created_at: &i.created_at,
            });
        let ex = ex.clone();
        if ex.info.status == "COMPLETED" {
            let i = &ex.info;
            let leg = |suffix: &str, currency: &str, amount: Decimal, fee: Decimal| Tx {
                id: uuid_from_key(&format!("{}/{suffix}", i.exchange_id)),
                kind: "EXCHANGE".into(),
                status: "COMPLETED".into(),
                currency: currency.to_string(),
                amount,
                fee,
                created_ms: ex.created_ms,
                updated_ms: at,
                reference: Some(i.lock_id.clone()),
                exchange_id: Some(i.exchange_id.clone()),
                hidden: false,
                steps: VecDeque::new(),
                changed_ms: at,
                reads_at_change: 0,
            };
            let from_leg = leg("from", &i.currency_from, -i.amount_from, i.fee);
            let to_leg = leg("to", &i.currency_to, i.amount_to, Decimal::ZERO);
            // Ids derive from a fresh UUID, so they cannot collide.
            let _ = self.partner.push(from_leg);
            let _ = self.partner.push(to_leg);
        }
        true
    }

    /// One detail read of an exchange.
    pub fn read_exchange(&mut self, id: &str, now: Ms) -> Option<ExchangeInfo> {
        self.advance_exchange(id, now);
        let ex = self.exchanges.get_mut(id)?;
        let info = ex.info.clone();
        ex.reads += 1;
        Some(info)
    }

    pub fn exchanges(&self) -> Vec<ExchangeInfo> {
        self.exchange_order
            .iter()
            .filter_map(|id| self.exchanges.get(id))
            .map(|e| e.info.clone())
            .collect()
    }

    pub fn exchanges_per_lock(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for e in self.exchanges.values() {
            *m.entry(e.info.lock_id.clone()).or_default() += 1;
        }
        m
    }
}
