//! `p100-recon demo`: the README's main command, one full cycle.
//!
//! Serves the built-in P100 sandbox (`scenarios/demo.toml`, which contains designed
//! discrepancies) when no P100 credentials are configured, registers the demo's users and
//! SEPA transfers through the intake functions, runs the daemon's workers in this process,
//! follows the transfers, runs the nightly chain (sync → reconcile → report) through the
//! queue, and prints the report summary and where its files are. Idempotent: a second run
//! finds the same discrepancies (updated, not duplicated) and rewrites today's report.

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jobs::JobContext;
use jobs::kinds::Kind;
use ledger::Owner;
use ledger::intake::FirstJob;
use p100_sandbox::Sandbox;
use rust_decimal::Decimal;

use crate::UsageError;
use crate::cli::DemoArgs;
use crate::settings::Settings;
use crate::worker::{self, WorkerOptions};

/// Users the demo follows; `dave-0004` is unknown at P100 by design.
const USERS: [&str; 4] = ["alice-0001", "bob-0002", "carol-0003", "dave-0004"];
/// Partner SEPA transfers the demo follows: (transferId, amount registered).
const TRANSFERS: [(&str, &str); 3] = [
    ("demo-sepa-1", "250.00"),
    ("demo-sepa-2", "100.00"),
    ("demo-sepa-ghost", "42.00"),
];

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
    let running = Sandbox::from_scenario(super::sandbox::demo_scenario())
        .spawn()
        .await
        .context("cannot start the built-in P100 sandbox")?;
    let base = running.base_url();
    let config = settings.p100_config(
        base.parse().context("sandbox URL")?,
        p100::ApiKey::new(p100_sandbox::DEFAULT_API_KEY),
    );
    let (client, target, _sandbox) = (
        p100::Client::new(config)?,
        format!("{base} (built-in sandbox)"),
        running,
    );
    let pool = crate::db::connect(url, 8).await?;
    claim_for_demo(&pool, name).await?;
    crate::db::migrate(&pool).await?;
    let schedule = Arc::new(super::daemon::load_schedule(None)?);

    // Intake, as an operator (or the partner's application) would do it.
    let users: Vec<String> = USERS.iter().map(|u| (*u).to_owned()).collect();
    // Their first KYC polls are left to the intake sweep, as for the partner's own inserts.
    ledger::users::track(&pool, &users, "demo", FirstJob::LeftToSweep).await?;
    let mut first_jobs = Vec::new();
    for (transfer, amount) in TRANSFERS {
        if ledger::sepa::find(&pool, transfer).await?.is_none() {
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
        }
        // The demo does not wait an hour for P100 to show a transfer it never heard of.
        let args = serde_json::json!({ "transfer": transfer, "not_found_grace_seconds": 0 });
        first_jobs.push(
            jobs::enqueue::new_job(Kind::SepaStatus, args, &schedule, None)
                .map_err(anyhow::Error::msg)?,
        );
    }

    // The daemon's workers, in this process.
    let ctx = JobContext {
        pool: pool.clone(),
        p100: Some(client),
        schedule,
        p100_health: Arc::default(),
        report_dir: settings.report_dir.clone(),
    };
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
        let ids = enqueue_all(&pool, &first_jobs).await?;
        wait_runs(&pool, &ids, "following the SEPA transfers").await?;
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
        anyhow::Ok((run, day))
    };
    let outcome = cycle.await;
    let _ = stop_tx.send(());
    let _ = workers.await;
    let (run, day) = outcome?;

    // The report job wrote the files; the summary is built from the same run.
    let report = jobs::report::build(&pool, &run).await?;
    let dir = settings.report_dir.join(day.to_string());
    if args.json {
        println!("{}", recon::render::json(&report));
        return Ok(ExitCode::SUCCESS);
    }
    println!("P100: {target}");
    println!("Database: {}", crate::settings::redact_url(url));
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

/// Refuses a database that holds anything but the demo's data; marks an empty one as the
/// demo's.
async fn claim_for_demo(pool: &ledger::PgPool, name: &str) -> anyhow::Result<()> {
    let (tables, marked): (i64, bool) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE table_name <> $1), bool_or(table_name = $1) IS TRUE \
           FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .bind(DEMO_MARKER)
    .fetch_one(pool)
    .await?;
    if tables > 0 && !marked {
        return Err(UsageError(format!(
            "database {name} holds data that is not the demo's ({tables} tables); the demo \
             writes append-only postings and works only in its own database (default \
             {DEMO_DATABASE}) or an empty one"
        ))
        .into());
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {DEMO_MARKER} (claimed_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )))
    .execute(pool)
    .await?;
    Ok(())
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
