//! The job table as an apalis 1.0 worker backend.
//!
//! We implement apalis's `Persistence` (fetch, acknowledge, release) over [`crate::store`] and
//! let apalis's `Persisted` state machine drive it, then wrap that in [`PgJobs`], which
//! implements `Backend` and adds what `Persisted` lacks: wake-ups (NOTIFY plus a poll
//! interval), a lease keeper that runs while a batch is being worked on, and a final release
//! of claimed-but-unstarted rows on close. apalis's worker, monitor and tower layers run the
//! handlers unchanged.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::future::BoxSyncFuture;
use apalis_core::backend::persistence::{
    Persisted, Persistence, State, TaskEvent, TaskPersistLayer,
};
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::outcome::{Outcome, OutcomeCodec};
use crate::store::{self, Completion};
use crate::{Backoff, Error};

/// The channel the `jobs_notify` trigger signals, with the kind as payload.
pub const NOTIFY_CHANNEL: &str = "jobs_ready";

/// How one kind's workers fetch and acknowledge.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The kind (queue name) this backend serves.
    pub kind: String,
    /// Rows claimed per fetch; keep it near the worker's concurrency for slow jobs.
    pub batch: usize,
    /// How long a claim holds without renewal; a crashed worker's jobs return after it.
    pub lease: Duration,
    /// Lease renewal and rescue cadence (well below `lease`).
    pub heartbeat: Duration,
    /// Idle poll interval: the safety net for NOTIFY, and what finds scheduled retries.
    pub poll_interval: Duration,
    /// Delay between failed attempts.
    pub backoff: Backoff,
    /// Deferrals allowed before the job goes dead.
    pub max_deferrals: i32,
    /// This machine's name, recorded with the worker.
    pub host: String,
}

impl QueueConfig {
    /// Defaults: batch 10, lease 30 s renewed every 10 s, 1 s poll.
    pub fn new(kind: impl Into<String>) -> QueueConfig {
        QueueConfig {
            kind: kind.into(),
            batch: 10,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            backoff: Backoff::default(),
            max_deferrals: 20,
            host: String::new(),
        }
    }
}

/// The `Persistence` half: SQL for fetch, acknowledge and release.
pub struct JobsPersistence<Args> {
    pool: PgPool,
    cfg: Arc<QueueConfig>,
    _args: PhantomData<fn() -> Args>,
    outage: Arc<Mutex<Outage>>,
    /// A claim or burial failed: rows may be held under this worker's name that it never
    /// received. Checked (and given back) before the next claim.
    orphans: Arc<std::sync::atomic::AtomicBool>,
}

impl<Args> Clone for JobsPersistence<Args> {
    fn clone(&self) -> Self {
        JobsPersistence {
            pool: self.pool.clone(),
            cfg: self.cfg.clone(),
            // Each worker has its own: a sibling's success says nothing of this one's calls.
            outage: Arc::default(),
            orphans: Arc::default(),
            _args: PhantomData,
        }
    }
}

/// Longest a retry or deferral waits, whatever asked for it.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Rows each worker (by name) holds: claimed and not yet acknowledged. apalis's `Persisted`
/// fetches a new batch as soon as its buffer is empty, while tasks of the last one still run; a
/// worker claims only the slots its concurrency has free, so no row sits `running` in a buffer,
/// unavailable to other replicas. apalis wakes the worker when a task completes, and the
/// acknowledgement frees the slot before the next fetch.
fn held() -> &'static Mutex<HashMap<String, usize>> {
    static HELD: std::sync::OnceLock<Mutex<HashMap<String, usize>>> = std::sync::OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

fn hold(worker: &str, change: isize) -> usize {
    let Ok(mut held) = held().lock() else {
        return 0;
    };
    let n = held.entry(worker.to_owned()).or_default();
    *n = n.saturating_add_signed(change);
    *n
}

/// Longest wait between two tries of a database call the worker cannot do without.
const MAX_DB_BACKOFF: Duration = Duration::from_secs(30);

/// Whether a database error is the database being away (retry until it is back) rather than a
/// statement that will fail again however often it is sent (a constraint, a permission).
fn database_unavailable(error: &Error) -> bool {
    match error {
        Error::Database(e) => match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code == "40001"
                    || code == "40P01"
                    || code == "55000"
            }),
            _ => false,
        },
        Error::Contended(_) => true,
        Error::Corrupt(_) => false,
    }
}

/// Tries of a call that fails for another reason than the database being away before the
/// worker gives up on it (it then stops, is restarted, and a crash loop shows in `/readyz`).
const OTHER_ERROR_TRIES: u32 = 5;

/// Whether the database answers this worker, so an outage of any length is ridden out with
/// backoff (never by stopping the worker: apalis would drop its in-flight handlers and spend
/// a restart) and said once when it starts and once when it ends, not on every try.
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
    failures: u32,
}

impl Outage {
    /// Records a failure of `op`; returns how long to wait before trying again.
    fn failed(&mut self, kind: &str, op: &'static str, error: &Error) -> Duration {
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
            tracing::warn!(job.kind = %kind, op, %error, "the job database does not answer; retrying with backoff until it does");
        }
        self.failures = self.failures.saturating_add(1);
        metrics::counter!("queue_database_errors_total", "kind" => kind.to_owned(), "op" => op)
            .increment(1);
        Duration::from_millis(250)
            .saturating_mul(1 << self.failures.min(8))
            .min(MAX_DB_BACKOFF)
    }

    /// Records a success; says so if an outage ended.
    fn ok(&mut self, kind: &str) {
        if let Some(since) = self.since.take() {
            tracing::info!(job.kind = %kind, failures = self.failures, "the job database answers again after {:.0} s", since.elapsed().as_secs_f64());
        }
        self.failures = 0;
    }
}

impl<Args> JobsPersistence<Args> {
    /// Notes a failed database call of `op`; returns the backoff before the next try.
    fn db_failed(&self, op: &'static str, error: &Error) -> Duration {
        self.outage
            .lock()
            .map(|mut o| o.failed(&self.cfg.kind, op, error))
            .unwrap_or(MAX_DB_BACKOFF)
    }

    fn db_ok(&self) {
        if let Ok(mut o) = self.outage.lock() {
            o.ok(&self.cfg.kind);
        }
    }

    /// What the store records for an outcome of attempt number `attempt`.
    fn completion(&self, outcome: Outcome, attempt: u32) -> Completion {
        // A delay comes from P100 (`Retry-After`) or a job's arguments: capped, so no value
        // can overflow the clock or park a job for years.
        let later = |d: Duration| {
            let d = chrono::Duration::from_std(d.min(MAX_DELAY)).unwrap_or(chrono::Duration::MAX);
            Utc::now()
                .checked_add_signed(d)
                .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
        };
        match outcome {
            Outcome::Done(result) => Completion::Done(result),
            Outcome::Dead { reason } => Completion::Dead(reason),
            Outcome::Retry { reason, after } => Completion::Retry {
                error: reason,
                at: later(after.unwrap_or_else(|| self.cfg.backoff.delay_now(attempt))),
            },
            Outcome::Defer { reason, after } => Completion::Defer {
                reason,
                at: later(after),
                max_deferrals: self.cfg.max_deferrals,
            },
            Outcome::Snooze { result, after } => Completion::Snooze {
                result,
                at: later(after),
            },
        }
    }
}

impl<Args> Persistence for JobsPersistence<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    // Payloads are decoded in `fetch_next`, so an undecodable row never reaches apalis (where
    // it would stop the worker); it is buried instead.
    type Compact = Args;
    type Response = Outcome;
    type Error = Error;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        // A worker starting while the database is away waits for it. It rescues nothing: only
        // keepers do, after their quiet period, so a worker starting right after an outage
        // never takes jobs from replicas that have not renewed yet.
        let mut other_errors = 0;
        loop {
            let registered = store::register_worker(
                &self.pool,
                worker.name(),
                &self.cfg.host,
                std::process::id() as i32,
                std::slice::from_ref(&self.cfg.kind),
            )
            .await;
            match registered {
                Ok(()) => {
                    self.db_ok();
                    if let Ok(mut held) = held().lock() {
                        held.insert(worker.name().to_owned(), 0);
                    }
                    return Ok(());
                }
                Err(e) if !database_unavailable(&e) && other_errors + 1 >= OTHER_ERROR_TRIES => {
                    return Err(e);
                }
                Err(e) => {
                    if !database_unavailable(&e) {
                        other_errors += 1;
                    }
                    tokio::time::sleep(self.db_failed("register", &e)).await
                }
            }
        }
    }

    async fn heartbeat(&mut self, _worker: &WorkerContext) -> Result<(), Error> {
        // Leases are renewed by PgJobs' keeper task, which also runs while a batch is being
        // worked on (Persisted calls this hook only between batches).
        Ok(())
    }

    async fn fetch_next(&mut self, worker: &WorkerContext) -> Result<Vec<Task<Args>>, Error> {
        use std::sync::atomic::Ordering;
        // A worker claims again only once its batch is run and acknowledged: anything still
        // held under its name now was claimed by a call whose answer was lost. Given back
        // unspent before claiming more.
        if self.orphans.load(Ordering::SeqCst) {
            match store::release_held(&self.pool, worker.name()).await {
                Ok(n) => {
                    self.orphans.store(false, Ordering::SeqCst);
                    if n > 0 {
                        tracing::warn!(job.kind = %self.cfg.kind, released = n, "gave back {n} jobs claimed by a call whose answer was lost");
                    }
                }
                Err(e) => {
                    tokio::time::sleep(self.db_failed("release", &e)).await;
                    return Ok(Vec::new());
                }
            }
        }
        let room = self.cfg.batch.saturating_sub(hold(worker.name(), 0));
        if room == 0 {
            return Ok(Vec::new());
        }
        let claimed = match store::claim(
            &self.pool,
            &self.cfg.kind,
            worker.name(),
            room as i64,
            self.cfg.lease,
        )
        .await
        {
            Ok(claimed) => {
                self.db_ok();
                claimed
            }
            // Nothing claimed this time (as far as we know): the worker waits and asks again.
            Err(e) if database_unavailable(&e) => {
                self.orphans.store(true, Ordering::SeqCst);
                tokio::time::sleep(self.db_failed("claim", &e)).await;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let mut tasks = Vec::with_capacity(claimed.len());
        for job in claimed {
            match serde_json::from_str::<Args>(&job.payload) {
                Ok(args) => tasks.push(
                    TaskBuilder::new(args)
                        .task_id(TaskId::from_int(job.id as u64))
                        // apalis counts the attempt up when the task starts.
                        .attempt((job.attempt - 1).max(0) as usize)
                        .max_attempts(job.max_attempts as usize)
                        .lock_by(Some(worker.name().to_owned()))
                        .build(),
                ),
                Err(e) => {
                    let reason = format!("payload does not decode as a {} job: {e}", self.cfg.kind);
                    tracing::error!(job.id = job.id, job.kind = %self.cfg.kind, error = %reason, "burying undecodable job {}", job.id);
                    metrics::counter!("job_outcomes_total", "kind" => self.cfg.kind.clone(), "outcome" => "undecodable").increment(1);
                    // If even that fails, the row returns through lease expiry and is met here
                    // again.
                    if let Err(e) = store::bury(&self.pool, worker.name(), job.id, &reason).await {
                        // Given back before the next claim, and met here again.
                        self.orphans.store(true, Ordering::SeqCst);
                        tracing::warn!(job.id = job.id, error = %e, "cannot bury job {} yet", job.id);
                    }
                }
            }
        }
        hold(worker.name(), tasks.len() as isize);
        Ok(tasks)
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<Args>>,
        worker: &WorkerContext,
    ) -> Result<u64, Error> {
        let ids: Vec<i64> = tasks
            .iter()
            .filter_map(|t| {
                t.ctx()
                    .task_id()
                    .and_then(|id| id.as_int())
                    .map(|id| id as i64)
            })
            .collect();
        hold(worker.name(), -(ids.len() as isize));
        store::release(&self.pool, worker.name(), &ids).await
    }

    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<Outcome>>,
        worker: &WorkerContext,
    ) -> Result<(), Error> {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let TaskEvent::Complete(result) = event else {
                continue;
            };
            let Some(id) = result.task_id.as_int() else {
                continue;
            };
            // Its slot is free whatever the acknowledgement below does.
            hold(worker.name(), -1);
            let outcome = match result.result {
                Ok(outcome) => outcome,
                // apalis's AbortError: permanent.
                Err(error) if result.status == Status::Killed => Outcome::dead(error),
                // Any other error, a timeout or a caught panic: retry with backoff.
                Err(error) => Outcome::retry(error),
            };
            metrics::counter!("job_outcomes_total", "kind" => self.cfg.kind.clone(), "outcome" => outcome.label()).increment(1);
            outcomes.push((
                id as i64,
                Some(result.attempt as i32),
                self.completion(outcome, result.attempt as u32),
            ));
        }
        // Outcomes are the results of work done: recorded whenever the database answers
        // again, however long that takes (acknowledgements are fenced by attempt, so a late
        // one never overwrites a newer attempt). An error that is not the database being away
        // is tried a few times, then stops the worker: its rows return through their leases,
        // and a crash loop shows in `/readyz`.
        let mut other_errors = 0;
        let updated = loop {
            match store::complete_attempts(&self.pool, worker.name(), &outcomes).await {
                Ok(updated) => {
                    self.db_ok();
                    break updated;
                }
                Err(e) if !database_unavailable(&e) && other_errors + 1 >= OTHER_ERROR_TRIES => {
                    tracing::error!(job.kind = %self.cfg.kind, error = %e, "cannot record {} outcomes; stopping this worker", outcomes.len());
                    return Err(e);
                }
                Err(e) => {
                    if !database_unavailable(&e) {
                        other_errors += 1;
                    }
                    tokio::time::sleep(self.db_failed("acknowledge", &e)).await
                }
            }
        };
        if (updated as usize) < outcomes.len() {
            tracing::warn!(
                job.kind = %self.cfg.kind,
                sent = outcomes.len(),
                updated,
                "{} outcomes arrived after their lease was lost; the jobs' new owners decide",
                outcomes.len() - updated as usize
            );
        }
        Ok(())
    }

    async fn push_tasks(&mut self, _tasks: Vec<Task<Args>>) -> Result<(), Error> {
        // Jobs are enqueued through `store::enqueue`, which applies dedup keys.
        Err(Error::Contended(
            "push through the queue::store functions".to_owned(),
        ))
    }
}

type Subscribers = Arc<Mutex<HashMap<String, Vec<futures::channel::mpsc::Sender<()>>>>>;

/// One LISTEN connection per process, fanned out to every backend of the notified kind.
#[derive(Clone)]
pub struct Notifier {
    subscribers: Subscribers,
}

impl Notifier {
    /// Starts listening. `PgListener` reconnects by itself; anything missed meanwhile is found
    /// by the poll interval.
    pub async fn start(pool: &PgPool) -> Result<Notifier, Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let subscribers: Subscribers = Arc::default();
        let fan_out = subscribers.clone();
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(note) => {
                        let Ok(mut map) = fan_out.lock() else { break };
                        if let Some(senders) = map.get_mut(note.payload()) {
                            // A full channel already holds a wake-up: bursts coalesce.
                            senders.retain_mut(|tx| match tx.try_send(()) {
                                Ok(()) => true,
                                Err(e) => !e.is_disconnected(),
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "job notification listener failed; polling meanwhile");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Notifier { subscribers })
    }

    fn subscribe(&self, kind: &str) -> Option<futures::channel::mpsc::Receiver<()>> {
        let (tx, rx) = futures::channel::mpsc::channel(0);
        self.subscribers
            .lock()
            .ok()?
            .entry(kind.to_owned())
            .or_default()
            .push(tx);
        Some(rx)
    }
}

/// An apalis backend over the `jobs` table for one kind.
pub struct PgJobs<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    inner: Persisted<JobsPersistence<Args>>,
    cfg: Arc<QueueConfig>,
    pool: PgPool,
    notifier: Option<Notifier>,
    notify_rx: Option<futures::channel::mpsc::Receiver<()>>,
    interval: Option<futures_timer::Delay>,
    wake_pending: bool,
    keeper_guard: Option<Arc<()>>,
    release: Option<BoxSyncFuture<Result<u64, Error>>>,
}

impl<Args> Clone for PgJobs<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    fn clone(&self) -> Self {
        PgJobs {
            inner: self.inner.clone(),
            cfg: self.cfg.clone(),
            pool: self.pool.clone(),
            notifier: self.notifier.clone(),
            notify_rx: None,
            interval: None,
            wake_pending: false,
            keeper_guard: None,
            release: None,
        }
    }
}

impl<Args> PgJobs<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    /// A backend for `cfg.kind`.
    pub fn new(pool: &PgPool, cfg: QueueConfig) -> PgJobs<Args> {
        let cfg = Arc::new(cfg);
        PgJobs {
            inner: Persisted::new(JobsPersistence {
                pool: pool.clone(),
                cfg: cfg.clone(),
                outage: Arc::default(),
                orphans: Arc::default(),
                _args: PhantomData,
            }),
            cfg,
            pool: pool.clone(),
            notifier: None,
            notify_rx: None,
            interval: None,
            wake_pending: false,
            keeper_guard: None,
            release: None,
        }
    }

    /// Wake up at once when a job of this kind is enqueued anywhere.
    pub fn with_notifier(mut self, notifier: &Notifier) -> PgJobs<Args> {
        self.notifier = Some(notifier.clone());
        self
    }

    /// Renews this worker's leases and rescues expired ones every heartbeat, for as long as
    /// the backend instance lives. It has a connection of its own: renewals never queue behind
    /// the handlers for the shared pool. After the database comes back from an outage it
    /// rescues nothing for one lease period, so every live worker of every replica has renewed
    /// its heartbeat before a job is taken from it.
    fn spawn_keeper(&mut self, worker: &WorkerContext) {
        if let Some((_, rest)) = worker.name().split_once('@')
            && let Some((process, _)) = rest.rsplit_once("-w")
        {
            crate::lease::ensure_checker(&self.pool, process, self.cfg.heartbeat);
        }
        let guard = Arc::new(());
        let alive: Weak<()> = Arc::downgrade(&guard);
        self.keeper_guard = Some(guard);
        let (pool, cfg, name) = (
            self.pool.clone(),
            self.cfg.clone(),
            worker.name().to_owned(),
        );
        tokio::spawn(async move {
            let mut conn: Option<sqlx::PgConnection> = None;
            let mut healthy_since: Option<std::time::Instant> = None;
            loop {
                tokio::time::sleep(cfg.heartbeat).await;
                if alive.upgrade().is_none() {
                    break;
                }
                let renewed = async {
                    if conn.is_none() {
                        conn = Some(
                            <sqlx::PgConnection as sqlx::Connection>::connect_with(
                                &*pool.connect_options(),
                            )
                            .await?,
                        );
                    }
                    let c = conn.as_mut().expect("connected just above");
                    store::heartbeat(c, &name, cfg.lease).await
                };
                // A half-open connection must not stall renewals for minutes.
                let renewed =
                    tokio::time::timeout(cfg.heartbeat.max(Duration::from_secs(5)), renewed)
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::Contended("lease renewal timed out".to_owned()))
                        });
                match renewed {
                    Ok(_) => {
                        healthy_since.get_or_insert_with(std::time::Instant::now);
                    }
                    Err(e) => {
                        tracing::warn!(worker = %name, error = %e, "lease renewal failed");
                        conn = None;
                        healthy_since = None;
                        continue;
                    }
                }
                if healthy_since.is_none_or(|t| t.elapsed() < cfg.lease) {
                    continue;
                }
                let Some(c) = conn.as_mut() else { continue };
                match store::rescue_expired(&mut *c, cfg.lease + cfg.heartbeat).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        rescued = n,
                        "returned {n} jobs whose worker stopped renewing its lease"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "lease rescue failed");
                        conn = None;
                    }
                }
            }
        });
    }

    /// Registers the waker with NOTIFY and the poll interval; true if either fired.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> bool {
        let mut fired = false;
        if self.notify_rx.is_none()
            && let Some(notifier) = &self.notifier
        {
            self.notify_rx = notifier.subscribe(&self.cfg.kind);
        }
        if let Some(rx) = &mut self.notify_rx {
            while let Poll::Ready(Some(())) = rx.poll_next_unpin(cx) {
                fired = true;
            }
        }
        let every = self.cfg.poll_interval;
        let delay = self
            .interval
            .get_or_insert_with(|| futures_timer::Delay::new(every));
        if delay.poll_unpin(cx).is_ready() {
            fired = true;
            let mut next = futures_timer::Delay::new(every);
            let _ = next.poll_unpin(cx);
            self.interval = Some(next);
        }
        fired
    }
}

impl<Args> Backend for PgJobs<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Task = Task<Args>;
    type Error = Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        if self.keeper_guard.is_none() {
            self.spawn_keeper(worker);
        }
        self.inner.poll_ready(cx, worker, self.cfg.heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<Args>, Error>>> {
        if self.poll_wake(cx) && !matches!(self.inner.state(), State::Ready) {
            // A wake-up during a fetch: that fetch may have missed the new row.
            self.wake_pending = true;
        }
        let polled = self.inner.poll_next(cx, worker);
        if polled.is_pending() && self.wake_pending && matches!(self.inner.state(), State::Ready) {
            self.wake_pending = false;
            cx.waker().wake_by_ref();
        }
        polled
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        if self.release.is_none() {
            match self.inner.poll_close(cx, worker) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            // In-flight work is finished and acknowledged: whatever is still running under our
            // name was claimed by a fetch that shutdown dropped. Give it back unspent.
            let (pool, name) = (self.pool.clone(), worker.name().to_owned());
            self.release = Some(
                async move {
                    let held: Vec<(i64,)> = sqlx::query_as(
                        "SELECT id FROM jobs WHERE locked_by = $1 AND state = 'running'",
                    )
                    .bind(&name)
                    .fetch_all(&pool)
                    .await?;
                    let ids: Vec<i64> = held.into_iter().map(|(id,)| id).collect();
                    let released = store::release(&pool, &name, &ids).await?;
                    store::stop_worker(&pool, &name).await?;
                    Ok(released)
                }
                .boxed()
                .into(),
            );
        }
        let Some(release) = self.release.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match release.poll_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.keeper_guard = None;
                Poll::Ready(result.map(|released| {
                    if released > 0 {
                        tracing::info!(released, "gave {released} claimed jobs back on shutdown");
                    }
                }))
            }
        }
    }
}

impl<Args> BackendConfig for PgJobs<Args>
where
    Args: DeserializeOwned + Send + 'static,
{
    type Args = Args;
    type Id = i64;
    // Tasks arrive decoded: no apalis codec step that could stop the worker.
    type Kind = Ephemeral;
    type Config = QueueConfig;
    type Layer = TaskPersistLayer<OutcomeCodec, Outcome>;

    fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        // The claim already marked the rows running: no per-task Lock event.
        self.inner
            .layer(OutcomeCodec, self.cfg.batch)
            .persist_results(true)
            .lock_tasks(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security review: a `Retry-After: 99999999999999` deferral panicked the backend
    /// (`DateTime + TimeDelta overflowed`) and stopped its worker.
    #[tokio::test]
    async fn a_delay_of_any_length_is_capped_never_a_panic() {
        let persistence: JobsPersistence<()> = JobsPersistence {
            pool: PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap(),
            cfg: Arc::new(QueueConfig::new("noop")),
            outage: Arc::default(),
            orphans: Arc::default(),
            _args: PhantomData,
        };
        let before = Utc::now();
        for after in [Duration::from_secs(99_999_999_999_999), Duration::MAX] {
            let Completion::Defer { at, .. } = persistence.completion(
                Outcome::Defer {
                    reason: "429".into(),
                    after,
                },
                1,
            ) else {
                panic!("a deferral stays a deferral");
            };
            let waited = (at - before).to_std().unwrap();
            assert!(waited <= MAX_DELAY + Duration::from_secs(5), "{waited:?}");
            assert!(waited >= MAX_DELAY - Duration::from_secs(5), "{waited:?}");
        }
    }
}
