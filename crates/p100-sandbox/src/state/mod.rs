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
//!
//! Webhooks: when webhooks are configured, each aggregate records the P100 webhook of its own
//! changes in [`State::outbox`] as it applies them (the route and body are its business, so
//! adding a kind touches one file); `crate::webhooks` delivers them.
//!
//! One file per aggregate, mirroring `routes/`: `kyc.rs` (KYC tracks and status reads),
//! `history.rs` (rows, history pages, balances and drift), `exchanges.rs` (locks and
//! exchanges), `sepa.rs` (SEPA transfers). This file holds the world itself: the owners, the
//! clock, [`State::tick`] and `due`, the rule every step follows.

mod exchanges;
mod history;
mod kyc;
mod sepa;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rust_decimal::Decimal;

use crate::generator::{GenOwner, Generated};
use crate::money::DEFAULT_CURRENCIES;
use crate::scenario::{ExchangeConfig, SepaConfig, UserSpec};
use crate::webhooks::Outbox;

pub use exchanges::ExchangeInfo;
pub(crate) use exchanges::{Exchange, Lock};
pub(crate) use history::{HistoryQuery, Tx};
pub(crate) use kyc::Kyc;
pub use kyc::KycView;
pub(crate) use sepa::Sepa;

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
}

/// Domain errors the routes turn into P100 error bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateError {
    UnknownUser,
    LockNotFound,
    LockExpired,
    Invalid(String),
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
    /// Users whose next KYC step can become due without a read (timed, or its reads made),
    /// so `tick` visits only them, not every user.
    kyc_progressing: BTreeSet<String>,
    /// Webhook events of changes applied, waiting for delivery (off unless configured).
    pub outbox: Outbox,
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
            kyc_progressing: BTreeSet::new(),
            outbox: Outbox::default(),
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
            self.track_kyc(id);
        }
        self.owner_mut(id)
    }

    /// An owner's record and the outbox, borrowed together so an aggregate can emit while it
    /// changes the owner.
    fn owner_and_outbox(&mut self, id: &str) -> Option<(&mut Owner, &mut Outbox)> {
        let owner = if id == PARTNER {
            &mut self.partner
        } else {
            self.users.get_mut(id)?
        };
        Some((owner, &mut self.outbox))
    }

    fn gen_owner(&self, id: &str) -> Option<GenOwner> {
        match self.owner(id) {
            Some(o) => o.generated,
            None => self.gen_user(id).map(GenOwner::User),
        }
    }

    pub fn profile(&self, user: &str) -> Profile {
        self.owner(user)
            .map(|o| o.profile.clone())
            .unwrap_or_default()
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
        self.track_kyc(&id);
        self.add_transactions(&id, spec.transactions, now, now)?;
        Ok(())
    }

    // ---- progressions -------------------------------------------------------------------

    /// Applies every change whose time has come. Called at the start of every request, and
    /// every 50 ms by the webhook ticker while webhooks are configured.
    pub fn tick(&mut self, now: Ms) {
        for id in std::mem::take(&mut self.kyc_progressing) {
            if self.advance_kyc(&id, now) {
                self.kyc_progressing.insert(id);
            }
        }
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
            if self.advance_owner_txs(&id, now) {
                self.progressing_owners.insert(id);
            }
        }
    }
}
