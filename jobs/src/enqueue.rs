//! Turning a kind and its arguments into a queued job: one function for the CLI, the
//! scheduler and (later) the sweeps, so they all dedup the same way.

use chrono::{DateTime, Utc};
use queue::{Enqueued, NewJob};

use crate::kinds::Kind;
use crate::schedule::ScheduleFile;

/// Builds the row for a job of `kind`; fails with a readable reason if `args` do not fit.
pub fn new_job(
    kind: Kind,
    args: serde_json::Value,
    schedule: &ScheduleFile,
    run_at: Option<DateTime<Utc>>,
) -> Result<NewJob, String> {
    kind.validate_args(&args)?;
    let dedup_key = kind.dedup_key(&args)?;
    Ok(NewJob {
        kind: kind.name().to_owned(),
        payload: args,
        dedup_key,
        run_at,
        max_attempts: schedule.limits(kind).max_attempts as i32,
    })
}

/// Enqueues one job (or finds the live one of its unit and brings it forward).
pub async fn enqueue(pool: &ledger::PgPool, job: &NewJob) -> Result<Enqueued, queue::Error> {
    let mut conn = pool.acquire().await?;
    queue::store::enqueue(&mut conn, job).await
}
