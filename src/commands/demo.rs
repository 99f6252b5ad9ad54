//! `p100-recon demo`: the README's main command, the whole product in one run.
//!
//! Serves the built-in P100 sandbox (`scenarios/demo.toml`, with designed discrepancies),
//! which delivers its webhooks to the daemon's receiver served here; runs the daemon's workers
//! in this process; follows four users' KYC (one verified while the demo runs, one rejected,
//! one unknown at P100), five SEPA transfers (one succeeds and one fails while it runs, one
//! P100 never heard of) and one exchange it locks and finalizes; then the nightly chain (sync →
//! reconcile → report) through the queue. Prints one line per job kind (what it did, how
//! long, how many P100 requests), the webhooks, then the report summary. Every run starts
//! from an empty demo database (P100's side, the sandbox, starts afresh too), so a second run
//! shows the same cycle and finds the same discrepancies.

use clap::Args;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jobs::JobContext;
use jobs::kinds::Kind;
use ledger::Owner;
use ledger::intake::FirstJob;
use p100_sandbox::{Sandbox, WebhookConfig};
use rust_decimal::Decimal;

use crate::UsageError;

use crate::settings::Settings;
use crate::worker::{self, WorkerOptions};

/// `demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub output: crate::cli::Output,
    /// Database on the configured server to work in, created when missing, emptied at the
    /// start of every run; refused when it holds anything but demo data
    /// [default: p100_recon_demo].
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
}

/// Users the demo follows; `dave-0004` is unknown at P100 by design.
const USERS: [&str; 4] = ["alice-0001", "bob-0002", "carol-0003", "dave-0004"];
/// Partner SEPA transfers the demo follows: (transferId, amount registered).
const TRANSFERS: [(&str, &str); 5] = [
    ("demo-sepa-1", "250.00"),
    ("demo-sepa-2", "100.00"),
    ("demo-sepa-3", "75.00"),
    ("demo-sepa-4", "60.00"),
    ("demo-sepa-ghost", "42.00"),
];
/// The exchange the demo locks and finalizes: (from, to, amount).
const EXCHANGE: (&str, &str, &str) = ("eur", "btc", "100.00");

/// The demo's own database on the configured server, unless `--database` names another.
pub const DEMO_DATABASE: &str = "p100_recon_demo";
/// Present in every database the demo has worked in: the demo refuses any other non-empty one.
const DEMO_MARKER: &str = "p100_recon_demo_marker";

pub async fn run(settings: &Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let server = settings.require_database_url().map_err(UsageError::from)?;
    let name = args.database.as_deref().unwrap_or(DEMO_DATABASE);
    if name.is_empty()
        || name.len() > 63
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(UsageError(format!(
            "--database {name:?}: expected 1 to 63 letters, digits or _"
        ))
        .into());
    }
    let url = demo_database(server, name).await?;
    let url = url.as_str();
    // Always the built-in sandbox: the demo posts append-only entries and must never do so
    // with (or against) a real P100 account.
    if settings.p100_api_key.is_some() {
        eprintln!(
            "note: P100 credentials are set; the demo ignores them and uses its built-in sandbox"
        );
    }
    let pool = crate::db::connect(url, 8).await?;
    claim_for_demo(&pool, name).await?;
    crate::db::migrate(&pool).await?;

    // The daemon's webhook receiver, with a token of this run's own.
    let token = uuid::Uuid::new_v4().to_string();
    let receiver = crate::webhooks::Receiver {
        pool: pool.clone(),
        token: Some(Arc::new(secrecy::SecretString::from(token.clone()))),
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let webhook_url = format!("http://{}/webhooks/p100", listener.local_addr()?);
    let (http_stop, mut http_stopped) = tokio::sync::watch::channel(false);
    let http = tokio::spawn({
        let router = crate::webhooks::router(receiver.clone());
        async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = http_stopped.changed().await;
                })
                .await
        }
    });

    let running = Sandbox::from_scenario(super::sandbox::demo_scenario())
        .with_webhooks(WebhookConfig {
            retry_base: Duration::from_secs(1),
            ..WebhookConfig::new(webhook_url, token)
        })
        .spawn()
        .await
        .context("cannot start the built-in P100 sandbox")?;
    let base = running.base_url();
    let config = settings.p100_config(
        base.parse().context("sandbox URL")?,
        p100::ApiKey::new(p100_sandbox::DEFAULT_API_KEY),
    );
    let client = p100::Client::new(config)?;
    let target = format!("{base} (built-in sandbox)");
    let schedule = Arc::new(super::daemon::load_schedule(None)?);

    // Intake, as an operator (or the partner's application) would do it.
    let users: Vec<String> = USERS.iter().map(|u| (*u).to_owned()).collect();
    ledger::users::track(&pool, &users, "demo", FirstJob::QueuedByCaller).await?;
    let mut first_jobs = Vec::new();
    for user in USERS {
        let args = serde_json::json!({ "user": user });
        first_jobs.push(
            jobs::enqueue::new_job(Kind::KycPoll, args, &schedule, None)
                .map_err(anyhow::Error::msg)?,
        );
    }
    for (transfer, amount) in TRANSFERS {
        let mut tx = pool.begin().await?;
        ledger::sepa::track(
            &mut tx,
            &Owner::Partner,
            transfer,
            Decimal::from_str(amount)?,
            "eur",
            FirstJob::QueuedByCaller,
        )
        .await?;
        tx.commit().await?;
        // The demo does not wait an hour for P100 to show a transfer it never heard of.
        let args = serde_json::json!({ "transfer": transfer, "not_found_grace_seconds": 0 });
        first_jobs.push(
            jobs::enqueue::new_job(Kind::SepaStatus, args, &schedule, None)
                .map_err(anyhow::Error::msg)?,
        );
    }
    // One exchange, locked at P100 now and registered as `exchange submit` does.
    let (from, to, amount) = EXCHANGE;
    let (lock_id, _rate, expires_at) =
        running
            .sandbox()
            .create_lock(from, to, Decimal::from_str(amount)?);
    let exchange = ledger::exchanges::submit(
        &pool,
        &ledger::exchanges::NewExchange {
            owner: &Owner::Partner,
            lock_id: &lock_id,
            from,
            to,
            amount: Decimal::from_str(amount)?,
            expires_at: chrono::DateTime::parse_from_rfc3339(&expires_at)?.to_utc(),
        },
        FirstJob::QueuedByCaller,
    )
    .await?;
    let finalize = serde_json::json!({ "exchange": exchange.to_string() });
    first_jobs.push(
        jobs::enqueue::new_job(Kind::ExchangeFinalize, finalize, &schedule, None)
            .map_err(anyhow::Error::msg)?,
    );

    // The daemon's workers, in this process.
    let ctx = JobContext {
        pool: pool.clone(),
        p100: Some(client),
        schedule,
        p100_health: Arc::default(),
        report_dir: settings.report_dir.clone(),
        runs: Default::default(),
    };
    let (inbox_stop, inbox_stopped) = tokio::sync::watch::channel(false);
    let inbox = tokio::spawn(crate::webhooks::run_inbox(
        pool.clone(),
        ctx.schedule.clone(),
        receiver.wake.clone(),
        inbox_stopped,
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let workers = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let options = WorkerOptions {
                grace: Duration::from_secs(5),
                ..WorkerOptions::default()
            };
            worker::run(
                ctx,
                Kind::ALL,
                &options,
                |k| k.name().to_owned(),
                async move {
                    let _ = stop_rx.await;
                },
            )
            .await
        })
    };
    let cycle = async {
        let started = Instant::now();
        enqueue_all(&pool, &first_jobs).await?;
        // The changes P100 makes while we watch reach us by webhook; the pollers would wait
        // a minute (KYC) or half a minute (SEPA) before looking again.
        wait_until_followed(&pool, exchange).await?;
        let followed_in = started.elapsed();
        let chain = serde_json::json!({ "sync": true, "report": true });
        let run = jobs::enqueue::new_job(Kind::Reconcile, chain, &ctx.schedule, None)
            .map_err(anyhow::Error::msg)?;
        let ids = enqueue_all(&pool, &[run]).await?;
        wait_runs(&pool, &ids, "reconciling").await?;
        // The run queued its day's report in the transaction that recorded it.
        let summary = queue::store::show(&pool, ids[0].0)
            .await?
            .and_then(|job| job.result)
            .context("the reconciliation job left no result")?;
        let run_id = summary["run_id"]
            .as_i64()
            .context("the reconciliation job's result has no run_id")?;
        let run = ledger::reconciliation::run(&pool, run_id)
            .await?
            .with_context(|| format!("reconciliation run {run_id} is not recorded"))?;
        let day = run.started_at.date_naive();
        let filter = queue::store::ListFilter {
            kind: Some("report".into()),
            states: Vec::new(),
            limit: 10,
        };
        let report = queue::store::list(&pool, &filter)
            .await?
            .into_iter()
            .filter(|j| j.dedup_key.as_deref() == Some(day.to_string().as_str()))
            .map(|j| (j.id, 0))
            .max()
            .with_context(|| format!("run {run_id} queued no report for {day}"))?;
        wait_runs(&pool, &[report], "writing the report").await?;
        anyhow::Ok((run, day, followed_in))
    };
    let outcome = cycle.await;
    let _ = stop_tx.send(());
    let _ = workers.await;
    let _ = inbox_stop.send(true);
    let _ = inbox.await;
    let _ = http_stop.send(true);
    let _ = http.await;
    let (run, day, followed_in) = outcome?;

    // The report job wrote the files; the summary is built from the same run.
    let report = jobs::report::build(&pool, &run).await?;
    let dir = settings.report_dir.join(day.to_string());
    if args.output.json {
        println!("{}", recon::render::json(&report));
        return Ok(ExitCode::SUCCESS);
    }
    println!("P100: {target}");
    println!("Database: {}", crate::settings::redact_url(url));
    println!();
    println!(
        "Followed to their ends in {:.1} s (KYC, SEPA and the exchange, prompted by P100's webhooks):",
        followed_in.as_secs_f64()
    );
    for line in job_table(&pool, &ctx.runs, &run).await?.lines() {
        println!("  {line}");
    }
    println!("  {}", webhook_line(&pool).await?);
    println!();
    print!("{}", recon::render::summary_text(&report));
    println!();
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    println!(
        "Report files: {}/reconciliation.{{json,csv,html}}",
        dir.display()
    );
    println!("Inspect: p100-recon discrepancies list   (ack/resolve them with --note)");
    Ok(ExitCode::SUCCESS)
}

/// The URL of database `name` on the configured server, created when missing.
async fn demo_database(server: &str, name: &str) -> anyhow::Result<String> {
    let admin = crate::db::connect(server, 1).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&admin)
            .await?;
    if !exists {
        // The name is checked to [A-Za-z0-9_]: safe to splice, quoted to keep its case.
        // Another demo creating it at the same moment is not an error.
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await;
        if let Err(e) = created {
            let duplicate =
                matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P04"));
            if !duplicate {
                return Err(anyhow::Error::new(e).context(format!("cannot create database {name}")));
            }
        }
    }
    admin.close().await;
    let mut url = url::Url::parse(server)?;
    url.set_path(name);
    // A `dbname` parameter would override the path, and with it the demo's own database.
    let params: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("dbname"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params);
    }
    Ok(url.to_string())
}

/// Refuses a database that holds anything but the demo's data; empties one that holds the
/// demo's (every run starts afresh, as P100's side, the sandbox, does); marks it as the demo's.
async fn claim_for_demo(pool: &ledger::PgPool, name: &str) -> anyhow::Result<()> {
    // Every relation in `public` (not only those this role may see), and anything outside
    // it: another schema or an extension would be dropped or broken by the reset below.
    let (tables, marked, elsewhere): (i64, bool, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE c.relname <> $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')),
                bool_or(c.relname = $1) IS TRUE,
                (SELECT count(*) FROM pg_namespace
                  WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%')
              + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public'",
    )
    .bind(DEMO_MARKER)
    .fetch_one(pool)
    .await?;
    if elsewhere > 0 {
        return Err(UsageError(format!(
            "database {name} holds other schemas or extensions; the demo empties its database \
             on every run and works only in its own (default {DEMO_DATABASE}) or an empty one"
        ))
        .into());
    }
    if tables > 0 && !marked {
        return Err(UsageError(format!(
            "database {name} holds data that is not the demo's ({tables} tables); the demo \
             writes append-only postings and works only in its own database (default \
             {DEMO_DATABASE}) or an empty one"
        ))
        .into());
    }
    if marked {
        // A daemon still working on this database would take the demo's jobs against its own
        // P100 (a stray one once failed the demo's exchange with "lock not found").
        if let Some(other) = live_worker(pool).await? {
            return Err(UsageError(format!(
                "database {name} is in use by a running daemon ({other}): stop it, or run the \
                 demo in another database with --database NAME"
            ))
            .into());
        }
        sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
            .execute(pool)
            .await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {DEMO_MARKER} (claimed_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )))
    .execute(pool)
    .await?;
    Ok(())
}

/// A worker registered on the demo's database that may still be running, described for a
/// person. On this host a worker counts while its process exists (a demo or daemon that was
/// killed left its row behind); on another host, while it was heard from in the last five
/// minutes (its heartbeat period is its own).
async fn live_worker(pool: &ledger::PgPool) -> anyhow::Result<Option<String>> {
    let has_workers: bool =
        sqlx::query_scalar("SELECT to_regclass('public.job_workers') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !has_workers {
        return Ok(None);
    }
    let rows: Vec<(String, String, i32, f64)> = sqlx::query_as(
        "SELECT id, host, pid, extract(epoch FROM now() - last_seen)::float8 FROM job_workers
          WHERE stopped_at IS NULL AND last_seen > now() - interval '5 minutes'
          ORDER BY last_seen DESC",
    )
    .fetch_all(pool)
    .await?;
    let here = crate::worker::hostname();
    Ok(rows
        .into_iter()
        .find(|(_, host, pid, _)| {
            *host != here || std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
        .map(|(id, host, pid, ago)| {
            format!("worker {id}, process {pid} on {host}, last seen {ago:.0} s ago")
        }))
}

/// Enqueues each job (or brings its unit's live job forward); returns (id, runs so far).
async fn enqueue_all(
    pool: &ledger::PgPool,
    jobs: &[queue::NewJob],
) -> anyhow::Result<Vec<(i64, i32)>> {
    let mut ids = Vec::new();
    for job in jobs {
        let enqueued = jobs::enqueue::enqueue(pool, job).await?;
        ids.push((enqueued.id, enqueued.runs));
    }
    Ok(ids)
}

/// Waits until every job has completed one more run (done, or a polling job scheduled
/// again, as `enqueue --wait` counts it); fails naming the job that failed or went dead.
async fn wait_runs(pool: &ledger::PgPool, jobs: &[(i64, i32)], what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut pending = 0;
        for (id, runs_before) in jobs {
            let Some(job) = queue::store::show(pool, *id).await? else {
                anyhow::bail!("{what}: job {id} disappeared");
            };
            match job.state {
                queue::JobState::Done => {}
                queue::JobState::Dead | queue::JobState::Cancelled => anyhow::bail!(
                    "{what}: job {id} ({}) ended {}: {}",
                    job.kind,
                    job.state,
                    job.last_error.unwrap_or_default()
                ),
                queue::JobState::Pending if job.runs > *runs_before => {}
                _ => pending += 1,
            }
        }
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{what}: {pending} jobs have not completed a run after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every user's KYC, every transfer and the exchange has reached an end.
async fn wait_until_followed(pool: &ledger::PgPool, exchange: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut open = Vec::new();
        for user in USERS {
            let u = ledger::users::show(pool, user).await?;
            let ended = u.as_ref().is_some_and(|u| {
                u.unknown_at_p100
                    || matches!(u.kyc_status.as_deref(), Some("VERIFIED" | "EXPIRED"))
                    || u.kyc_attempt_status.as_deref() == Some("REJECTED_BY_PROVIDER")
            });
            if !ended {
                open.push(format!("KYC of {user}"));
            }
        }
        for (transfer, _) in TRANSFERS {
            let t = ledger::sepa::find(pool, transfer).await?;
            let ended = t.is_some_and(|t| t.is_terminal() || t.status == ledger::sepa::MISSING);
            if !ended {
                open.push(format!("transfer {transfer}"));
            }
        }
        let ex = ledger::exchanges::find(pool, &exchange.to_string()).await?;
        if !ex.is_some_and(|ex| jobs::exchange_finalize::is_final(&ex.state)) {
            open.push(format!("exchange {exchange}"));
        }
        if open.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("still in progress after 60 s: {}", open.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A table with one row per job kind that ran: runs, time, P100 requests, and what it did.
async fn job_table(
    pool: &ledger::PgPool,
    runs: &jobs::context::RunStats,
    run: &ledger::reconciliation::Run,
) -> anyhow::Result<String> {
    use crate::table::Align::{Left, Right};
    let mut table = crate::table::new(&[
        ("job kind", Left),
        ("runs", Right),
        ("seconds", Right),
        ("P100 requests", Right),
        ("what it did", Left),
    ]);
    for (kind, stats) in runs.snapshot() {
        let did = match kind {
            Kind::KycPoll => {
                let mut seen = Vec::new();
                for user in USERS {
                    let Some(u) = ledger::users::show(pool, user).await? else {
                        continue;
                    };
                    seen.push(match (u.unknown_at_p100, &u.kyc_rejection_reason) {
                        (true, _) => format!("{user} unknown at P100"),
                        (false, Some(reason)) => format!(
                            "{user} {} ({reason})",
                            u.kyc_attempt_status.unwrap_or_default()
                        ),
                        (false, None) => format!("{user} {}", u.kyc_status.unwrap_or_default()),
                    });
                }
                seen.join(", ")
            }
            Kind::SepaStatus => {
                let mut seen = Vec::new();
                for (transfer, _) in TRANSFERS {
                    if let Some(t) = ledger::sepa::find(pool, transfer).await? {
                        seen.push(format!("{transfer} {}", t.status));
                    }
                }
                seen.join(", ")
            }
            Kind::ExchangeFinalize => {
                let all = ledger::exchanges::list(pool, None, 10).await?;
                all.iter()
                    .map(|ex| {
                        format!(
                            "{} {} → {} {} (exchangeId {})",
                            recon::money::shown(ex.amount, &ex.currency_from),
                            ex.currency_from,
                            ex.currency_to,
                            ex.state,
                            ex.exchange_id.as_deref().unwrap_or("-")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
            Kind::Reconcile => format!(
                "run {}: histories synced, {} accounts checked, {} discrepancies",
                run.id, run.accounts_checked, run.discrepancies
            ),
            Kind::Report => format!("report of {}", run.started_at.date_naive()),
            Kind::TxSync => "histories synced when a webhook named a movement".to_owned(),
            _ => String::new(),
        };
        table.row([
            kind.name().to_owned(),
            stats.runs.to_string(),
            format!("{:.2}", stats.busy.as_secs_f64()),
            stats.p100_calls.to_string(),
            did,
        ]);
    }
    Ok(table.render())
}

/// What the webhooks did.
async fn webhook_line(pool: &ledger::PgPool) -> anyhow::Result<String> {
    let ledger::webhooks::Totals {
        events,
        deliveries,
        brought_forward: forward,
        confirmed,
        ignored,
        ..
    } = ledger::webhooks::totals(pool, None).await?;
    Ok(format!(
        "webhooks: {events} events ({deliveries} deliveries) from P100; {forward} brought a job \
         forward, {confirmed} confirmed by P100's API, {ignored} about nothing followed (see \
         `webhooks list`)"
    ))
}
