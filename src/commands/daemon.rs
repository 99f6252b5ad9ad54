//! `p100-recon daemon`: workers, the scheduler and the HTTP endpoint until SIGINT/SIGTERM,
//! then a drain within the grace period.

use clap::Args;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

use anyhow::Context;
use jobs::JobContext;
use jobs::kinds::Kind;
use jobs::schedule::ScheduleFile;
use tokio::sync::watch;

use crate::UsageError;

use crate::http::HttpState;
use crate::settings::Settings;
use crate::worker::{self, WorkerOptions};
use jobs::context::P100Health;

/// `daemon` arguments.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Schedule and per-kind limits [default: jobs/schedule.toml, else the built-in copy].
    #[arg(long, value_name = "FILE")]
    pub schedule: Option<PathBuf>,
    /// How long shutdown waits for in-flight jobs before leaving them to be rescued.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub grace: String,
    /// How long a claimed job stays claimed without renewal (a crashed daemon's jobs return
    /// to the queue after this).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub lease: String,
    /// Lease renewal and rescue cadence.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub heartbeat: String,
    /// Idle poll interval (NOTIFY wakes workers at once; this is the safety net).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub poll_interval: String,
    /// Finished (done, cancelled) jobs, and webhook deliveries acted on, are deleted after this
    /// age.
    #[arg(long, default_value = "168h", value_name = "DURATION")]
    pub prune_done_after: String,
    /// Dead jobs are deleted after this age.
    #[arg(long, default_value = "720h", value_name = "DURATION")]
    pub prune_dead_after: String,
    /// Workers per job kind in this process.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub workers_per_kind: usize,
    /// Only these job kinds (comma-separated) [default: all].
    #[arg(long, value_name = "KINDS")]
    pub kinds: Option<String>,
    /// Most database connections of the pool (default: sized from P100_MAX_RPS, 20–100); with
    /// several replicas, keep their sum under the server's max_connections.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
}

/// Connections of the operator console's own pool.
const CONSOLE_CONNECTIONS: u32 = 4;

/// The schedule file shipped with the binary, used when `jobs/schedule.toml` is not present.
pub const DEFAULT_SCHEDULE: &str = include_str!("../../jobs/schedule.toml");
/// Where the daemon looks for the schedule file by default.
pub const DEFAULT_SCHEDULE_PATH: &str = "jobs/schedule.toml";

/// Loads the schedule file: an explicit path must exist; the default path may be absent, then
/// the built-in copy applies.
pub fn load_schedule(path: Option<&Path>) -> Result<ScheduleFile, UsageError> {
    match path {
        Some(path) => ScheduleFile::load(path).map_err(|e| UsageError(e.0)),
        None if Path::new(DEFAULT_SCHEDULE_PATH).exists() => {
            ScheduleFile::load(Path::new(DEFAULT_SCHEDULE_PATH)).map_err(|e| UsageError(e.0))
        }
        None => ScheduleFile::parse(DEFAULT_SCHEDULE, "built-in jobs/schedule.toml")
            .map_err(|e| UsageError(e.0)),
    }
}

fn duration(flag: &str, text: &str) -> Result<Duration, UsageError> {
    jobs::schedule::parse_duration(text).map_err(|e| UsageError(format!("--{flag}: {e}")))
}

pub async fn run(settings: &Settings, args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let client = settings.p100_client().map_err(UsageError::from)?;
    let mut schedule = load_schedule(args.schedule.as_deref())?;
    let options = WorkerOptions {
        lease: duration("lease", &args.lease)?,
        heartbeat: duration("heartbeat", &args.heartbeat)?,
        poll_interval: duration("poll-interval", &args.poll_interval)?,
        workers_per_kind: args.workers_per_kind.max(1),
        max_batch: 100,
        grace: duration("grace", &args.grace)?,
        health: crate::worker::WorkerHealth::default(),
    };
    if options.heartbeat >= options.lease {
        return Err(UsageError("--heartbeat must be shorter than --lease".into()).into());
    }
    // Who may sign in to the console is read first: a bad file stops the start, not a sign-in.
    let console_tokens = match &settings.console_tokens_file {
        Some(path) => Some(Arc::new(
            crate::console::Tokens::load(path).map_err(UsageError)?,
        )),
        None => None,
    };
    let prune_done = duration("prune-done-after", &args.prune_done_after)?;
    let prune_dead = duration("prune-dead-after", &args.prune_dead_after)?;
    let kinds: Vec<Kind> = match &args.kinds {
        None => Kind::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|name| {
                Kind::parse(name.trim())
                    .ok_or_else(|| UsageError(format!("--kinds: unknown job kind {name:?}")))
            })
            .collect::<Result<_, _>>()?,
    };

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;

    // Migrated first: the budget's membership lives in the database.
    let identity = worker::process_identity();
    let (mut conn, connect_options) = crate::db::connect_one(url).await?;
    crate::db::migrate_on(&mut conn).await?;
    let membership = match settings.p100_budget {
        crate::budget::Mode::Deployment => Some(
            crate::budget::join(conn, connect_options, client.clone(), identity.to_owned())
                .await
                .context("cannot join the deployment's P100 budget")?,
        ),
        crate::budget::Mode::Process => {
            sqlx::Connection::close(conn).await.ok();
            None
        }
    };

    // The credentials are checked once, here: a rejected key ends the daemon before any job
    // burns its attempts on it.
    let asked = std::time::Instant::now();
    let p100_state = match client.balances(&p100::Scope::Partner).await {
        Ok(_) => P100Health::Reachable,
        Err(e) if e.class == p100::ErrorClass::Auth => {
            anyhow::bail!(
                "P100 rejected the API key at {} ({}): check P100_API_KEY and, in production, the IP allow-list",
                settings.p100_base_url,
                e.message.as_deref().unwrap_or("HTTP 401")
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "P100 is not answering at start; jobs will retry with backoff");
            P100Health::Unreachable
        }
    };

    // Kinds sized by the budget (`concurrency = "budget"`) get enough jobs in flight to keep
    // P100_MAX_RPS busy at the latency P100 just showed (1 s assumed when it did not answer).
    let latency = match p100_state {
        P100Health::Reachable => asked.elapsed(),
        _ => std::time::Duration::from_secs(1),
    };
    schedule.size_by_budget(client.max_rps(), latency);
    let sync_concurrency = schedule.limits(Kind::TxSync).concurrency;
    tracing::info!(
        p100_latency_ms = latency.as_millis() as u64,
        tx_sync_concurrency = sync_concurrency,
        "tx_sync runs {sync_concurrency} jobs at once for P100_MAX_RPS {}",
        client.max_rps()
    );
    let schedule = Arc::new(schedule);
    // A sync holds a connection only while it commits a page; half its slots is ample.
    let pool_size = match args.max_connections {
        Some(0) => return Err(UsageError("--max-connections must be at least 1".into()).into()),
        Some(n) => n,
        None => (20 + sync_concurrency / 2).min(100) as u32,
    };
    let pool = crate::db::connect(url, pool_size).await?;
    let kind_names: Vec<String> = kinds.iter().map(|k| k.name().to_owned()).collect();

    let health = Arc::new(AtomicU8::new(p100_state as u8));
    if settings.p100_webhook_token.is_none() {
        tracing::warn!(
            "P100_WEBHOOK_TOKEN is not set: webhook routes answer 503 and state changes wait for the next poll"
        );
    }
    let webhooks = crate::webhooks::Receiver {
        pool: pool.clone(),
        token: settings.p100_webhook_token.clone().map(Arc::new),
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    let http_state = HttpState {
        pool: pool.clone(),
        metrics,
        p100: health.clone(),
        workers: options.health.clone(),
        webhooks: webhooks.clone(),
    };
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen on HTTP_ADDR {}", settings.http_addr))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let http = {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, crate::http::router(http_state))
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP endpoint failed: {e}");
            }
        })
    };
    let console = match console_tokens {
        Some(tokens) => {
            let listener = tokio::net::TcpListener::bind(settings.console_addr)
                .await
                .with_context(|| {
                    format!("cannot listen on CONSOLE_ADDR {}", settings.console_addr)
                })?;
            if !settings.console_addr.ip().is_loopback() {
                tracing::warn!(
                    console_addr = %settings.console_addr,
                    "the console listens beyond loopback on {}: serve it only behind TLS",
                    settings.console_addr
                );
            }
            tracing::info!(
                console_addr = %settings.console_addr,
                operators = tokens.count(crate::console::Role::Operator),
                viewers = tokens.count(crate::console::Role::Viewer),
                "operator console on http://{}",
                settings.console_addr
            );
            // A pool of its own: operators refreshing pages never take the workers' connections.
            let console_pool = crate::db::connect(url, CONSOLE_CONNECTIONS).await?;
            let router = crate::console::router(crate::console::Console {
                pool: console_pool,
                tokens,
                p100: health.clone(),
                schedule: schedule.clone(),
            });
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.changed().await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "console failed: {e}");
                }
            }))
        }
        None => {
            tracing::info!("the operator console is off: CONSOLE_TOKENS_FILE is not set");
            None
        }
    };
    let scheduler = tokio::spawn(jobs::scheduler::run(
        pool.clone(),
        schedule.clone(),
        stop_rx.clone(),
    ));
    let inbox = tokio::spawn(crate::webhooks::run_inbox(
        pool.clone(),
        schedule.clone(),
        webhooks.wake.clone(),
        stop_rx.clone(),
    ));
    let pruner = tokio::spawn(prune_loop(
        pool.clone(),
        prune_done,
        prune_dead,
        stop_rx.clone(),
    ));

    tracing::info!(
        worker = identity,
        http_addr = %settings.http_addr,
        kinds = ?kind_names,
        schedules = schedule.schedules.len(),
        "daemon {identity} running {} job kinds and {} schedules; HTTP on {}",
        kinds.len(),
        schedule.schedules.len(),
        settings.http_addr
    );

    let ctx = JobContext {
        pool: pool.clone(),
        p100: Some(client),
        schedule,
        p100_health: health,
        report_dir: settings.report_dir.clone(),
        runs: Default::default(),
    };
    let stop_for_signal = stop_tx.clone();
    let grace = options.grace;
    let result = worker::run(ctx, &kinds, &options, |k| k.name().to_owned(), async move {
        super::shutdown_signal().await;
        tracing::info!(
            "shutdown requested; draining in-flight jobs for up to {}s",
            grace.as_secs()
        );
        let _ = stop_for_signal.send(true);
    })
    .await;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(http, scheduler, inbox, pruner);
    if let Some(console) = console {
        let _ = console.await;
    }
    if let Some(membership) = membership {
        membership.leave().await;
    }
    result?;
    tracing::info!("daemon stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

async fn prune_loop(
    pool: ledger::PgPool,
    done_age: Duration,
    dead_age: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        loop {
            match queue::store::prune(&pool, done_age, dead_age, 10_000).await {
                Ok(0) => break,
                Ok(n) => tracing::info!(pruned = n, "pruned {n} finished jobs"),
                Err(e) => {
                    tracing::warn!(error = %e, "pruning finished jobs failed");
                    break;
                }
            }
        }
        // P100's deliveries are kept as long as finished jobs, once acted on.
        loop {
            match ledger::webhooks::prune(&pool, done_age, 10_000).await {
                Ok(0) => break,
                Ok(n) => tracing::info!(pruned = n, "pruned {n} webhook deliveries"),
                Err(e) => {
                    tracing::warn!(error = %e, "pruning webhook deliveries failed");
                    break;
                }
            }
        }
        // Ticks are kept as long as finished jobs; each schedule's latest stays.
        match queue::store::prune_ticks(&pool, done_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned {n} schedule ticks"),
            Err(e) => tracing::warn!(error = %e, "pruning schedule ticks failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            _ = stop.changed() => return,
        }
    }
}
