//! `p100-recon jobs list|show|retry|cancel|pause|resume|paused`.

use clap::{Args, Subcommand};
use std::process::ExitCode;

use queue::JobState;
use queue::store::{self, JobRow, ListFilter, Refusal};

use crate::UsageError;

use crate::settings::Settings;

/// `jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List(JobsListArgs),
    /// Show one job with its error history.
    Show(JobIdArgs),
    /// Run a failed, dead or cancelled job again now (with a fresh set of attempts).
    Retry(JobIdArgs),
    /// Cancel a job that has not started.
    Cancel(JobIdArgs),
    /// Pause a job kind on every replica: no job of it starts until it is resumed (running
    /// ones finish; due ones wait in the queue).
    Pause(JobsPauseArgs),
    /// Resume a paused job kind; its due jobs start at once.
    Resume {
        /// The job kind.
        kind: String,
    },
    /// The paused job kinds, with who paused them and why.
    Paused {
        #[command(flatten)]
        output: crate::cli::Output,
    },
}

/// `jobs pause` arguments.
#[derive(Debug, Args)]
pub struct JobsPauseArgs {
    /// The job kind (kyc_poll, tx_sync, exchange_finalize, sepa_status, reconcile, report, …).
    pub kind: String,
    /// Why (kept with the pause and shown by `jobs paused`).
    #[arg(long)]
    pub note: String,
    /// Who [default: the operator's login name].
    #[arg(long)]
    pub actor: Option<String>,
}

/// `jobs list` arguments.
#[derive(Debug, Args)]
pub struct JobsListArgs {
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only these states (pending, running, failed, done, dead, cancelled); repeatable.
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    #[command(flatten)]
    pub output: crate::cli::Output,
}

/// A job id argument.
#[derive(Debug, Args)]
pub struct JobIdArgs {
    /// The job id.
    pub id: i64,
    #[command(flatten)]
    pub output: crate::cli::Output,
}

/// Extra attempts a retried job gets: as many as its kind allows.
fn fresh_attempts(kind: &str) -> i32 {
    super::daemon::load_schedule(None)
        .unwrap_or_default()
        .fresh_attempts(kind)
}

pub async fn run(settings: &Settings, command: JobsCommand) -> anyhow::Result<ExitCode> {
    // Arguments are checked before anything is opened.
    let kind = match &command {
        JobsCommand::Pause(args) => {
            if args.note.trim().is_empty() {
                return Err(UsageError("--note must say why the kind is paused".into()).into());
            }
            Some(super::enqueue::kind_arg(&args.kind)?.name())
        }
        JobsCommand::Resume { kind } => Some(super::enqueue::kind_arg(kind)?.name()),
        _ => None,
    };
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    match command {
        JobsCommand::List(args) => {
            let states = args
                .states
                .iter()
                .map(|s| {
                    JobState::parse(s).ok_or_else(|| {
                        UsageError(format!(
                            "--state {s:?}: use pending, running, failed, done, dead or cancelled"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let rows = store::list(
                &pool,
                &ListFilter {
                    kind: args.kind,
                    states,
                    limit: args.limit,
                },
            )
            .await?;
            if args.output.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                use crate::table::Align::{Left, Right};
                let mut t = crate::table::new(&[
                    ("id", Right),
                    ("kind", Left),
                    ("state", Left),
                    ("attempts", Right),
                    ("run at", Left),
                    ("last error", Left),
                ]);
                for job in &rows {
                    t.row([
                        job.id.to_string(),
                        job.kind.clone(),
                        job.state.to_string(),
                        format!("{}/{}", job.attempts, job.max_attempts),
                        job.run_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        job.last_error
                            .as_deref()
                            .map(|e| e.chars().take(60).collect::<String>())
                            .unwrap_or_default(),
                    ]);
                }
                t.print();
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Show(args) => {
            let Some(job) = store::show(&pool, args.id).await? else {
                return Err(UsageError(format!("no job {}", args.id)).into());
            };
            if args.output.json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print!("{}", describe(&job));
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Retry(args) => {
            let mut conn = pool.acquire().await?;
            let extra = match store::show(&mut *conn, args.id).await? {
                Some(job) => fresh_attempts(&job.kind),
                None => 1,
            };
            let result = store::retry(&mut conn, args.id, extra).await?;
            answer(
                args.id,
                "retried: it runs again now",
                result,
                args.output.json,
            )
        }
        JobsCommand::Cancel(args) => {
            let mut conn = pool.acquire().await?;
            let result = store::cancel(&mut conn, args.id).await?;
            answer(args.id, "cancelled", result, args.output.json)
        }
        JobsCommand::Pause(args) => {
            let kind = kind.expect("named and checked above");
            let actor = args.actor.unwrap_or_else(crate::settings::operator_name);
            if store::pause(&pool, kind, &actor, args.note.trim()).await? {
                println!("{kind} paused: no job of it starts until `jobs resume {kind}`");
            } else {
                println!("{kind} was already paused (see `jobs paused`)");
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Resume { .. } => {
            let kind = kind.expect("named and checked above");
            if store::resume(&pool, kind).await? {
                println!("{kind} resumed");
            } else {
                println!("{kind} was not paused");
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Paused { output } => {
            let paused = store::paused(&pool).await?;
            if output.json {
                println!("{}", serde_json::to_string_pretty(&paused)?);
            } else if paused.is_empty() {
                println!("no job kind is paused");
            } else {
                use crate::table::Align::Left;
                let mut t = crate::table::new(&[
                    ("kind", Left),
                    ("paused at", Left),
                    ("by", Left),
                    ("why", Left),
                ]);
                for p in &paused {
                    t.row([
                        p.kind.clone(),
                        p.paused_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        p.paused_by.clone(),
                        p.note.clone(),
                    ]);
                }
                t.print();
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn answer(
    id: i64,
    done: &str,
    result: Result<(), Refusal>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let refusal = match result {
        Ok(()) => {
            if json {
                println!("{}", serde_json::json!({ "id": id, "ok": true }));
            } else {
                println!("job {id} {done}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(refusal) => refusal.explain(id),
    };
    Err(UsageError(refusal).into())
}

fn describe(job: &JobRow) -> String {
    let mut out = format!(
        "job {}\n  kind        {}\n  state       {}\n  attempts    {} of {} (deferred {} times)\n  runs        {}\n  run at      {}\n  created at  {}\n",
        job.id,
        job.kind,
        job.state,
        job.attempts,
        job.max_attempts,
        job.deferrals,
        job.runs,
        job.run_at,
        job.created_at
    );
    if let Some(at) = job.finished_at {
        out.push_str(&format!("  finished at {at}\n"));
    }
    if let Some(worker) = &job.locked_by {
        out.push_str(&format!("  held by     {worker}\n"));
    }
    if let Some(key) = &job.dedup_key {
        out.push_str(&format!("  unit        {key}\n"));
    }
    out.push_str(&format!("  args        {}\n", job.payload));
    if let Some(result) = &job.result {
        out.push_str(&format!("  result      {result}\n"));
    }
    if let Some(errors) = job.errors.as_array().filter(|e| !e.is_empty()) {
        out.push_str("  errors\n");
        for e in errors {
            out.push_str(&format!(
                "    attempt {} at {}: {}\n",
                e["attempt"],
                e["at"].as_str().unwrap_or("?"),
                e["error"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}
