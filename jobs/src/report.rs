//! `report`: writes `REPORT_DIR/<date>/reconciliation.{json,csv,html}` for the last
//! reconciliation run that started on a day, and keeps the JSON in the database. Rewriting a
//! day replaces its files (written to a temporary name, then renamed).

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Utc};
use ledger::reconciliation::Run;
use queue::Outcome;
use recon::report::{
    CurrencyTotal, JobsSummary, P100Usage, Report, ReportDiscrepancy, Summary, TrendPoint,
    UnmatchedTransaction,
};
use serde::{Deserialize, Serialize};

use crate::context::JobContext;
use crate::kinds::Kind;
use crate::schedule::ScheduleFile;

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
    /// The queue's figures could not be read.
    #[error(transparent)]
    Queue(#[from] queue::Error),
    /// Files could not be written.
    #[error("cannot write the report under {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The job that writes the report of `day` (deduplicated per day).
pub fn job_for(schedule: &ScheduleFile, day: NaiveDate) -> Result<queue::NewJob, String> {
    let args = ReportArgs {
        v: 0,
        date: Some(day.to_string()),
    };
    crate::enqueue::new_job(
        Kind::Report,
        serde_json::to_value(&args).map_err(|e| e.to_string())?,
        schedule,
        None,
    )
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
        Err(e) => Outcome::retry(format!("report of {day}: {e}")),
    }
}

/// The trend the HTML page of run `run` draws: the finished runs up to it.
pub async fn trend(pool: &ledger::PgPool, run: i64) -> Result<Vec<TrendPoint>, ledger::Error> {
    Ok(ledger::reconciliation::trend(pool, run, TREND_RUNS)
        .await?
        .iter()
        .map(|r| TrendPoint {
            run_id: r.id.to_string(),
            started_at: r.started_at,
            accounts_checked: r.accounts_checked.max(0) as u64,
            discrepancies: r.discrepancies.max(0) as u64,
            complete: r.complete,
        })
        .collect())
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
    // A past day's report is what that day's report said: rewritten from the stored one (the
    // discrepancies have moved on since: acknowledged, resolved, found again). Today's is built
    // afresh.
    let stored = if day < Utc::now().date_naive() {
        ledger::reconciliation::stored_report(pool, day)
            .await?
            .filter(|(stored_run, _)| *stored_run == run.id)
            .and_then(|(_, value)| serde_json::from_value::<Report>(value).ok())
    } else {
        None
    };
    let report = match stored {
        Some(report) => report,
        None => build(pool, &run).await?,
    };
    let trend = trend(pool, run.id).await?;
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
pub async fn build(pool: &ledger::PgPool, run: &Run) -> Result<Report, ReportError> {
    // What the run stored is ours; a part that does not decode is a corrupt row, not an
    // empty section.
    fn stored<T: serde::de::DeserializeOwned>(
        run: i64,
        what: &str,
        value: &serde_json::Value,
    ) -> Result<T, ledger::Error> {
        serde_json::from_value(value.clone()).map_err(|e| {
            ledger::Error::Corrupt(format!("reconciliation run {run}: stored {what}: {e}"))
        })
    }
    let discrepancies: Vec<ReportDiscrepancy> =
        ledger::discrepancies::by_ids(pool, &run.discrepancy_ids)
            .await?
            .into_iter()
            .map(|d| {
                Ok(ReportDiscrepancy {
                    id: d.id.to_string(),
                    explanations: stored(
                        run.id,
                        &format!("explanations of discrepancy {}", d.id),
                        &d.explanations,
                    )?,
                    owner: d.owner_kind,
                    external_user_id: d.external_user_id,
                    currency: d.currency,
                    class: d.class,
                    provider_balance: d.provider_balance,
                    ledger_balance: d.ledger_balance,
                    delta: d.delta.or(d.amount),
                    state: d.state,
                    first_seen_at: d.first_seen_at,
                    severity: d.severity,
                    subject: d.subject,
                    detail: d.detail,
                })
            })
            .collect::<Result<_, ledger::Error>>()?;
    let by_currency: Vec<CurrencyTotal> = stored(run.id, "totals", &run.by_currency)?;
    let unmatched: Vec<UnmatchedTransaction> =
        stored(run.id, "unmatched transactions", &run.unmatched)?;
    let reasons: Vec<String> = stored(run.id, "incomplete reasons", &run.incomplete_reasons)?;
    let backlog = queue::store::backlog(pool).await?;
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
            failed: backlog.failed.max(0) as u64,
            dead: backlog.dead.max(0) as u64,
            oldest_pending_age_seconds: backlog.oldest_pending_age_seconds.max(0) as u64,
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

/// `report`: writes a day's reconciliation report.
pub struct ReportJob;

impl crate::handler::Job for ReportJob {
    type Args = ReportArgs;
    const KIND: crate::kinds::Kind = crate::kinds::Kind::Report;
    const NAME: &'static str = "report";

    fn default_limits() -> crate::schedule::KindLimits {
        use crate::schedule::KindLimits;
        use std::time::Duration;
        KindLimits {
            timeout: Duration::from_secs(600),
            max_attempts: 5,
            concurrency: 1,
            max_deferrals: 5,
            from_budget: false,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(600),
            ..KindLimits::default()
        }
    }

    fn dedup_key(args: &Self::Args) -> Result<Option<String>, String> {
        Ok(Some(args.day()?.to_string()))
    }

    async fn run(
        ctx: &crate::context::JobContext,
        args: Self::Args,
        _attempt: u32,
    ) -> queue::Outcome {
        run(ctx, args).await
    }
}
