//! `p100-recon reconcile` (queues a run for the daemon, or waits for it) and `report`.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

use super::enqueue::EnqueueArgs;
use crate::UsageError;
use crate::settings::Settings;

/// `reconcile` arguments.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Only the partner, or only one user (everyone when neither is given).
    #[command(flatten)]
    pub owner: crate::cli::OwnerArgs,
    /// Sync the histories first (as the nightly chain does).
    #[arg(long)]
    pub sync: bool,
    /// Wait for the run; exit 0 if it completed, 1 if it failed.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit 1).
    #[arg(long, default_value = "30m", value_name = "DURATION")]
    pub wait_timeout: String,
    #[command(flatten)]
    pub output: crate::cli::Output,
}

/// `report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The day (UTC) whose last reconciliation run is described [default: today].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,
    /// Where to write [default: REPORT_DIR].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub output: crate::cli::Output,
}

pub async fn run(settings: &Settings, args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let job_args = serde_json::json!({ "sync": args.sync });
    super::enqueue::run(
        settings,
        EnqueueArgs {
            kind: "reconcile".into(),
            args: job_args.to_string(),
            unit: None,
            owner: args.owner,
            exchange: None,
            date: None,
            transfer: None,
            at: None,
            wait: args.wait,
            wait_timeout: args.wait_timeout,
            output: args.output,
        },
    )
    .await
}

pub async fn report(settings: &Settings, args: ReportArgs) -> anyhow::Result<ExitCode> {
    let job_args = jobs::report::ReportArgs {
        v: 0,
        date: args.date.clone(),
    };
    let day = job_args
        .day()
        .map_err(|e| UsageError(format!("--date: {e}")))?;
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    let out = args.out.unwrap_or_else(|| settings.report_dir.clone());
    match jobs::report::write_day(&pool, &out, day).await {
        Ok((report, dir)) => {
            if args.output.json {
                println!("{}", recon::render::json(&report));
            } else {
                print!("{}", recon::render::summary_text(&report));
                println!("report files: {}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(jobs::report::ReportError::NoRun(day)) => {
            eprintln!(
                "error: no reconciliation run finished that started on {day}; run `p100-recon reconcile --wait` first"
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
