//! The sandbox's in-memory world: owners (the partner and users) with balances, KYC and
//! history, plus locks, exchanges and SEPA transfers, and the rules that move them on.
//!
//! **Invariant:** an owner's balance in a currency is always
//! `Σ (amount − fee)` over its COMPLETED rows (visible and hidden, stored and generated)
//! `+ Σ drift`. Balances are never stored, only computed from that definition, so no
//! progression can break it.
//!
//! Progressions are lazy: every request first calls [`State::tick`], which applies every
//! change whose time has come, and reads that count as "polls" apply poll-based changes.
//! A change becomes visible with `updatedAt` = the time of the request that first saw it, so
//! a row never changes behind a `from` cursor a client has already passed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::generator::{GenOwner, Generated};
use crate::money::{self, DEFAULT_CURRENCIES};
use crate::scenario::{
    ErrorSpec, ExchangeConfig, KycSpec, KycStep, SepaConfig, SepaSpec, TxSpec, TxStep, UserSpec,
};
use crate::util::{rfc3339_ms, uuid_from_key};

/// Milliseconds since the Unix epoch.
pub(crate) type Ms = i64;

/// The owner id that means the partner.
pub const PARTNER: &str = "partner";

/// Whether a step is due: after `after_polls` reads since the last change or `after_seconds`
/// after it, whichever first; with neither, after one read. Returns the time the next step
/// counts from (the due time for timed steps, so chained timed steps do not drift).
fn due(
    after_polls: Option<u32>,
    after_seconds: Option<f64>,
    polls: u64,
    changed_ms: Ms,
    now: Ms,
) -> Option<Ms> {
    let (polls_needed, seconds) = match (after_polls, after_seconds) {
        (None, None) => (Some(1), None),
        other => other,
    };
    if let Some(s) = seconds {
        let at = changed_ms.saturating_add((s.max(0.0) * 1000.0).round() as i64);
        if now >= at {
            return Some(at);
        }
    }
    if let Some(p) = polls_needed
        && polls >= u64::from(p)
    {
        return Some(now);
    }
    None
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
    steps: VecDeque<TxStep>,
    /// When the last change counted from (for timed steps).
    changed_ms: Ms,
    /// The owner's history-read counter at the last change (for poll steps).
    reads_at_change: u64,
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

/// A user's KYC track.
#[derive(Debug, Clone)]
pub(crate) struct Kyc {
    pub status: String,
    pub attempt_status: String,
    pub rejection_reason: Option<String>,
    steps: VecDeque<KycStep>,
    changed_ms: Ms,
    reads: u64,
}

/// What `GET /v1/kyc/status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KycView {
    /// `status`.
    pub status: String,
    /// `attemptStatus`.
    pub attempt_status: String,
    /// `rejectionReason`, only when `attemptStatus` is `REJECTED_BY_PROVIDER`.
    pub rejection_reason: Option<String>,
}

impl Kyc {
    fn from_spec(spec: KycSpec, now: Ms) -> Kyc {
        Kyc {
            status: spec.status,
            attempt_status: spec.attempt_status,
            rejection_reason: spec.rejection_reason,
            steps: spec.steps.into(),
            changed_ms: now,
            reads: 0,
        }
    }

    fn advance(&mut self, now: Ms) {
        while let Some(step) = self.steps.front() {
            let Some(at) = due(
                step.after_polls,
                step.after_seconds,
                self.reads,
                self.changed_ms,
                now,
            ) else {
                break;
            };
            if let Some(s) = &step.status {
                self.status = s.clone();
            }
            if let Some(s) = &step.attempt_status {
                self.attempt_status = s.clone();
            }
            if step.rejection_reason.is_some() {
                self.rejection_reason = step.rejection_reason.clone();
            }
            self.steps.pop_front();
            self.changed_ms = at;
            self.reads = 0;
        }
    }

    fn view(&self) -> KycView {
        let rejected = self.attempt_status == "REJECTED_BY_PROVIDER";
        KycView {
            status: self.status.clone(),
            attempt_status: self.attempt_status.clone(),
            rejection_reason: rejected.then(|| {
                self.rejection_reason
                    .clone()
                    .unwrap_or_else(|| "NO_FACE_FOUND".into())
            }),
        }
    }

    fn has_steps(&self) -> bool {
        !self.steps.is_empty()
    }
}

/// Profile fields of a user, echoed in SEPA details.
#[derive(Debug, Clone, Default)]
pub(crate) struct Profile {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub country: Option<String>,
}

/// The partner or one user.
#[derive(Debug)]
pub(crate) struct Owner {
    pub id: String,
    /// Generated rows this owner also has.
    pub generated: Option<GenOwner>,
    pub txs: Vec<Tx>,
    index: HashMap<String, usize>,
    /// Visible rows by (updatedAt, id): history order.
    order: BTreeMap<(Ms, String), usize>,
    pub drift: BTreeMap<String, Decimal>,
    /// Balances shown even when zero, in this order.
    pub currencies: Vec<String>,
    pub kyc: Option<Kyc>,
    pub profile: Profile,
    pub fiat_status: String,
    /// History requests served for this owner (the clock of poll-based row steps).
    history_reads: u64,
    /// Rows with steps still to apply.
    progressing: BTreeSet<usize>,
}

impl Owner {
    fn new(id: String, generated: Option<GenOwner>, currencies: Vec<String>) -> Owner {
        Owner {
            id,
            generated,
            txs: Vec::new(),
            index: HashMap::new(),
            order: BTreeMap::new(),
            drift: BTreeMap::new(),
            currencies,
            kyc: None,
            profile: Profile::default(),
            fiat_status: "ACTIVE".into(),
            history_reads: 0,
            progressing: BTreeSet::new(),
        }
    }

    fn push(&mut self, tx: Tx) -> Result<usize, String> {
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

    fn set_status(&mut self, i: usize, status: &str, now: Ms) {
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

    /// Applies every due row step.
    fn advance_txs(&mut self, now: Ms) {
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
                self.set_status(i, &status, now);
                let reads = self.history_reads;
                if let Some(tx) = self.txs.get_mut(i) {
                    tx.steps.pop_front();
                    tx.changed_ms = at;
                    tx.reads_at_change = reads;
                }
            }
        }
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
}

/// Domain errors the routes turn into P100 error bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateError {
    UnknownUser,
    LockNotFound,
    LockExpired,
    Invalid(String),
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

/// The whole world.
#[derive(Debug)]
pub(crate) struct State {
    pub partner: Owner,
    pub users: HashMap<String, Owner>,
    pub generated: Option<Arc<Generated>>,
    pub locks: HashMap<String, Lock>,
    pub exchanges: HashMap<String, Exchange>,
    /// Exchange ids in creation order, for listing.
    exchange_order: Vec<String>,
    active_exchanges: Vec<String>,
    pub sepa: HashMap<String, Sepa>,
    active_sepa: Vec<String>,
    pub exchange_cfg: ExchangeConfig,
    pub sepa_cfg: SepaConfig,
    /// Added to the wall clock (`POST /__control/clock`), so tests need not sleep.
    pub clock_offset_ms: i64,
    /// Owners with rows that still have steps.
    progressing_owners: BTreeSet<String>,
}

impl State {
    pub fn new(generated: Option<Generated>) -> State {
        let generated = generated.map(Arc::new);
        let mut partner_currencies: Vec<String> =
            DEFAULT_CURRENCIES.iter().map(|c| c.to_string()).collect();
        if let Some(g) = &generated {
            for c in g.currencies() {
                if !partner_currencies.contains(c) {
                    partner_currencies.push(c.clone());
                }
            }
        }
        State {
            partner: Owner::new(
                PARTNER.into(),
                generated.as_ref().map(|_| GenOwner::Partner),
                partner_currencies,
            ),
            users: HashMap::new(),
            generated,
            locks: HashMap::new(),
            exchanges: HashMap::new(),
            exchange_order: Vec::new(),
            active_exchanges: Vec::new(),
            sepa: HashMap::new(),
            active_sepa: Vec::new(),
            exchange_cfg: ExchangeConfig::default(),
            sepa_cfg: SepaConfig::default(),
            clock_offset_ms: 0,
            progressing_owners: BTreeSet::new(),
        }
    }

    /// The sandbox's clock: wall time plus the control offset.
    pub fn now(&self) -> Ms {
        chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(self.clock_offset_ms)
    }

    // ---- owners -------------------------------------------------------------------------

    fn gen_user(&self, id: &str) -> Option<u64> {
        self.generated.as_ref().and_then(|g| g.user_index(id))
    }

    pub fn exists(&self, id: &str) -> bool {
        id == PARTNER || self.users.contains_key(id) || self.gen_user(id).is_some()
    }

    pub fn is_user(&self, id: &str) -> bool {
        id != PARTNER && self.exists(id)
    }

    fn owner(&self, id: &str) -> Option<&Owner> {
        if id == PARTNER {
            Some(&self.partner)
        } else {
            self.users.get(id)
        }
    }

    fn owner_mut(&mut self, id: &str) -> Option<&mut Owner> {
        if id == PARTNER {
            Some(&mut self.partner)
        } else {
            self.users.get_mut(id)
        }
    }

    /// The owner's record, creating it for a generated user that had none yet (generated
    /// users only get a record once something about them is stored).
    fn owner_materialized(&mut self, id: &str, now: Ms) -> Option<&mut Owner> {
        if id != PARTNER
            && !self.users.contains_key(id)
            && let (Some(u), Some(g)) = (self.gen_user(id), self.generated.clone())
        {
            let mut o = Owner::new(
                id.to_string(),
                Some(GenOwner::User(u)),
                g.currencies().to_vec(),
            );
            o.kyc = g.kyc(u).map(|k| Kyc::from_spec(k, now));
            self.users.insert(id.to_string(), o);
        }
        self.owner_mut(id)
    }

    fn gen_owner(&self, id: &str) -> Option<GenOwner> {
        match self.owner(id) {
            Some(o) => o.generated,
            None => self.gen_user(id).map(GenOwner::User),
        }
    }

    /// Adds a user (scenario or control). A generated user id may be given once to add
    /// stored data (KYC, rows, profile) on top of its generated rows.
    pub fn add_user(&mut self, spec: UserSpec, now: Ms) -> Result<(), String> {
        let id = spec.external_user_id.trim().to_string();
        if id.is_empty() {
            return Err("external_user_id is empty".into());
        }
        if id == PARTNER {
            return Err("\"partner\" is reserved for the partner account".into());
        }
        if self.users.contains_key(&id) {
            return Err(format!("user {id:?} already exists"));
        }
        let is_gen = self.gen_user(&id).is_some();
        let mut currencies: Vec<String> = spec
            .currencies
            .iter()
            .map(|c| c.trim().to_lowercase())
            .collect();
        if currencies.is_empty() && !is_gen {
            currencies = DEFAULT_CURRENCIES.iter().map(|c| c.to_string()).collect();
        }
        let owner = match self.owner_materialized(&id, now) {
            Some(o) => o,
            None => {
                self.users
                    .insert(id.clone(), Owner::new(id.clone(), None, Vec::new()));
                self.owner_mut(&id).ok_or("user vanished")?
            }
        };
        for c in currencies {
            if !owner.currencies.contains(&c) {
                owner.currencies.push(c);
            }
        }
        // An explicit `kyc` (or its absence, for a non-generated user) is authoritative.
        if spec.kyc.is_some() || !is_gen {
            owner.kyc = spec.kyc.map(|k| Kyc::from_spec(k, now));
        }
        if let Some(s) = spec.fiat_status {
            owner.fiat_status = s;
        }
        owner.profile = Profile {
            email: spec.email,
            first_name: spec.first_name,
            last_name: spec.last_name,
            country: spec.country,
        };
        self.add_transactions(&id, spec.transactions, now, now)?;
        Ok(())
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

    pub fn set_kyc(&mut self, user: &str, kyc: Option<KycSpec>, now: Ms) -> Result<(), StateError> {
        if user == PARTNER {
            return Err(StateError::Invalid("the partner has no KYC".into()));
        }
        let owner = self
            .owner_materialized(user, now)
            .ok_or(StateError::UnknownUser)?;
        owner.kyc = kyc.map(|k| Kyc::from_spec(k, now));
        Ok(())
    }

    // ---- progressions -------------------------------------------------------------------

    /// Applies every change whose time has come. Called at the start of every request.
    pub fn tick(&mut self, now: Ms) {
        for id in std::mem::take(&mut self.active_exchanges) {
            if !self.advance_exchange(&id, now) {
                self.active_exchanges.push(id);
            }
        }
        for id in std::mem::take(&mut self.active_sepa) {
            if !self.advance_sepa(&id, now) {
                self.active_sepa.push(id);
            }
        }
        for id in std::mem::take(&mut self.progressing_owners) {
            if let Some(o) = self.owner_mut(&id) {
                o.advance_txs(now);
                if !o.progressing.is_empty() {
                    self.progressing_owners.insert(id);
                }
            }
        }
    }

    // ---- KYC ----------------------------------------------------------------------------

    /// One KYC status read: `Ok(None)` = user without KYC (P445).
    pub fn read_kyc(&mut self, user: &str, now: Ms) -> Result<Option<KycView>, StateError> {
        if !self.is_user(user) {
            return Err(StateError::UnknownUser);
        }
        if !self.users.contains_key(user) {
            // A generated user without a record: static KYC unless it has steps to track.
            let (u, g) = match (self.gen_user(user), self.generated.clone()) {
                (Some(u), Some(g)) => (u, g),
                _ => return Err(StateError::UnknownUser),
            };
            match g.kyc(u) {
                Some(k) if !k.steps.is_empty() => {}
                other => return Ok(other.map(|k| Kyc::from_spec(k, now).view())),
            }
        }
        let owner = self
            .owner_materialized(user, now)
            .ok_or(StateError::UnknownUser)?;
        let Some(kyc) = owner.kyc.as_mut() else {
            return Ok(None);
        };
        kyc.advance(now);
        let view = kyc.view();
        if kyc.has_steps() {
            kyc.reads += 1;
        }
        Ok(Some(view))
    }

    // ---- balances -----------------------------------------------------------------------

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

    // ---- history ------------------------------------------------------------------------

    /// One history request: applies due row steps, computes the page, counts the read.
    pub fn history(&mut self, id: &str, q: HistoryQuery, now: Ms) -> Option<HistoryPage> {
        if !self.exists(id) {
            return None;
        }
        if let Some(o) = self.owner_mut(id) {
            o.advance_txs(now);
        }
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

    // ---- exchange -----------------------------------------------------------------------

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
    fn advance_exchange(&mut self, id: &str, now: Ms) -> bool {
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

    // ---- SEPA ---------------------------------------------------------------------------

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
    fn advance_sepa(&mut self, id: &str, now: Ms) -> bool {
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

    pub fn profile(&self, user: &str) -> Profile {
        self.owner(user)
            .map(|o| o.profile.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::generator::GeneratorConfig;

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
