//! The apalis monitor: one worker per job kind (or several, for throughput), each on our
//! Postgres backend, with panics caught, concurrency and timeout from `jobs/schedule.toml`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{Monitor, WorkerBuilder};
use jobs::JobContext;
use jobs::handler::{Job, handle};
use jobs::kinds::{Kind, KindVisitor};
use queue::{Backoff, Notifier, PgJobs, QueueConfig};

/// Knobs of the worker layer (the daemon's flags).
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Claims last this long without renewal.
    pub lease: Duration,
    /// Lease renewal and rescue cadence.
    pub heartbeat: Duration,
    /// Idle poll interval.
    pub poll_interval: Duration,
    /// Workers per kind in this process.
    pub workers_per_kind: usize,
    /// Upper bound on rows claimed per fetch.
    pub max_batch: usize,
    /// How long shutdown waits for in-flight jobs.
    pub grace: Duration,
    /// Which workers run, for `/readyz` and `worker_up`.
    pub health: WorkerHealth,
}

/// Restarts of one worker allowed within [`RESTART_WINDOW`]; beyond that it stays down (a
/// crash loop), `/readyz` says so, and when no worker is left the daemon exits non-zero.
const MAX_RESTARTS_IN_WINDOW: usize = 10;
const RESTART_WINDOW: Duration = Duration::from_secs(600);

/// Workers running per kind, against workers started, shared with the HTTP endpoint.
#[derive(Debug, Clone, Default)]
pub struct WorkerHealth {
    inner: Arc<Mutex<HealthState>>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// kind → (running, expected).
    kinds: BTreeMap<String, (usize, usize)>,
    /// worker (without its restart number) → recent restarts.
    restarts: HashMap<String, VecDeque<Instant>>,
}

impl WorkerHealth {
    fn expect(&self, kind: &str, workers: usize) {
        if let Ok(mut h) = self.inner.lock() {
            h.kinds.entry(kind.to_owned()).or_default().1 += workers;
        }
        metrics::gauge!("worker_up", "kind" => kind.to_owned()).set(0.0);
    }

    fn started(&self, kind: &str) {
        self.adjust(kind, true);
    }

    fn adjust(&self, kind: &str, up: bool) {
        let Ok(mut h) = self.inner.lock() else { return };
        let entry = h.kinds.entry(kind.to_owned()).or_default();
        entry.0 = if up {
            entry.0 + 1
        } else {
            entry.0.saturating_sub(1)
        };
        metrics::gauge!("worker_up", "kind" => kind.to_owned()).set(if entry.0 > 0 {
            1.0
        } else {
            0.0
        });
    }

    /// A worker stopped on an error: whether it may start again (not a crash loop).
    fn stopped(&self, kind: &str, worker: &str) -> bool {
        self.adjust(kind, false);
        let Ok(mut h) = self.inner.lock() else {
            return false;
        };
        let base = worker
            .rsplit_once("-r")
            .map_or(worker, |(b, _)| b)
            .to_owned();
        let recent = h.restarts.entry(base).or_default();
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        recent.len() <= MAX_RESTARTS_IN_WINDOW
    }

    /// Kinds with fewer workers running than started (empty when all run).
    pub fn down(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|h| {
                h.kinds
                    .iter()
                    .filter(|(_, (up, expected))| up < expected)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            workers_per_kind: 1,
            max_batch: 100,
            grace: Duration::from_secs(30),
            health: WorkerHealth::default(),
        }
    }
}

/// The machine's name, for worker records.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// This process's identity: host, pid and start time, so a restarted process never reuses a
/// crashed one's name (its jobs would never be rescued).
pub fn process_identity() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let host = hostname();
        let started = chrono::Utc::now().timestamp_micros();
        format!("{host}-{}-{started:x}", std::process::id())
    })
}

/// Runs the workers of `kinds` until `shutdown` resolves, then drains within the grace period.
pub async fn run(
    ctx: JobContext,
    kinds: &[Kind],
    options: &WorkerOptions,
    queue_name: impl Fn(Kind) -> String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let notifier = Notifier::start(&ctx.pool).await?;
    let ctx_pool = ctx.pool.clone();
    let mut registrar = Registrar {
        monitor: Some(Monitor::new()),
        ctx: &ctx,
        notifier: &notifier,
        options,
        queue_name: &queue_name,
    };
    for kind in kinds {
        kind.visit(&mut registrar);
    }
    let monitor = registrar
        .monitor
        .take()
        .expect("the registrar holds the monitor");
    let health = options.health.clone();
    let requested = Arc::new(AtomicBool::new(false));
    let requested_by_signal = requested.clone();
    // A kind that crash-loops cannot recover in this process: the daemon drains and exits
    // non-zero, so its supervisor restarts it (and says so), instead of running on without it.
    let (gave_up, mut gave_up_rx) = tokio::sync::watch::channel(false);
    monitor
        .should_restart(move |worker, error| {
            let kind = worker.name().split('@').next().unwrap_or_default();
            // Database outages are ridden out inside the backend; a worker stops only on
            // something else. It restarts, unless it is crash-looping.
            let again = health.stopped(kind, worker.name());
            tracing::error!(worker = worker.name(), %error, restart = again, "worker stopped: {error}");
            if !again {
                let _ = gave_up.send(true);
            }
            again
        })
        .shutdown_timeout(options.grace)
        .run_with_signal(async move {
            tokio::select! {
                () = shutdown => requested_by_signal.store(true, Ordering::SeqCst),
                _ = gave_up_rx.wait_for(|g| *g) => {}
            }
            Ok(())
        })
        .await?;
    if requested.load(Ordering::SeqCst) {
        // The grace period is over: jobs still running here would otherwise wait out their
        // lease elsewhere and lose an attempt (three deploys in a night made the nightly run
        // dead). They are given back unspent; side effects are safe to resume (an exchange
        // records SUBMITTING before it calls P100 and never submits again).
        match queue::store::release_process(&ctx_pool, process_identity()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                released = n,
                "gave back {n} jobs still running after the grace period, unspent"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot give back the jobs still running; their leases will return them")
            }
        }
    } else {
        anyhow::bail!(
            "workers stopped without a shutdown request and could not be restarted (kinds \
             down: {}); exiting so the supervisor restarts the daemon",
            options.health.down().join(", ")
        );
    }
    Ok(())
}

/// Jobs one apalis worker runs of a budget-sized kind. A worker claims a batch, runs it and
/// acknowledges it before it claims again, so one slow job holds up its whole batch; small
/// batches over several workers keep the P100 budget busy (`bench cycle`: 10,000 users at
/// 200 requests/s used 75 % of the budget while syncing with one worker of 17).
const BUDGET_SLICE: usize = 4;

/// (workers, concurrency of each) for a kind.
fn split(concurrency: usize, from_budget: bool, options: &WorkerOptions) -> (usize, usize) {
    let workers = options.workers_per_kind.max(1);
    if from_budget {
        let workers = workers.max(concurrency.div_ceil(BUDGET_SLICE));
        (workers, concurrency.div_ceil(workers))
    } else {
        (workers, concurrency.max(1))
    }
}

/// Registers each visited kind's workers with the monitor.
struct Registrar<'a, F: Fn(Kind) -> String> {
    monitor: Option<Monitor>,
    ctx: &'a JobContext,
    notifier: &'a Notifier,
    options: &'a WorkerOptions,
    queue_name: &'a F,
}

impl<F: Fn(Kind) -> String> KindVisitor for Registrar<'_, F> {
    fn visit<J: Job>(&mut self) {
        if let Some(monitor) = self.monitor.take() {
            self.monitor = Some(register::<J>(
                monitor,
                self.ctx,
                self.notifier,
                self.options,
                (self.queue_name)(J::KIND),
            ));
        }
    }
}

fn register<J: Job>(
    monitor: Monitor,
    ctx: &JobContext,
    notifier: &Notifier,
    options: &WorkerOptions,
    queue_name: String,
) -> Monitor
where
    J::Args: serde::Serialize,
{
    let limits = ctx.schedule.limits(J::KIND);
    let (workers, per_worker) = split(limits.concurrency, limits.from_budget, options);
    let config = QueueConfig {
        kind: queue_name.clone(),
        batch: per_worker.min(options.max_batch).max(1),
        lease: options.lease,
        heartbeat: options.heartbeat,
        poll_interval: options.poll_interval,
        backoff: Backoff {
            base: limits.backoff_base,
            max: limits.backoff_max,
            jitter: 0.5,
        },
        max_deferrals: limits.max_deferrals as i32,
        host: hostname(),
    };
    let backend = PgJobs::<J::Args>::new(&ctx.pool, config).with_notifier(notifier);
    let mut monitor = monitor;
    options.health.expect(&queue_name, workers);
    for index in 0..workers {
        let (backend, ctx, name) = (backend.clone(), ctx.clone(), queue_name.clone());
        let health = options.health.clone();
        monitor = monitor.register(move |restarts| {
            health.started(&name);
            WorkerBuilder::new(format!(
                "{name}@{}-w{index}-r{restarts}",
                process_identity()
            ))
            .backend(backend.clone())
            .data(ctx.clone())
            .catch_panic()
            .concurrency(per_worker)
            .timeout(limits.timeout)
            .enable_tracing()
            .build(handle::<J>)
        });
    }
    monitor
}
