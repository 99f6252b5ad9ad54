//! A fake P100 Partner API for tests, benchmarks and the demo.
//!
//! [`Sandbox`] is an in-memory P100: it serves the endpoints p100-recon uses (KYC status,
//! partner and user balances, transaction history, exchange lock/finalize/details, SEPA
//! create/details) with the paths, field names, JSON types, status codes and error bodies of
//! the reference in `shared/p100-api/` — amounts as padded strings, unpadded strings or
//! numbers exactly where P100 uses each, lowercase currencies, P500/P501 as HTTP 400, the
//! two-field legacy error form, P403 without `errorName`. It builds its JSON independently of
//! the `p100` client crate (and must never depend on it), so a field-name mistake in the
//! client cannot be mirrored here.
//!
//! State comes from a [`Scenario`] (TOML file or code) and/or a seeded [`GeneratorConfig`]
//! that computes millions of rows on demand. KYC, transactions, exchanges and SEPA transfers
//! move on after a number of reads ("polls") or seconds. Faults ([`Fault`]) make requests
//! slow, failing, rate-limited, dropped, malformed, truncated or full of unknown enum values.
//! Everything can be driven over HTTP (`/__control/...`, see [`control`])
//! or in process through methods on [`Sandbox`].
//!
//! With [`Sandbox::with_webhooks`] (CLI: `--webhook-url U --webhook-token T`) the sandbox
//! POSTs P100's webhooks for its own progressions to `U/kyc`, `U/user`, `U/sepa-transfer`,
//! `U/exchange` and `U/crypto-deposit`, with `Authorization: <token>` and P100's retry
//! schedule (5 attempts: at once, then after 8, 16, 32, 64 s; the base is configurable). A
//! background task ticks the state every 50 ms while served, so timed changes are delivered
//! without any request. [`Sandbox::drop_webhooks`] loses events on purpose;
//! [`Sandbox::webhook_log`] shows what became of each ([`WebhookRecord`]). The exchange
//! payload, the SEPA `error` fields and the crypto deposit's ids are the sandbox's guesses;
//! see the README's "Webhooks".
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use p100_sandbox::{Fault, FaultKind, Sandbox, Scenario};
//! let running = Sandbox::from_scenario(Scenario::default()).spawn().await?;
//! running.sandbox().add_fault(Fault::new("/v1/partner/balances", FaultKind::P501).times(1));
//! let url = format!("{}/v1/partner/balances", running.base_url());
//! // GET url with header `x-api-key: sandbox-key` → first a P501, then the balances.
//! # Ok(()) }
//! ```
//!
//! # Sandbox-specific behaviour (not documented by P100)
//! - Invented error codes: **P431** `lock-not-found` (HTTP 400), **P432** `lock-expired`
//!   (HTTP 400), **P433** `exchange-not-found` (HTTP 404), **P441** `insufficient-funds` (the
//!   default `error` of a FAILED SEPA transfer). P445's `errorName` `kyc-not-found` and
//!   message `KYC not found` are the sandbox's guesses.
//! - Intermediate statuses: exchanges start `PROCESSING`, SEPA transfers start `PROCESSING`
//!   (P100 documents only the terminal values, so clients must treat unknown values as
//!   non-terminal).
//! - A second `POST /v1/partner/exchange` with the same `lockId` creates a second exchange.
//! - History paths and shapes follow SPEC §8 (assumed contract).
//!
//! # Control endpoints
//! See the [`control`] module docs; each has an in-process twin on [`Sandbox`].
//!
//! # Layout
//! `scenario` (input format), `generator` (on-demand bulk rows), `state` (the world and its
//! progressions, one file per aggregate as in `routes`; each aggregate also writes the
//! webhook events of its own changes into the state's outbox), `routes` (P100 endpoints and
//! the fault/auth layer), `webhooks` (configuration, the ticker, delivery with retries, drop
//! fault, log), `faults`, `stats`, `control`, `server` (accept loop), `money` (amount
//! formats), `error` (P100 error bodies).

#![warn(missing_docs)]

pub mod control;
mod error;
mod faults;
mod generator;
mod money;
mod routes;
mod scenario;
mod server;
mod state;
mod stats;
mod util;
mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{Fault, FaultKind, FaultStatus};
pub use generator::{GeneratorConfig, user_id as generated_user_id};
pub use scenario::{
    DriftSpec, ErrorSpec, ExchangeConfig, KycSpec, KycStep, PartnerSpec, Scenario, ScenarioError,
    SepaConfig, SepaSpec, TxSpec, TxStep, UserSpec,
};
pub use state::{ExchangeInfo, KycView, PARTNER};
pub use stats::{HistoryRequest, RequestStats};
pub use webhooks::{WebhookConfig, WebhookOutcome, WebhookRecord};

use faults::FaultSet;
use generator::Generated;
use state::{State, StateError};
use stats::Stats;
use webhooks::Hooks;

/// The API key used when none is configured.
pub const DEFAULT_API_KEY: &str = "sandbox-key";

/// Why an in-process or `/__control` change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such owner (neither `"partner"` nor a known user).
    #[error("unknown owner {0:?}")]
    UnknownOwner(String),
    /// The change contradicts the state (duplicate id, empty currency …).
    #[error("{0}")]
    Invalid(String),
}

/// An in-memory P100. Cheap to clone: clones share the same state, so a test can keep one
/// and hand another to [`Sandbox::spawn`].
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    faults: Mutex<FaultSet>,
    stats: Mutex<Stats>,
    api_key: RwLock<String>,
    rate_limit: Mutex<RateWindow>,
    /// Webhook configuration, drop fault and delivery log (events themselves wait in the
    /// state's outbox until the ticker takes them).
    hooks: Mutex<Hooks>,
}

/// The server-side rate limit (`--rate-limit R`): at most `limit` requests admitted per
/// wall-clock second; the rest get 429 with `Retry-After: 1`.
#[derive(Debug, Default)]
struct RateWindow {
    limit: Option<u32>,
    second: i64,
    admitted: u32,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering from poisoning: a panicking test thread must not wedge the
/// sandbox for the others.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn control_err(owner: &str, e: StateError) -> ControlError {
    match e {
        StateError::UnknownUser => ControlError::UnknownOwner(owner.to_string()),
        StateError::Invalid(m) => ControlError::Invalid(m),
        other => ControlError::Invalid(format!("{other:?}")),
    }
}

impl Sandbox {
    fn with_parts(state: State, faults: Vec<Fault>, api_key: Option<String>) -> Sandbox {
        let mut set = FaultSet::default();
        faults.into_iter().for_each(|f| set.add(f));
        Sandbox {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                faults: Mutex::new(set),
                stats: Mutex::new(Stats::default()),
                api_key: RwLock::new(api_key.unwrap_or_else(|| DEFAULT_API_KEY.into())),
                rate_limit: Mutex::new(RateWindow::default()),
                hooks: Mutex::new(Hooks::default()),
            }),
        }
    }

    /// A sandbox holding the scenario's state. Owners that SEPA transfers or drift refer to
    /// but that are not listed are created as users without KYC; other inconsistencies are
    /// logged and skipped (use [`Sandbox::from_scenario_file`] or [`Scenario::validate`] to
    /// reject them instead).
    pub fn from_scenario(s: Scenario) -> Sandbox {
        let generated = s.generator.clone().map(Generated::build);
        let mut st = State::new(generated);
        let now = st.now();
        st.exchange_cfg = s.exchange;
        st.sepa_cfg = s.sepa;
        if !s.partner.currencies.is_empty() {
            let mut cur: Vec<String> = Vec::new();
            for c in &s.partner.currencies {
                let c = c.trim().to_lowercase();
                if !c.is_empty() && !cur.contains(&c) {
                    cur.push(c);
                }
            }
            st.partner.currencies = cur;
        }
        if let Err(e) = st.add_transactions(PARTNER, s.partner.transactions, now, now) {
            tracing::warn!(error = %e, "scenario: partner transactions skipped");
        }
        for u in s.users {
            let id = u.external_user_id.clone();
            if let Err(e) = st.add_user(u, now) {
                tracing::warn!(user = %id, error = %e, "scenario: user skipped");
            }
        }
        let ensure = |st: &mut State, owner: &str| {
            if !st.exists(owner) {
                let spec = UserSpec {
                    external_user_id: owner.to_string(),
                    ..UserSpec::default()
                };
                if let Err(e) = st.add_user(spec, now) {
                    tracing::warn!(user = %owner, error = %e, "scenario: implicit user skipped");
                }
            }
        };
        for t in s.sepa_transfers {
            ensure(&mut st, &t.owner);
            if let Err(e) = st.add_sepa(t, now) {
                tracing::warn!(error = ?e, "scenario: SEPA transfer skipped");
            }
        }
        for d in s.drift {
            ensure(&mut st, &d.owner);
            if let Err(e) = st.add_drift(&d.owner, &d.currency, d.delta, now) {
                tracing::warn!(error = ?e, "scenario: drift skipped");
            }
        }
        Self::with_parts(st, s.faults, s.api_key)
    }

    /// Loads a TOML scenario; the error names the file and, for syntax errors, line and
    /// column.
    pub fn from_scenario_file(path: &Path) -> Result<Sandbox, ScenarioError> {
        Scenario::from_file(path).map(Sandbox::from_scenario)
    }

    /// A sandbox with seeded generated data only (see [`GeneratorConfig`]).
    pub fn generated(g: GeneratorConfig) -> Sandbox {
        Self::from_scenario(Scenario {
            generator: Some(g),
            ..Scenario::default()
        })
    }

    /// Sets the API key clients must send (default `sandbox-key`).
    pub fn with_api_key(self, key: impl Into<String>) -> Self {
        *self
            .inner
            .api_key
            .write()
            .unwrap_or_else(PoisonError::into_inner) = key.into();
        self
    }

    /// The API key clients must send.
    pub fn api_key(&self) -> String {
        self.inner
            .api_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// All P100 routes plus `/__control`. Serving this with plain `axum::serve` works, except
    /// that the `drop` fault then breaks the response body instead of closing the connection
    /// before the status line; [`Sandbox::serve`] and [`Sandbox::spawn`] do it properly.
    pub fn router(&self) -> Router {
        routes::p100_routes(self.clone())
            .merge(control::routes())
            .fallback(routes::not_found)
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then waits (up to 5 s) for requests
    /// in flight. While serving, a background task delivers webhooks when they are configured
    /// (see [`Sandbox::set_webhooks`]); it stops, with every delivery in flight, when serving
    /// ends.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // Aborted however serving ends, even if this future is dropped half way.
        let _ticker = AbortOnDrop(tokio::spawn(webhooks::run(self.clone())));
        server::serve(self.router(), listener, shutdown).await
    }

    /// Binds `127.0.0.1:0` and serves in the background until the returned handle is shut
    /// down or dropped.
    pub async fn spawn(self) -> std::io::Result<RunningSandbox> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let sandbox = self.clone();
        let task = tokio::spawn(self.serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(RunningSandbox {
            addr,
            sandbox,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    // ---- internals used by the routes --------------------------------------------------

    pub(crate) fn now_ms(&self) -> i64 {
        lock(&self.inner.state).now()
    }

    /// Runs `f` on the state after applying due progressions; `f` gets the sandbox time.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut State, i64) -> R) -> R {
        let mut st = lock(&self.inner.state);
        let now = st.now();
        st.tick(now);
        f(&mut st, now)
    }

    /// Admits at most `per_second` requests per wall-clock second (429 with `Retry-After: 1`
    /// above it), like a P100 that enforces a rate limit. `None` lifts the limit.
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        lock(&self.inner.rate_limit).limit = per_second;
    }

    /// Whether one more request may be served now under the rate limit.
    pub(crate) fn admit(&self) -> bool {
        let mut w = lock(&self.inner.rate_limit);
        let Some(limit) = w.limit else {
            return true;
        };
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if w.second != second {
            w.second = second;
            w.admitted = 0;
        }
        if w.admitted < limit {
            w.admitted += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn with_stats<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> R {
        f(&mut lock(&self.inner.stats))
    }

    pub(crate) fn with_hooks<R>(&self, f: impl FnOnce(&mut Hooks) -> R) -> R {
        f(&mut lock(&self.inner.hooks))
    }

    pub(crate) fn with_faults<R>(&self, f: impl FnOnce(&mut FaultSet) -> R) -> R {
        f(&mut lock(&self.inner.faults))
    }

    // ---- in-process twins of the control endpoints --------------------------------------

    /// Delivers P100 webhooks for the sandbox's own progressions to `config.url` (see
    /// [`WebhookConfig`]). Deliveries run while the sandbox is served ([`Sandbox::serve`],
    /// [`Sandbox::spawn`]).
    pub fn with_webhooks(self, config: WebhookConfig) -> Self {
        self.set_webhooks(Some(config));
        self
    }

    /// Starts (`Some`) or stops (`None`) webhook deliveries. Stopping forgets events not yet
    /// taken by the ticker; deliveries already started run their course.
    pub fn set_webhooks(&self, config: Option<WebhookConfig>) {
        let on = config.is_some();
        self.with_hooks(|h| h.set_config(config));
        lock(&self.inner.state).outbox.set_enabled(on);
    }

    /// The drop fault (`POST /__control/webhooks/drop`): the next `times` events, or with
    /// `None` every event until [`Sandbox::clear_webhook_drop`], are never sent, as if P100
    /// lost them. They show as [`WebhookOutcome::Dropped`] in the log.
    pub fn drop_webhooks(&self, times: Option<u32>) {
        self.with_hooks(|h| h.drop_events(times));
    }

    /// Ends the drop fault (`DELETE /__control/webhooks/drop`).
    pub fn clear_webhook_drop(&self) {
        self.with_hooks(Hooks::clear_drop);
    }

    /// Every webhook event so far (the newest 100,000), oldest first, with its outcome
    /// (`GET /__control/webhooks`).
    pub fn webhook_log(&self) -> Vec<WebhookRecord> {
        self.with_hooks(|h| h.log())
    }

    /// Adds a fault (`POST /__control/faults`).
    pub fn add_fault(&self, fault: Fault) {
        self.with_faults(|f| f.add(fault));
    }

    /// Adds several faults.
    pub fn add_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.with_faults(|set| faults.into_iter().for_each(|f| set.add(f)));
    }

    /// Removes every fault (`DELETE /__control/faults`).
    pub fn clear_faults(&self) {
        self.with_faults(FaultSet::clear);
    }

    /// Faults with their counters (`GET /__control/faults`).
    pub fn faults(&self) -> Vec<FaultStatus> {
        self.with_faults(|f| f.list())
    }

    /// Request counters (`GET /__control/stats`).
    pub fn request_stats(&self) -> RequestStats {
        let mut s = self.with_stats(|s| s.snapshot());
        s.exchanges_per_lock = lock(&self.inner.state).exchanges_per_lock();
        s
    }

    /// Zeroes the counters (`POST /__control/reset_stats`).
    pub fn reset_stats(&self) {
        self.with_stats(Stats::reset);
    }

    /// Changes a balance with no history row (`POST /__control/drift`). `owner` is
    /// `"partner"` or an external user id.
    pub fn add_drift(
        &self,
        owner: &str,
        currency: &str,
        delta: Decimal,
    ) -> Result<(), ControlError> {
        self.with_state(|st, now| st.add_drift(owner, currency, delta, now))
            .map_err(|e| control_err(owner, e))
    }

    /// Adds users (`POST /__control/users`); stops at the first invalid one.
    pub fn add_users(&self, users: Vec<UserSpec>) -> Result<(), ControlError> {
        self.with_state(|st, now| {
            users
                .into_iter()
                .try_for_each(|u| st.add_user(u, now).map_err(ControlError::Invalid))
        })
    }

    /// Adds history rows to an owner (`POST /__control/transactions`). Rows without
    /// `created_at` get the current sandbox time.
    pub fn add_transactions(&self, owner: &str, txs: Vec<TxSpec>) -> Result<(), ControlError> {
        self.with_state(|st, now| {
            if !st.exists(owner) {
                return Err(ControlError::UnknownOwner(owner.to_string()));
            }
            let txs = txs
                .into_iter()
                .map(|mut t| {
                    t.created_at = t
                        .created_at
                        .or_else(|| chrono::DateTime::from_timestamp_millis(now));
                    t
                })
                .collect();
            st.add_transactions(owner, txs, now, now)
                .map_err(ControlError::Invalid)
        })
    }

    /// Gives a stored row a new status at `updated_at`, which may lie behind rows already
    /// served (a change P100 commits late). In process only.
    pub fn commit_version(
        &self,
        owner: &str,
        id: &str,
        status: &str,
        updated_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ControlError> {
        self.with_state(|st, _| st.commit_version(owner, id, status, updated_at.timestamp_millis()))
            .map_err(|e| control_err(owner, e))
    }

    /// Adds SEPA transfers (`POST /__control/sepa`); returns their ids.
    pub fn add_sepa_transfers(
        &self,
        transfers: Vec<SepaSpec>,
    ) -> Result<Vec<String>, ControlError> {
        self.with_state(|st, now| {
            transfers
                .into_iter()
                .map(|t| {
                    let owner = t.owner.clone();
                    st.add_sepa(t, now).map_err(|e| control_err(&owner, e))
                })
                .collect()
        })
    }

    /// Sets (or with `None` removes) a user's KYC (`POST /__control/kyc`).
    pub fn set_kyc(&self, user: &str, kyc: Option<KycSpec>) -> Result<(), ControlError> {
        self.with_state(|st, now| st.set_kyc(user, kyc, now))
            .map_err(|e| control_err(user, e))
    }

    /// Moves the sandbox clock forward (`POST /__control/clock`): locks expire and timed
    /// steps fire without the test sleeping.
    pub fn advance_clock(&self, by: Duration) {
        // Capped at a millennium in total, so the sandbox's "now" stays a date chrono and
        // Postgres can hold.
        const MAX_OFFSET_MS: i64 = 1000 * 365 * 86_400 * 1000;
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let mut st = lock(&self.inner.state);
        st.clock_offset_ms = st.clock_offset_ms.saturating_add(ms).min(MAX_OFFSET_MS);
    }

    /// Current balance of an owner (after due progressions); `None` for an unknown owner.
    pub fn balance(&self, owner: &str, currency: &str) -> Option<Decimal> {
        self.with_state(|st, _| st.balance(owner, currency))
    }

    /// Every exchange created so far, oldest first (`GET /__control/exchanges`).
    pub fn exchanges(&self) -> Vec<ExchangeInfo> {
        self.with_state(|st, _| st.exchanges())
    }

    /// Changes the exchange configuration (`POST /__control/config`).
    pub fn configure_exchange(&self, f: impl FnOnce(&mut ExchangeConfig)) {
        f(&mut lock(&self.inner.state).exchange_cfg);
    }

    /// Changes the defaults of API-created SEPA transfers (`POST /__control/config`).
    pub fn configure_sepa(&self, f: impl FnOnce(&mut SepaConfig)) {
        f(&mut lock(&self.inner.state).sepa_cfg);
    }

    /// Creates an exchange lock in process (as `GET /v1/partner/exchange/lock` does); returns
    /// `(lockId, rate, expiresAt)`.
    pub fn create_lock(&self, from: &str, to: &str, amount: Decimal) -> (String, Decimal, String) {
        let l = self.with_state(|st, now| {
            st.create_lock(&from.to_lowercase(), &to.to_lowercase(), amount, now)
        });
        (l.id, l.rate, util::rfc3339_ms(l.expires_ms))
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A sandbox serving in the background (from [`Sandbox::spawn`]). Dropping it stops the
/// server.
#[derive(Debug)]
pub struct RunningSandbox {
    /// Where it listens.
    pub addr: SocketAddr,
    sandbox: Sandbox,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningSandbox {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The served sandbox, to change state and faults or read stats in process.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Stops accepting, waits for requests in flight (up to 5 s) and returns the server's
    /// result.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
