//! History rows, history pages (the merge of stored and generated rows), balances and drift.
//!
//! Webhooks: a row step that turns a user's `DEPOSIT` row `COMPLETED` or `FAILED` emits the
//! Crypto Deposit webhook (route `crypto-deposit`, `webhooks.md` §4.6) with status
//! `SUCCESSFUL` or `UNSUCCESSFUL`. P100 documents two shapes, so the sandbox sends both: every
//! other delivery comes in the FAQ envelope (`{"event_type","data"}`), and `amount` is a JSON
//! number for two deliveries, then a string for two (flat/number, envelope/number,
//! flat/string, envelope/string, …).

use std::collections::VecDeque;
use std::ops::Bound;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;

use super::{Ms, Owner, PARTNER, State, StateError, due};
use crate::money;
use crate::scenario::{TxSpec, TxStep};
use crate::util::{fnv64, mix, rfc3339_ms, uuid_from_key};

/// Route of the Crypto Deposit webhook.
const DEPOSIT_ROUTE: &str = "crypto-deposit";

/// Crypto Deposit webhook body (the reference's flat example).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DepositHook<'a> {
    external_user_id: &'a str,
    crypto_deposit_id: &'a str,
    /// A number or a string, alternating.
    amount: Value,
    currency: &'a str,
    status: &'static str,
    transaction_hash: String,
    created_at: String,
}

/// The same body in the FAQ's envelope, or flat.
#[derive(Serialize)]
#[serde(untagged)]
enum DepositBody<'a> {
    Flat(DepositHook<'a>),
    Enveloped {
        event_type: &'static str,
        data: DepositHook<'a>,
    },
}

/// A stable fake on-chain hash for a deposit row: `0x` and 64 hex digits.
fn transaction_hash(row_id: &str) -> String {
    let h = fnv64(row_id.as_bytes());
    format!(
        "0x{:016x}{:016x}{:016x}{:016x}",
        mix(h, 1, 0),
        mix(h, 2, 0),
        mix(h, 3, 0),
        mix(h, 4, 0)
    )
}

/// One history row, stored or generated.
#[derive(Debug, Clone)]
pub(crate) struct Tx {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub currency: String,
    pub amount: Decimal,
    pub fee: Decimal,
    pub created_ms: Ms,
    pub updated_ms: Ms,
    pub reference: Option<String>,
    pub exchange_id: Option<String>,
    /// Counts in the balance, never shown in history.
    pub hidden: bool,
    pub(super) steps: VecDeque<TxStep>,
    /// When the last change counted from (for timed steps).
    pub(super) changed_ms: Ms,
    /// The owner's history-read counter at the last change (for poll steps).
    pub(super) reads_at_change: u64,
}

impl Tx {
    /// A generated row (no steps).
    #[allow(clippy::too_many_arguments)]
    pub fn generated(
        id: String,
        kind: &str,
        status: &str,
        currency: String,
        amount: Decimal,
        fee: Decimal,
        created_ms: Ms,
        updated_ms: Ms,
        reference: Option<String>,
    ) -> Tx {
        Tx {
            id,
            kind: kind.into(),
            status: status.into(),
            currency,
            amount,
            fee,
            created_ms,
            updated_ms,
            reference,
            exchange_id: None,
            hidden: false,
            steps: VecDeque::new(),
            changed_ms: updated_ms,
            reads_at_change: 0,
        }
    }

    fn counts(&self) -> bool {
        self.status == "COMPLETED"
    }
}

impl Owner {
    pub(super) fn push(&mut self, tx: Tx) -> Result<usize, String> {
        if self.index.contains_key(&tx.id) {
            return Err(format!(
                "transaction id {:?} already exists for {}",
                tx.id, self.id
            ));
        }
        let i = self.txs.len();
        self.index.insert(tx.id.clone(), i);
        if !tx.hidden {
            self.order.insert((tx.updated_ms, tx.id.clone()), i);
        }
        if !tx.steps.is_empty() {
            self.progressing.insert(i);
        }
        self.txs.push(tx);
        Ok(i)
    }

    pub(super) fn set_status(&mut self, i: usize, status: &str, now: Ms) {
        let Some(tx) = self.txs.get_mut(i) else {
            return;
        };
        if !tx.hidden {
            self.order.remove(&(tx.updated_ms, tx.id.clone()));
        }
        tx.status = status.to_string();
        tx.updated_ms = now.max(tx.updated_ms);
        if !tx.hidden {
            self.order.insert((tx.updated_ms, tx.id.clone()), i);
        }
    }

    /// Applies every due row step; returns `(row, new status)` for each step that changed a
    /// row's status.
    pub(super) fn advance_txs(&mut self, now: Ms) -> Vec<(usize, String)> {
        let mut changes = Vec::new();
        let active: Vec<usize> = self.progressing.iter().copied().collect();
        for i in active {
            while let Some(tx) = self.txs.get(i) {
                let Some(step) = tx.steps.front() else {
                    self.progressing.remove(&i);
                    break;
                };
                let polls = self.history_reads.saturating_sub(tx.reads_at_change);
                let Some(at) = due(
                    step.after_polls,
                    step.after_seconds,
                    polls,
                    tx.changed_ms,
                    now,
                ) else {
                    break;
                };
                let status = step.status.clone();
                let changed = tx.status != status;
                self.set_status(i, &status, now);
                let reads = self.history_reads;
                if let Some(tx) = self.txs.get_mut(i) {
                    tx.steps.pop_front();
                    tx.changed_ms = at;
                    tx.reads_at_change = reads;
                }
                if changed {
                    changes.push((i, status));
                }
            }
        }
        changes
    }

    fn stored_sum(&self, currency: &str) -> Decimal {
        let txs: Decimal = self
            .txs
            .iter()
            .filter(|t| t.currency == currency && t.counts())
            .map(|t| t.amount - t.fee)
            .sum();
        txs + self.drift.get(currency).copied().unwrap_or_default()
    }
}

/// A page of history.
#[derive(Debug)]
pub(crate) struct HistoryPage {
    pub rows: Vec<Tx>,
    pub total: u64,
}

/// Filter and page of a history request (already validated).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HistoryQuery {
    pub from_ms: Option<Ms>,
    pub to_ms: Option<Ms>,
    pub page: u64,
    pub size: u64,
}

impl State {
    /// Applies the owner's due row steps and emits their webhooks; true while steps remain.
    pub(super) fn advance_owner_txs(&mut self, id: &str, now: Ms) -> bool {
        let Some((owner, outbox)) = self.owner_and_outbox(id) else {
            return false;
        };
        for (i, status) in owner.advance_txs(now) {
            let hook_status = match status.as_str() {
                "COMPLETED" => "SUCCESSFUL",
                "FAILED" => "UNSUCCESSFUL",
                _ => continue,
            };
            let Some(tx) = owner.txs.get(i) else {
                continue;
            };
            if id == PARTNER || tx.kind != "DEPOSIT" {
                continue;
            }
            outbox.emit(DEPOSIT_ROUTE, &tx.id, |n| {
                let data = DepositHook {
                    external_user_id: id,
                    crypto_deposit_id: &tx.id,
                    amount: if n % 4 < 2 {
                        money::number(tx.amount)
                    } else {
                        Value::String(money::plain(tx.amount))
                    },
                    currency: &tx.currency,
                    status: hook_status,
                    transaction_hash: transaction_hash(&tx.id),
                    created_at: rfc3339_ms(tx.created_ms),
                };
                if n % 2 == 0 {
                    DepositBody::Flat(data)
                } else {
                    DepositBody::Enveloped {
                        event_type: "crypto_deposit.status_changed",
                        data,
                    }
                }
            });
        }
        !owner.progressing.is_empty()
    }

    /// Adds rows to an owner. Rows without `created_at` are spaced one second apart ending at
    /// `default_end` (in file order), so a scenario's order is its time order.
    pub fn add_transactions(
        &mut self,
        owner_id: &str,
        specs: Vec<TxSpec>,
        default_end: Ms,
        now: Ms,
    ) -> Result<(), String> {
        let n = specs.len() as i64;
        let owner = self
            .owner_materialized(owner_id, now)
            .ok_or_else(|| format!("unknown owner {owner_id:?}"))?;
        let mut any_steps = false;
        for (k, spec) in specs.into_iter().enumerate() {
            let created = spec
                .created_at
                .map(|t| t.timestamp_millis())
                .unwrap_or(default_end - (n - 1 - k as i64) * 1000);
            let updated = spec
                .updated_at
                .map(|t| t.timestamp_millis())
                .unwrap_or(created);
            let id = spec
                .id
                .unwrap_or_else(|| uuid_from_key(&format!("{owner_id}/tx/{}", owner.txs.len())));
            let currency = spec.currency.trim().to_lowercase();
            if currency.is_empty() {
                return Err(format!("transaction {id:?}: currency is empty"));
            }
            let tx = Tx {
                id,
                kind: spec.kind,
                status: spec.status,
                currency,
                amount: spec.amount,
                fee: spec.fee,
                created_ms: created,
                updated_ms: updated,
                reference: spec.reference,
                exchange_id: spec.exchange_id,
                hidden: spec.hidden,
                steps: spec.steps.into(),
                changed_ms: now,
                reads_at_change: owner.history_reads,
            };
            any_steps |= !tx.steps.is_empty();
            owner.push(tx)?;
        }
        if any_steps {
            self.progressing_owners.insert(owner_id.to_string());
        }
        Ok(())
    }

    pub fn add_drift(
        &mut self,
        owner_id: &str,
        currency: &str,
        delta: Decimal,
        now: Ms,
    ) -> Result<(), StateError> {
        let currency = currency.trim().to_lowercase();
        if currency.is_empty() {
            return Err(StateError::Invalid("currency is empty".into()));
        }
        let owner = self
            .owner_materialized(owner_id, now)
            .ok_or(StateError::UnknownUser)?;
        *owner.drift.entry(currency).or_default() += delta;
        Ok(())
    }

    /// A new version of a stored row with the status and `updatedAt` given: P100 committing a
    /// change whose `updatedAt` lies behind rows it has served since. A version never goes back
    /// behind the row's current one.
    pub fn commit_version(
        &mut self,
        owner_id: &str,
        tx_id: &str,
        status: &str,
        updated_ms: Ms,
    ) -> Result<(), StateError> {
        let owner = self.owner_mut(owner_id).ok_or(StateError::UnknownUser)?;
        let i = *owner
            .index
            .get(tx_id)
            .ok_or_else(|| StateError::Invalid(format!("no transaction {tx_id:?}")))?;
        let tx = &owner.txs[i];
        if updated_ms < tx.updated_ms {
            return Err(StateError::Invalid(format!(
                "transaction {tx_id:?} is already at a later updatedAt"
            )));
        }
        if !tx.hidden {
            owner.order.remove(&(tx.updated_ms, tx.id.clone()));
        }
        let tx = &mut owner.txs[i];
        tx.status = status.to_owned();
        tx.updated_ms = updated_ms;
        if !tx.hidden {
            owner.order.insert((updated_ms, tx.id.clone()), i);
        }
        Ok(())
    }

    /// Every balance of an owner, in display order, or `None` for an unknown owner.
    pub fn balances(&self, id: &str) -> Option<Vec<(String, Decimal)>> {
        if !self.exists(id) {
            return None;
        }
        let owner = self.owner(id);
        let generated = self.gen_owner(id);
        let mut currencies: Vec<String> = match owner {
            Some(o) => o.currencies.clone(),
            None => Vec::new(),
        };
        let mut add = |c: &str| {
            if !currencies.iter().any(|x| x == c) {
                currencies.push(c.to_string());
            }
        };
        if let (Some(g), Some(_)) = (&self.generated, generated) {
            g.currencies().iter().for_each(|c| add(c));
        }
        if let Some(o) = owner {
            o.txs.iter().for_each(|t| add(&t.currency));
            o.drift.keys().for_each(|c| add(c));
        }
        Some(
            currencies
                .into_iter()
                .map(|c| {
                    let stored = owner.map(|o| o.stored_sum(&c)).unwrap_or_default();
                    let generated = match (&self.generated, generated) {
                        (Some(g), Some(go)) => g.balance(go, &c),
                        _ => Decimal::ZERO,
                    };
                    let total = stored + generated;
                    (c, total)
                })
                .collect(),
        )
    }

    /// One balance (zero for a currency the owner has never seen).
    pub fn balance(&self, id: &str, currency: &str) -> Option<Decimal> {
        let currency = currency.to_lowercase();
        self.balances(id).map(|b| {
            b.into_iter()
                .find(|(c, _)| *c == currency)
                .map(|(_, d)| d)
                .unwrap_or_default()
        })
    }

    pub fn fiat_status(&self, id: &str) -> String {
        self.owner(id)
            .map(|o| o.fiat_status.clone())
            .unwrap_or_else(|| "ACTIVE".into())
    }

    /// One history request: applies due row steps, computes the page, counts the read.
    pub fn history(&mut self, id: &str, q: HistoryQuery, now: Ms) -> Option<HistoryPage> {
        if !self.exists(id) {
            return None;
        }
        self.advance_owner_txs(id, now);
        let page = self.compute_page(id, q);
        if let Some(o) = self.owner_mut(id) {
            o.history_reads += 1;
        }
        Some(page)
    }

    fn compute_page(&self, id: &str, q: HistoryQuery) -> HistoryPage {
        let from = q.from_ms.unwrap_or(Ms::MIN);
        let to = q.to_ms.unwrap_or(Ms::MAX);
        if from > to {
            return HistoryPage {
                rows: Vec::new(),
                total: 0,
            };
        }
        // Stored rows in the window, in (updatedAt, id) order.
        let stored: Vec<(&(Ms, String), &usize)> = match self.owner(id) {
            Some(o) => o
                .order
                .range((Bound::Included((from, String::new())), Bound::Unbounded))
                .take_while(|((ms, _), _)| *ms <= to)
                .collect(),
            None => Vec::new(),
        };
        let owner = self.owner(id);
        let stored_tx = |j: usize| -> Option<&Tx> {
            let (_, i) = stored.get(j)?;
            owner.and_then(|o| o.txs.get(**i))
        };
        // Generated rows in the window: an index range [lo, hi).
        let generated = match (&self.generated, self.gen_owner(id)) {
            (Some(g), Some(go)) => Some((g.as_ref(), go)),
            _ => None,
        };
        let (lo, hi) = match generated {
            Some((g, go)) => {
                let lo = g.first_at_or_after(go, from);
                let hi = if to == Ms::MAX {
                    g.len(go)
                } else {
                    g.first_at_or_after(go, to.saturating_add(1))
                };
                (lo, hi.max(lo))
            }
            None => (0, 0),
        };
        let s_len = stored.len() as u64;
        let total = (hi - lo) + s_len;
        let offset = q.page.saturating_sub(1).saturating_mul(q.size);
        if offset >= total {
            return HistoryPage {
                rows: Vec::new(),
                total,
            };
        }
        // Is generated row k before the stored key?
        let gen_before = |k: u64, key: &(Ms, String)| -> bool {
            let Some((g, go)) = generated else {
                return false;
            };
            let ms = g.updated_ms(go, k);
            ms < key.0 || (ms == key.0 && g.id(go, k) < key.1)
        };
        // Number of window generated rows ordered before a stored key (binary search).
        let count_gen_before = |key: &(Ms, String)| -> u64 {
            let (mut a, mut b) = (lo, hi);
            while a < b {
                let mid = a + (b - a) / 2;
                if gen_before(mid, key) {
                    a = mid + 1;
                } else {
                    b = mid;
                }
            }
            a - lo
        };
        // Stored row j sits at merged rank j + count_gen_before(j), increasing in j; find how
        // many stored rows come before the page start.
        let (mut a, mut b) = (0usize, stored.len());
        while a < b {
            let mid = a + (b - a) / 2;
            let rank = mid as u64 + count_gen_before(stored[mid].0);
            if rank < offset {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        let mut j = a;
        let mut k = lo + (offset - j as u64);
        let mut rows = Vec::with_capacity(q.size.min(total - offset) as usize);
        while (rows.len() as u64) < q.size {
            let take_gen = match (k < hi, j < stored.len()) {
                (false, false) => break,
                (true, false) => true,
                (false, true) => false,
                (true, true) => gen_before(k, stored[j].0),
            };
            if take_gen {
                if let Some((g, go)) = generated {
                    rows.push(g.row(go, k));
                }
                k += 1;
            } else {
                if let Some(t) = stored_tx(j) {
                    rows.push(t.clone());
                }
                j += 1;
            }
        }
        HistoryPage { rows, total }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::generator::{Generated, GeneratorConfig};
    use crate::scenario::UserSpec;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn tx(id: &str, status: &str, amount: &str, at_ms: Ms) -> TxSpec {
        TxSpec {
            id: Some(id.into()),
            status: status.into(),
            amount: d(amount),
            created_at: chrono::DateTime::from_timestamp_millis(at_ms),
            ..TxSpec::default()
        }
    }

    fn all_pages(s: &mut State, id: &str, size: u64) -> Vec<Tx> {
        let mut out = Vec::new();
        for page in 1.. {
            let q = HistoryQuery {
                from_ms: None,
                to_ms: None,
                page,
                size,
            };
            let p = s.history(id, q, 0).unwrap();
            if p.rows.is_empty() {
                break;
            }
            out.extend(p.rows);
        }
        out
    }

    #[test]
    fn merged_generated_and_stored_rows_page_without_gaps() {
        let g = Generated::build(GeneratorConfig {
            seed: 1,
            users: 2,
            transactions: 50,
            partner_transactions: 0,
            currencies: vec!["eur".into()],
        });
        let base = crate::generator::BASE_MS;
        let mut s = State::new(Some(g));
        // Stored rows interleaved with generated ones (user 0 has rows at base + 2k s),
        // including one with exactly the time of a generated row.
        let specs = vec![
            tx("a", "COMPLETED", "1", base - 5),
            tx("b", "COMPLETED", "1", base + 2000),
            tx("c", "PENDING", "1", base + 7_500),
            tx("d", "COMPLETED", "1", base + 1_000_000),
        ];
        s.add_transactions("user-000001", specs, 0, 0).unwrap();
        for size in [1, 3, 7, 100] {
            let rows = all_pages(&mut s, "user-000001", size);
            assert_eq!(rows.len(), 29, "size {size}");
            let keys: Vec<(Ms, String)> =
                rows.iter().map(|t| (t.updated_ms, t.id.clone())).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(keys, sorted, "size {size}");
        }
        let bal = s.balance("user-000001", "eur").unwrap();
        let rows = all_pages(&mut s, "user-000001", 100);
        let sum: Decimal = rows
            .iter()
            .filter(|t| t.status == "COMPLETED")
            .map(|t| t.amount - t.fee)
            .sum();
        assert_eq!(sum, bal);
    }

    #[test]
    fn steps_fire_after_polls_and_refresh_updated_at() {
        let mut s = State::new(None);
        s.add_user(
            UserSpec {
                external_user_id: "u".into(),
                ..UserSpec::default()
            },
            0,
        )
        .unwrap();
        let mut t = tx("t", "PENDING", "5", 0);
        t.steps = vec![TxStep {
            status: "COMPLETED".into(),
            after_polls: Some(2),
            after_seconds: None,
        }];
        s.add_transactions("u", vec![t], 0, 0).unwrap();
        let q = HistoryQuery {
            from_ms: None,
            to_ms: None,
            page: 1,
            size: 10,
        };
        assert_eq!(s.history("u", q, 10).unwrap().rows[0].status, "PENDING");
        assert_eq!(s.history("u", q, 20).unwrap().rows[0].status, "PENDING");
        let row = s.history("u", q, 30).unwrap().rows[0].clone();
        assert_eq!((row.status.as_str(), row.updated_ms), ("COMPLETED", 30));
        assert_eq!(s.balance("u", "eur"), Some(d("5")));
    }
}
