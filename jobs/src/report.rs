//! `report`: writes `REPORT_DIR/<date>/reconciliation.{json,csv,html}` for the last
//! reconciliation run that started on a day, and keeps the JSON in the database. Rewriting a
//! day replaces its files (written to a temporary name, then renamed).

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Utc};
use ledger::reconciliation::Run;
use queue::Outcome;
use recon::report::{
    CurrencyTotal, Explanation, JobsSummary, P100Usage, Report, ReportDiscrepancy, Summary,
    TrendPoint, UnmatchedTransaction,
};
use serde::{Deserialize, Serialize};

use crate::context::JobContext;
use crate::kinds::Kind;

/// Runs of the trend on the HTML page.
const TREND_RUNS: i64 = 14;

/// Payload of `report`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportArgs {
    /// Payload version.
    #[serde(default)]
    pub v: u32,
    /// The day (YYYY-MM-DD, UTC); default today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

impl ReportArgs {
    /// The day asked for.
    pub fn day(&self) -> Result<NaiveDate, String> {
        match &self.date {
            None => Ok(Utc::now().date_naive()),
            Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|e| format!("date {d:?}: {e} (expected YYYY-MM-DD)")),
        }
    }
}

/// Why no report was written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No run to describe.
    #[error("no reconciliation run finished that started on {0}; run `reconcile` first")]
    NoRun(NaiveDate),
    /// The database failed.
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    /// Files could not be written.
    #[error("cannot write the report under {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Queues the report of `day` (deduplicated per day).
pub async fn enqueue_for(ctx: &JobContext, day: NaiveDate) -> Result<(), String> {
    let args = ReportArgs {
        v: 0,
        date: Some(day.to_string()),
    };
    let job = crate::enqueue::new_job(
        Kind::Report,
        serde_json::to_value(&args).unwrap_or_default(),
        &ctx.schedule,
        None,
    )?;
    crate::enqueue::enqueue(&ctx.pool, &job)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// One run, as the queue calls it.
pub async fn run(ctx: &JobContext, args: ReportArgs) -> Outcome {
    let day = match args.day() {
        Ok(day) => day,
        Err(e) => return Outcome::dead(e),
    };
    match write_day(&ctx.pool, &ctx.report_dir, day).await {
        Ok((report, dir)) => Outcome::Done(serde_json::json!({
            "run_id": report.run_id, "dir": dir.display().to_string(),
            "discrepancies": report.summary.discrepancies, "complete": report.complete,
        })),
        Err(ReportError::NoRun(day)) => Outcome::dead(ReportError::NoRun(day).to_string()),
        Err(e) => Outcome::retry(e.to_string()),
    }
}

/// Builds and writes the report of `day` under `dir/<day>/`; returns it and the directory.
pub async fn write_day(
    pool: &ledger::PgPool,
    dir: &Path,
    day: NaiveDate,
) -> Result<(Report, PathBuf), ReportError> {
    let run = ledger::reconciliation::last_run_on(pool, day)
        .await?
        .ok_or(ReportError::NoRun(day))?;
    let report = build(pool, &run).await?;
    let trend: Vec<TrendPoint> = ledger::reconciliation::trend(pool, run.id, TREND_RUNS)
        .await?
        .iter()
        .map(|r| TrendPoint {
            run_id: r.id.to_string(),
            started_at: r.started_at,
            accounts_checked: r.accounts_checked.max(0) as u64,
            discrepancies: r.discrepancies.max(0) as u64,
            complete: r.complete,
        })
        .collect();
    let out = dir.join(day.to_string());
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    for (name, text) in [
        ("reconciliation.json", recon::render::json(&report)),
        ("reconciliation.csv", recon::render::csv(&report)),
        ("reconciliation.html", recon::render::html(&report, &trend)),
    ] {
        let path = out.join(name);
        let tmp = out.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    let value = serde_json::to_value(&report).unwrap_or_default();
    ledger::reconciliation::store_report(pool, day, run.id, &value).await?;
    Ok((report, out))
}

/// The report of a recorded run.
pub async fn build(pool: &ledger::PgPool, run: &Run) -> Result<Report, ledger::Error> {
    let mut discrepancies = Vec::with_capacity(run.discrepancy_ids.len());
    for id in &run.discrepancy_ids {
        let Some(d) = ledger::discrepancies::show(pool, *id).await? else {
            continue;
        };
        let explanations: Vec<Explanation> =
            serde_json::from_value(d.explanations.clone()).unwrap_or_default();
        discrepancies.push(ReportDiscrepancy {
            id: d.id.to_string(),
            owner: d.owner_kind.clone(),
            external_user_id: d.external_user_id.clone(),
            currency: d.currency.clone(),
            class: d.class.clone(),
            provider_balance: d.provider_balance,
            ledger_balance: d.ledger_balance,
            delta: d.delta.or(d.amount),
            state: d.state.clone(),
            first_seen_at: d.first_seen_at,
            severity: d.severity.clone(),
            explanations,
            subject: d.subject.clone(),
            detail: d.detail.clone(),
        });
    }
    let by_currency: Vec<CurrencyTotal> =
        serde_json::from_value(run.by_currency.clone()).unwrap_or_default();
    let unmatched: Vec<UnmatchedTransaction> =
        serde_json::from_value(run.unmatched.clone()).unwrap_or_default();
    let reasons: Vec<String> =
        serde_json::from_value(run.incomplete_reasons.clone()).unwrap_or_default();
    let (failed, dead, oldest) = ledger::reconciliation::queue_figures(pool).await?;
    Ok(Report {
        run_id: run.id.to_string(),
        cutoff: run.cutoff.unwrap_or(run.started_at),
        started_at: run.started_at,
        finished_at: run.finished_at.unwrap_or(run.started_at),
        summary: Summary {
            accounts_checked: run.accounts_checked.max(0) as u64,
            matched: run.matched.max(0) as u64,
            matched_in_flight: run.matched_in_flight.max(0) as u64,
            discrepancies: discrepancies.len() as u64,
            by_currency,
        },
        discrepancies,
        unmatched_transactions: unmatched,
        jobs: JobsSummary {
            failed: failed.max(0) as u64,
            dead: dead.max(0) as u64,
            oldest_pending_age_seconds: oldest.max(0) as u64,
        },
        scope: run.scope.clone(),
        complete: run.complete,
        incomplete_reasons: reasons,
        p100: P100Usage {
            calls: run.p100_calls.max(0) as u64,
            budget: run.p100_budget.max(0) as u64,
        },
    })
}
