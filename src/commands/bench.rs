//! `p100-recon bench …`: measurements with a baseline from the same run, as one JSON line.

use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobs::JobContext;
use jobs::kinds::Kind;
use jobs::schedule::{KindLimits, ScheduleFile};
use queue::NewJob;

use crate::UsageError;

use crate::settings::Settings;
use crate::worker::{self, WorkerOptions};

/// `bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// No-op jobs through the project's queue, against a raw batched SKIP LOCKED loop.
    Queue(BenchQueueArgs),
    /// Generated P100 history synced into the ledger through the real client and job, against
    /// a raw COPY of the same rows into the same tables. Runs in a scratch database it drops.
    Ingest(BenchIngestArgs),
    /// One full reconciliation of N accounts (P100 balances served by the sandbox without a
    /// rate limit), against a raw GROUP BY over the same entries.
    Reconcile(BenchReconcileArgs),
    /// One full cycle (every history synced, one reconciliation, the report) of N generated
    /// users through K daemon processes against the sandbox limited to R requests per second,
    /// against the lower bound of P100 calls (SPEC §9.1). Runs in a scratch database it drops.
    Cycle(BenchCycleArgs),
    /// The webhook receiver: deliveries stored and answered per second (against the same HTTP
    /// server answering without storing), with every one counted afterwards; and, with
    /// `--latency`, seconds from a sandbox state change to the local state, with webhooks and
    /// with polling only. Runs in a scratch database it drops.
    Webhooks(BenchWebhooksArgs),
}

/// `bench webhooks` arguments.
#[derive(Debug, Args)]
pub struct BenchWebhooksArgs {
    /// Deliveries to send (one in ten a repeat of an earlier one).
    #[arg(long, default_value_t = 20_000)]
    pub deliveries: usize,
    /// Deliveries in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Also measure the latency from a sandbox change to the local state: this many users
    /// whose KYC progresses and as many SEPA transfers, through a daemon, with webhooks and
    /// with polling only.
    #[arg(long, value_name = "UNITS")]
    pub latency: Option<usize>,
}

/// `bench cycle` arguments.
#[derive(Debug, Args)]
pub struct BenchCycleArgs {
    /// Generated users (1–3 currencies each, histories of 0–60 rows, 1 in 97 over 150).
    #[arg(long, default_value_t = 2_000)]
    pub users: usize,
    /// The sandbox's rate limit, requests per second (the deployment's P100_MAX_RPS).
    #[arg(long, default_value_t = 200)]
    pub rps: u32,
    /// Daemon processes on the one database, sharing the rps budget (P100_BUDGET=deployment).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Instead of one cycle: H hours of the schedule in simulated time (partner sync every
    /// 5 minutes, user sweep every 10, the nightly sync and reconciliation at the end), run in
    /// this process on a generated day of traffic; reports P100 requests per simulated day
    /// against the bound (every new row read once). Use with a small `--users` (e.g. 100).
    #[arg(long)]
    pub steady_hours: Option<u32>,
    /// With `--steady-hours`: partner history rows P100 adds per simulated day.
    #[arg(long, default_value_t = 200_000)]
    pub partner_rows_per_day: u64,
    /// With `--steady-hours`: history rows each user gains per simulated day.
    #[arg(long, default_value_t = 10)]
    pub user_rows_per_day: u64,
    /// With `--steady-hours`: simulated hours run before measuring, so the measured hours sit
    /// inside the daily deep re-read's period as in a long-running deployment.
    #[arg(long, default_value_t = 12)]
    pub warmup_hours: u32,
    /// With `--steady-hours`: how far back each sync reads (`fixed`: 24 h behind the cursor
    /// on every run, the behaviour before the overlap policy).
    #[arg(long, value_enum, default_value_t = BenchOverlap::Policy)]
    pub overlap: BenchOverlap,
}

/// How far back the syncs of `bench cycle --steady-hours` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOverlap {
    /// `tx_sync`'s policy: a minute behind the cursor, a day once a day of P100 time.
    Policy,
    /// 24 h behind the cursor on every run.
    Fixed,
}

/// `bench reconcile` arguments.
#[derive(Debug, Args)]
pub struct BenchReconcileArgs {
    /// (owner, currency) accounts: users × 4 currencies, plus the partner's.
    #[arg(long, default_value_t = 100_000)]
    pub accounts: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// `bench ingest` arguments.
#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// Transactions to generate and sync.
    #[arg(long, default_value_t = 100_000)]
    pub transactions: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// `bench queue` arguments.
#[derive(Debug, Args)]
pub struct BenchQueueArgs {
    /// Jobs to enqueue and process.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Finished jobs placed in the table first (the rate must hold as the table grows).
    #[arg(long, default_value_t = 0)]
    pub preload_done: usize,
    /// Workers in this process.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Rows claimed per fetch (and concurrency per worker).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
}

/// Queue names of the benchmark, apart from any daemon's real queues.
const BENCH_QUEUE: &str = "bench.noop";
const RAW_QUEUE: &str = "bench.raw";
const ENQUEUE_CHUNK: usize = 5_000;

pub async fn run(settings: &Settings, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Queue(args) => queue_bench(settings, args).await,
        BenchCommand::Ingest(args) => ingest_bench(settings, args).await,
        BenchCommand::Reconcile(args) => super::bench_reconcile::run(settings, args).await,
        BenchCommand::Cycle(args) => super::bench_cycle::run(settings, args).await,
        BenchCommand::Webhooks(args) => super::bench_webhooks::run(settings, args).await,
    }
}

async fn queue_bench(settings: &Settings, args: BenchQueueArgs) -> anyhow::Result<ExitCode> {
    if args.jobs == 0 || args.batch == 0 || args.workers == 0 {
        return Err(UsageError("--jobs, --batch and --workers must be at least 1".into()).into());
    }
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, (args.workers as u32) * 2 + 4).await?;
    crate::db::migrate(&pool).await?;
    cleanup(&pool).await?;
    // Earlier runs' deleted rows would otherwise be measured too (12M dead tuples halved both
    // rates once); a daemon relies on autovacuum for the same.
    sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;
    if args.preload_done > 0 {
        sqlx::query(
            "INSERT INTO jobs (kind, payload, state, max_attempts, attempts, runs, finished_at)
             SELECT $1, '{}', 'done', 1, 1, 1, now() FROM generate_series(1, $2)",
        )
        .bind(BENCH_QUEUE)
        .bind(args.preload_done as i64)
        .execute(&pool)
        .await?;
        sqlx::query("ANALYZE jobs").execute(&pool).await?;
    }

    // Enqueue through the queue's own batched insert.
    let payload = serde_json::json!({});
    let started = Instant::now();
    enqueue_all(&pool, BENCH_QUEUE, args.jobs, &payload).await?;
    let enqueue_secs = started.elapsed().as_secs_f64();

    // Process through apalis workers on our backend.
    let mut kinds = BTreeMap::new();
    kinds.insert(
        Kind::Noop,
        KindLimits {
            concurrency: args.batch,
            timeout: Duration::from_secs(60),
            max_attempts: 3,
            ..KindLimits::default()
        },
    );
    let ctx = JobContext {
        pool: pool.clone(),
        p100: None,
        schedule: Arc::new(ScheduleFile {
            kinds,
            schedules: vec![],
        }),
        p100_health: Arc::default(),
        report_dir: settings.report_dir.clone(),
        runs: Default::default(),
    };
    let options = WorkerOptions {
        workers_per_kind: args.workers,
        max_batch: args.batch,
        grace: Duration::from_secs(10),
        ..WorkerOptions::default()
    };
    // Throughput is measured to the moment the queue is drained; worker shutdown is not work.
    let started = Instant::now();
    let watcher = pool.clone();
    let drained_after = Arc::new(std::sync::Mutex::new(None));
    let record = drained_after.clone();
    let drain = async move {
        while !drained(&watcher, BENCH_QUEUE).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Ok(mut slot) = record.lock() {
            *slot = Some(started.elapsed());
        }
    };
    worker::run(
        ctx,
        &[Kind::Noop],
        &options,
        |_| BENCH_QUEUE.to_owned(),
        drain,
    )
    .await?;
    let shutdown_secs = started.elapsed().as_secs_f64();
    let process_secs = drained_after
        .lock()
        .ok()
        .and_then(|d| *d)
        .map_or(shutdown_secs, |d| d.as_secs_f64());
    let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = $1 AND state = 'done' AND runs = 1 AND attempts = 1")
        .bind(BENCH_QUEUE)
        .fetch_one(&pool)
        .await?;
    let expected = (args.jobs + args.preload_done) as i64;
    if processed != expected {
        anyhow::bail!("benchmark invalid: {processed} of {expected} jobs done exactly once");
    }

    // Baseline: a raw batched FOR UPDATE SKIP LOCKED loop on the same table, same concurrency.
    enqueue_all(&pool, RAW_QUEUE, args.jobs, &payload).await?;
    let started = Instant::now();
    let loops: Vec<_> = (0..args.workers)
        .map(|i| tokio::spawn(raw_loop(pool.clone(), format!("raw-{i}"))))
        .collect();
    for handle in loops {
        handle.await??;
    }
    let baseline_secs = started.elapsed().as_secs_f64();
    cleanup(&pool).await?;

    let per_s = |secs: f64| (args.jobs as f64 / secs).round();
    println!(
        "{}",
        serde_json::json!({
            "jobs": args.jobs,
            "enqueue_per_s": per_s(enqueue_secs),
            "process_per_s": per_s(process_secs),
            "baseline_process_per_s": per_s(baseline_secs),
            "ratio_to_baseline": ((baseline_secs / process_secs) * 100.0).round() / 100.0,
            "preloaded_done": args.preload_done,
            "shutdown_s": ((shutdown_secs - process_secs) * 100.0).round() / 100.0,
            "workers": args.workers,
            "batch": args.batch,
        })
    );
    Ok(ExitCode::SUCCESS)
}

async fn enqueue_all(
    pool: &ledger::PgPool,
    kind: &str,
    n: usize,
    payload: &serde_json::Value,
) -> anyhow::Result<()> {
    let job = NewJob {
        kind: kind.to_owned(),
        payload: payload.clone(),
        dedup_key: None,
        run_at: None,
        max_attempts: 3,
    };
    let mut left = n;
    let mut conn = pool.acquire().await?;
    while left > 0 {
        let chunk = left.min(ENQUEUE_CHUNK);
        queue::store::enqueue_many(&mut conn, &vec![job.clone(); chunk]).await?;
        left -= chunk;
    }
    Ok(())
}

async fn drained(pool: &ledger::PgPool, kind: &str) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT NOT EXISTS (SELECT 1 FROM jobs WHERE kind = $1 AND state IN ('pending', 'failed', 'running'))",
    )
    .bind(kind)
    .fetch_one(pool)
    .await
    .unwrap_or(false)
}

async fn raw_loop(pool: ledger::PgPool, name: String) -> anyhow::Result<()> {
    loop {
        let ids: Vec<i64> = sqlx::query_scalar(
            r#"
            WITH next AS (
                SELECT id FROM jobs
                 WHERE kind = $1 AND state IN ('pending', 'failed') AND run_at <= now()
                 ORDER BY run_at, id LIMIT 1000 FOR UPDATE SKIP LOCKED)
            UPDATE jobs j SET state = 'running', locked_by = $2, attempts = j.attempts + 1,
                              locked_until = now() + interval '30 seconds'
              FROM next WHERE j.id = next.id
            RETURNING j.id
            "#,
        )
        .bind(RAW_QUEUE)
        .bind(&name)
        .fetch_all(&pool)
        .await?;
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE jobs SET state = 'done', locked_by = NULL, locked_until = NULL, finished_at = now(), runs = runs + 1 WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&pool)
            .await?;
    }
}

async fn cleanup(pool: &ledger::PgPool) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM jobs WHERE kind IN ($1, $2)")
        .bind(BENCH_QUEUE)
        .bind(RAW_QUEUE)
        .execute(pool)
        .await?;
    Ok(())
}

/// Peak resident memory of this process so far (VmHWM), in MB.
pub(super) fn peak_rss_mb() -> Option<f64> {
    peak_rss_mb_of("self")
}

/// Peak resident memory (VmHWM) of process `pid` (or `self`), in MB.
pub(super) fn peak_rss_mb_of(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

async fn ingest_bench(settings: &Settings, args: BenchIngestArgs) -> anyhow::Result<ExitCode> {
    if args.transactions == 0 {
        return Err(UsageError("--transactions must be at least 1".into()).into());
    }
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let line = in_scratch_database(
        url,
        |scratch| async move { ingest_in(&scratch, &args).await },
    )
    .await?;
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// Runs `work` against a scratch database it creates and drops: the ledger is append-only,
/// so a benchmark cannot clean up after itself otherwise.
pub(super) async fn in_scratch_database<F, Fut>(
    url: &str,
    work: F,
) -> anyhow::Result<serde_json::Value>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<serde_json::Value>>,
{
    let admin = crate::db::connect(url, 1).await?;
    let scratch = format!("p100_recon_bench_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {scratch}")))
        .execute(&admin)
        .await?;
    let mut scratch_url = url::Url::parse(url)?;
    scratch_url.set_path(&scratch);
    let result = work(scratch_url.to_string()).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    result
}

async fn ingest_in(url: &str, args: &BenchIngestArgs) -> anyhow::Result<serde_json::Value> {
    let pool = crate::db::connect(url, 4).await?;
    crate::db::migrate(&pool).await?;
    let sandbox = p100_sandbox::Sandbox::generated(p100_sandbox::GeneratorConfig {
        seed: args.seed,
        users: 1,
        transactions: 0,
        partner_transactions: args.transactions,
        ..p100_sandbox::GeneratorConfig::default()
    })
    .spawn()
    .await?;
    let client = unlimited_client(&sandbox.base_url())?;

    let started = Instant::now();
    let summary = jobs::tx_sync::sync(
        &client,
        &pool,
        &ledger::Owner::Partner,
        jobs::tx_sync::Overlap::Policy,
    )
    .await?;
    let sync_secs = started.elapsed().as_secs_f64();
    let peak_rss_mb = peak_rss_mb();
    if summary.totals.new != args.transactions {
        anyhow::bail!(
            "benchmark invalid: stored {} transactions of {}",
            summary.totals.new,
            args.transactions
        );
    }
    drop(sandbox);

    // Baseline: every row the sync wrote (transactions with what they posted, their version
    // history, postings, entries) COPYed into the same tables, as another owner with fresh
    // ids and keys, so the same constraints, indexes and triggers apply.
    let mut conn = pool.acquire().await?;
    let (postings_offset, tx_offset): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COALESCE(max(id), 0) FROM ledger_postings), \
                (SELECT COALESCE(max(id), 0) FROM provider_transactions)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let exports = [
        (
            format!(
                "COPY (SELECT id + {tx_offset}, 'user', 'copy-baseline', provider_tx_id, kind, status, currency, amount, \
                 fee, reference, exchange_id, created_at, updated_at, payload, payload_hash, ledger_state, flags, \
                 'copy:' || posting_key, posted_amount, posted_fee, posted_currency FROM provider_transactions) TO STDOUT"
            ),
            "COPY provider_transactions (id, owner_kind, external_user_id, provider_tx_id, kind, status, currency, amount, \
             fee, reference, exchange_id, created_at, updated_at, payload, payload_hash, ledger_state, flags, \
             posting_key, posted_amount, posted_fee, posted_currency) FROM STDIN",
        ),
        (
            format!(
                "COPY (SELECT provider_transaction_id + {tx_offset}, change, status, payload_hash, payload, \
                 provider_updated_at FROM provider_transaction_events) TO STDOUT"
            ),
            "COPY provider_transaction_events (provider_transaction_id, change, status, payload_hash, payload, \
             provider_updated_at) FROM STDIN",
        ),
        (
            format!(
                "COPY (SELECT id + {postings_offset}, 'copy:' || idempotency_key, source, provider_tx_id, provider_status, \
                 description, effective_at FROM ledger_postings) TO STDOUT"
            ),
            "COPY ledger_postings (id, idempotency_key, source, provider_tx_id, provider_status, description, effective_at) FROM STDIN",
        ),
        (
            format!(
                "COPY (SELECT posting_id + {postings_offset}, account_id, currency, amount, effective_at FROM ledger_entries) TO STDOUT"
            ),
            "COPY ledger_entries (posting_id, account_id, currency, amount, effective_at) FROM STDIN",
        ),
    ];
    let mut data = Vec::new();
    for (export, _) in &exports {
        let mut bytes = Vec::new();
        let mut stream = conn.copy_out_raw(export).await?;
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            bytes.extend_from_slice(&chunk?);
        }
        drop(stream);
        data.push(bytes);
    }
    let started = Instant::now();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for ((_, import), bytes) in exports.iter().zip(&data) {
        let mut copy = tx.copy_in_raw(import).await?;
        copy.send(bytes.as_slice()).await?;
        copy.finish().await?;
    }
    tx.commit().await?;
    let copy_secs = started.elapsed().as_secs_f64();

    let per_s = |secs: f64| (args.transactions as f64 / secs).round();
    Ok(serde_json::json!({
        "transactions": args.transactions,
        "tx_per_s": per_s(sync_secs),
        "copy_tx_per_s": per_s(copy_secs),
        "ratio_to_copy": ((copy_secs / sync_secs) * 100.0).round() / 100.0,
        "peak_rss_mb": peak_rss_mb,
        "pages": summary.pages,
        "postings": summary.totals.posted,
    }))
}

/// A client of an in-process sandbox with no rate limit: benchmarks that count requests or
/// measure our side must not be paced by a limiter.
pub(crate) fn unlimited_client(sandbox_url: &str) -> anyhow::Result<p100::Client> {
    let mut config = p100::Config::new(
        sandbox_url.parse()?,
        p100::ApiKey::new(p100_sandbox::DEFAULT_API_KEY),
    );
    config.max_rps = std::num::NonZeroU32::MAX;
    Ok(p100::Client::new(config)?)
}
