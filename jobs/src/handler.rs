//! The [`Job`] trait every kind implements in its own module, and the one generic apalis
//! adapter that opens the job's span, runs the kind's `run` (stopping it if its lease is
//! lost), and records the duration.

use std::time::Instant;

use apalis::prelude::{Attempt, BoxDynError, Data, TaskId};
use queue::Outcome;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::context::JobContext;
use crate::kinds::Kind;

/// A job kind, implemented in its own module and registered in `kinds::registry!`.
pub trait Job: Send + Sync + 'static {
    /// The payload.
    type Args: DeserializeOwned + serde::Serialize + Send + Sync + Unpin + 'static;
    /// Which kind.
    const KIND: Kind;
    /// The queue name (stable once deployed).
    const NAME: &'static str;
    /// Limits used when `jobs/schedule.toml` does not set them.
    fn default_limits() -> crate::schedule::KindLimits;
    /// The unit a job works on (at most one live job per unit), if any.
    fn dedup_key(args: &Self::Args) -> Result<Option<String>, String>;
    /// The unit (user, transfer …) for log lines, if any.
    fn unit(_args: &Self::Args) -> Option<String> {
        None
    }
    /// Runs one attempt.
    fn run(
        ctx: &JobContext,
        args: Self::Args,
        attempt: u32,
    ) -> impl Future<Output = Outcome> + Send;
}

/// The apalis handler of kind `J`.
pub async fn handle<J: Job>(
    args: J::Args,
    attempt: Attempt,
    id: TaskId,
    ctx: Data<JobContext>,
) -> Result<Outcome, BoxDynError> {
    let attempt = attempt.current() as u32;
    let unit = J::unit(&args);
    let span = tracing::info_span!(
        "job",
        job.id = %id,
        job.kind = J::KIND.name(),
        job.attempt = attempt,
        user.id = unit.as_deref().unwrap_or(""),
        p100.request_id = tracing::field::Empty,
    );
    let started = Instant::now();
    // The run stops if the job's lease is taken from this process (it runs elsewhere now; its
    // result here would be fenced anyway).
    let mut lease = id
        .as_int()
        .map(|id| queue::lease::watch(&ctx.pool, id as i64));
    let lost = async {
        match &mut lease {
            Some(lease) => lease.lost().await,
            None => std::future::pending().await,
        }
    };
    let calls = p100::calls::Counter::default();
    let outcome = tokio::select! {
        outcome = calls.count(J::run(&ctx, args, attempt).instrument(span.clone())) => outcome,
        () = lost => {
            metrics::counter!("job_lease_lost_total", "kind" => J::KIND.name()).increment(1);
            Outcome::retry("stopped: the job's lease was taken from this process while it ran")
        }
    };
    // Counted also when the run was stopped: what it sent is spent from the budget.
    let p100_calls = calls.get();
    drop(lease);
    let elapsed = started.elapsed();
    metrics::histogram!("job_duration_seconds", "kind" => J::KIND.name())
        .record(elapsed.as_secs_f64());
    metrics::counter!("job_p100_requests_total", "kind" => J::KIND.name()).increment(p100_calls);
    ctx.runs.record(J::KIND, elapsed, p100_calls);
    let _entered = span.enter();
    let duration_ms = elapsed.as_millis() as u64;
    match &outcome {
        Outcome::Done(_) | Outcome::Snooze { .. } => {
            tracing::info!(
                duration_ms,
                p100_requests = p100_calls,
                outcome = outcome.label(),
                "job {id} ({}) finished in {duration_ms} ms",
                J::KIND
            )
        }
        Outcome::Retry { reason, .. } => {
            tracing::warn!(duration_ms, outcome = "retry", error = %reason, "job {id} ({}) failed, will retry: {reason}", J::KIND)
        }
        Outcome::Defer { reason, after } => {
            tracing::warn!(
                duration_ms,
                outcome = "defer",
                "job {id} ({}) deferred by {}s: {reason}",
                J::KIND,
                after.as_secs()
            )
        }
        Outcome::Dead { reason } => {
            tracing::error!(duration_ms, outcome = "dead", error = %reason, "job {id} ({}) failed for good: {reason}", J::KIND)
        }
    }
    Ok(outcome)
}
