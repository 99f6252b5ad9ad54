//! `p100-recon enqueue <kind> …`: one job, optionally waiting for its run.

use clap::Args;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use jobs::kinds::Kind;
use queue::JobState;

use crate::UsageError;

use crate::settings::Settings;

/// `enqueue` arguments.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Job kind (e.g. noop).
    pub kind: String,
    /// The job's arguments as JSON (e.g. '{"sleep_ms": 100}').
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub args: String,
    /// The unit the job works on, for kinds that take one as `unit` (at most one live job per unit).
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,
    /// The partner (tx_sync, reconcile) or one user (tx_sync, kyc_poll, reconcile).
    #[command(flatten)]
    pub owner: crate::cli::OwnerArgs,
    /// An exchange, by local id or lockId (exchange_finalize).
    #[arg(long, value_name = "ID")]
    pub exchange: Option<String>,
    /// The day of a report (report), YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,
    /// A SEPA transfer, by transferId (sepa_status).
    #[arg(long, value_name = "ID")]
    pub transfer: Option<String>,
    /// Not before this time: RFC 3339 (2026-11-26T02:00:00Z) or a delay from now (90s, 5m).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Wait for the run to end; exit 0 if it completed, 1 if it failed or went dead.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit 1).
    #[arg(
        long,
        default_value = "10m",
        value_name = "DURATION",
        requires = "wait"
    )]
    pub wait_timeout: String,
    #[command(flatten)]
    pub output: crate::cli::Output,
}

/// Parses `--at`: RFC 3339, or a delay from now.
pub fn parse_at(text: &str) -> Result<DateTime<Utc>, UsageError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.to_utc());
    }
    jobs::schedule::parse_duration(text)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| Utc::now().checked_add_signed(d))
        .filter(|at| at.year() < 10_000)
        .ok_or_else(|| {
            UsageError(format!(
                "--at {text:?}: expected RFC 3339 (2026-11-26T02:00:00Z) or a delay (90s, 5m) \
                 ending before the year 10000"
            ))
        })
}

/// The job kind an operator named, or a usage error listing the known ones.
pub fn kind_arg(text: &str) -> Result<Kind, UsageError> {
    Kind::parse(text).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        UsageError(format!(
            "unknown job kind {:?}; known kinds: {}",
            super::shown(text),
            known.join(", ")
        ))
    })
}

pub async fn run(settings: &Settings, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let kind = kind_arg(&args.kind)?;
    let mut job_args: serde_json::Value = serde_json::from_str(&args.args)
        .map_err(|e| UsageError(format!("--args is not valid JSON: {e}")))?;
    let Some(map) = job_args.as_object_mut() else {
        return Err(UsageError("--args must be a JSON object".into()).into());
    };
    if let Some(unit) = &args.unit {
        map.insert("unit".to_owned(), serde_json::Value::String(unit.clone()));
    }
    match args.owner.owner()? {
        Some(ledger::Owner::User(user)) => {
            map.insert("user".to_owned(), serde_json::Value::String(user));
        }
        Some(ledger::Owner::Partner) => {
            map.insert("partner".to_owned(), serde_json::Value::Bool(true));
        }
        None => {}
    }
    if let Some(exchange) = &args.exchange {
        map.insert(
            "exchange".to_owned(),
            serde_json::Value::String(exchange.clone()),
        );
    }
    if let Some(date) = &args.date {
        map.insert("date".to_owned(), serde_json::Value::String(date.clone()));
    }
    if let Some(transfer) = &args.transfer {
        map.insert(
            "transfer".to_owned(),
            serde_json::Value::String(transfer.clone()),
        );
    }
    let run_at = args.at.as_deref().map(parse_at).transpose()?;
    let wait_timeout = jobs::schedule::parse_duration(&args.wait_timeout)
        .map_err(|e| UsageError(format!("--wait-timeout: {e}")))?;
    let schedule = super::daemon::load_schedule(None)?;
    let job = jobs::enqueue::new_job(kind, job_args, &schedule, run_at)
        .map_err(|e| UsageError(format!("invalid arguments for {kind}: {e}")))?;

    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    // Runs are counted from the enqueue statement itself: reading them afterwards could miss
    // a run that finished in between, and `--wait` would then wait for the next one.
    let enqueued = jobs::enqueue::enqueue(&pool, &job).await?;
    let mut runs_before = enqueued.runs;
    let mut waiting_for = enqueued.id;
    // A running job asked again: what was asked is the run after it, not the one under way.
    let mut after_current = enqueued.rerun_after;
    if !args.output.json {
        if enqueued.created {
            println!("enqueued job {} ({kind})", enqueued.id);
        } else if enqueued.rerun_after {
            println!(
                "job {} ({kind}) is running for this unit; one more run follows it",
                enqueued.id
            );
        } else {
            println!(
                "job {} ({kind}) is already queued for this unit; brought forward",
                enqueued.id
            );
        }
    }
    if !args.wait {
        if args.output.json {
            println!(
                "{}",
                serde_json::json!({ "id": enqueued.id, "kind": kind.name(), "created": enqueued.created })
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    // Wait for this run: the job finishes, or (a polling job) completes one more run.
    let deadline = Instant::now() + wait_timeout;
    loop {
        let Some(row) = queue::store::show(&pool, waiting_for).await? else {
            anyhow::bail!(
                "job {} disappeared while waiting (pruned or deleted)",
                waiting_for
            );
        };
        let completed_run = row.runs > runs_before && row.state != JobState::Running;
        if after_current && (row.state.is_final() || completed_run) {
            // The run under way ended: the asked-for run is its next run (it stays live) or
            // the job that follows it.
            after_current = false;
            if row.state.is_final() {
                let next: Option<(i64,)> = sqlx::query_as(
                    "SELECT id FROM jobs WHERE kind = $1 AND dedup_key = $2 AND id > $3
                      ORDER BY id LIMIT 1",
                )
                .bind(&row.kind)
                .bind(&row.dedup_key)
                .bind(row.id)
                .fetch_optional(&pool)
                .await?;
                let Some((next,)) = next else {
                    anyhow::bail!("job {} ended and no run followed it", row.id);
                };
                waiting_for = next;
                runs_before = 0;
            } else {
                runs_before = row.runs;
            }
            continue;
        }
        if row.state.is_final() || completed_run {
            let ok = row.state == JobState::Done || (completed_run && !row.state.is_final());
            if args.output.json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                match &row.last_error {
                    Some(error) if !ok => println!("job {} ended {}: {error}", row.id, row.state),
                    _ => println!(
                        "job {} completed ({}), attempt {}",
                        row.id, row.state, row.attempts
                    ),
                }
            }
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "gave up waiting for job {} after {}s; it is {} (attempt {} of {})",
                row.id,
                wait_timeout.as_secs(),
                row.state,
                row.attempts,
                row.max_attempts
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
