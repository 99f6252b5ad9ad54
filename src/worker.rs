//! The apalis monitor: one worker per job kind (or several, for throughput), each on our
//! Postgres backend, with panics caught, concurrency and timeout from `jobs/schedule.toml`.

use std::sync::OnceLock;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{Monitor, WorkerBuilder};
use jobs::JobContext;
use jobs::handler::{
    ExchangeFinalize, IntakeSweep, Job, KycPoll, Noop, Reconcile, Report, SepaStatus, SyncSweep,
    TxSync, handle,
};
use jobs::kinds::Kind;
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
    let mut monitor = Monitor::new();
    for kind in kinds {
        monitor = match kind {
            Kind::Noop => register::<Noop>(monitor, &ctx, &notifier, options, queue_name(*kind)),
            Kind::TxSync => {
                register::<TxSync>(monitor, &ctx, &notifier, options, queue_name(*kind))
            }
            Kind::SyncSweep => {
                register::<SyncSweep>(monitor, &ctx, &notifier, options, queue_name(*kind))
            }
            Kind::KycPoll => {
                register::<KycPoll>(monitor, &ctx, &notifier, options, queue_name(*kind))
            }
            Kind::ExchangeFinalize => {
                register::<ExchangeFinalize>(monitor, &ctx, &notifier, options, queue_name(*kind))
            }
            Kind::SepaStatus => {
                register::<SepaStatus>(monitor, &ctx, &notifier, options, queue_name(*kind))
            }
            Kind::IntakeSweep => {
                register::<IntakeSweep>(monitor, &ctx, &notifier, options, queue_name(*kind))
            }
            Kind::Reconcile => {
                register::<Reconcile>(monitor, &ctx, &notifier, options, queue_name(*kind))
            }
            Kind::Report => {
                register::<Report>(monitor, &ctx, &notifier, options, queue_name(*kind))
            }
        };
    }
    monitor
        .should_restart(|worker, error| {
            tracing::error!(worker = worker.name(), %error, "worker stopped: {error}");
            // A worker stops only on errors its backend could not ride out; restart it, but
            // let a crash loop end the process so the orchestrator notices.
            worker.restarts() < 100
        })
        .shutdown_timeout(options.grace)
        .run_with_signal(async move {
            shutdown.await;
            Ok(())
        })
        .await?;
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
    for index in 0..workers {
        let (backend, ctx, name) = (backend.clone(), ctx.clone(), queue_name.clone());
        monitor = monitor.register(move |restarts| {
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
