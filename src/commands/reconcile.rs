//! `p100-recon reconcile` (queues a run for the daemon, or waits for it) and `report`.

use std::process::ExitCode;

use crate::UsageError;
use crate::cli::{EnqueueArgs, ReconcileArgs, ReportArgs};
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    if let Some(user) = &args.user {
        ledger::owner::check_external_user_id(user)
            .map_err(|e| UsageError(format!("--user: {e}")))?;
    }
    let job_args = serde_json::json!({ "sync": args.sync });
    super::enqueue::run(
        settings,
        EnqueueArgs {
            kind: "reconcile".into(),
            args: job_args.to_string(),
            unit: None,
            partner: args.partner,
            user: args.user,
            exchange: None,
            date: None,
            transfer: None,
            at: None,
            wait: args.wait,
            wait_timeout: args.wait_timeout,
            json: args.json,
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
            if args.json {
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
