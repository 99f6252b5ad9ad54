//! The apalis handlers: one generic adapter that opens the job's span, runs the kind's `run`
//! function, and records the duration. Everything interesting is in the kinds' modules.

use std::time::Instant;

use apalis::prelude::{Attempt, BoxDynError, Data, TaskId};
use queue::Outcome;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::context::JobContext;
use crate::kinds::{Kind, NoopArgs};

/// A job kind's entry point, as the worker wiring needs it.
pub trait Job: Send + Sync + 'static {
    /// The payload.
    type Args: DeserializeOwned + serde::Serialize + Send + Sync + Unpin + 'static;
    /// Which kind.
    const KIND: Kind;
    /// The unit (user, transfer …) for log lines, if any.
    fn unit(args: &Self::Args) -> Option<String>;
    /// Runs one attempt.
    fn run(
        ctx: &JobContext,
        args: Self::Args,
        attempt: u32,
    ) -> impl Future<Output = Outcome> + Send;
}

/// `noop`.
pub struct Noop;

impl Job for Noop {
    type Args = NoopArgs;
    const KIND: Kind = Kind::Noop;
    fn unit(args: &NoopArgs) -> Option<String> {
        args.unit.clone()
    }
    async fn run(_ctx: &JobContext, args: NoopArgs, attempt: u32) -> Outcome {
        crate::noop::run(args, attempt).await
    }
}

/// `tx_sync`.
pub struct TxSync;

impl Job for TxSync {
    type Args = crate::tx_sync::TxSyncArgs;
    const KIND: Kind = Kind::TxSync;
    fn unit(args: &Self::Args) -> Option<String> {
        args.user
            .clone()
            .or_else(|| args.partner.then(|| "partner".to_owned()))
    }
    async fn run(ctx: &JobContext, args: Self::Args, _attempt: u32) -> Outcome {
        crate::tx_sync::run(ctx, args).await
    }
}

/// `sync_sweep`.
pub struct SyncSweep;

impl Job for SyncSweep {
    type Args = crate::sync_sweep::SyncSweepArgs;
    const KIND: Kind = Kind::SyncSweep;
    fn unit(_args: &Self::Args) -> Option<String> {
        None
    }
    async fn run(ctx: &JobContext, args: Self::Args, _attempt: u32) -> Outcome {
        crate::sync_sweep::run(ctx, args).await
    }
}

/// `kyc_poll`.
pub struct KycPoll;

impl Job for KycPoll {
    type Args = crate::kyc_poll::KycPollArgs;
    const KIND: Kind = Kind::KycPoll;
    fn unit(args: &Self::Args) -> Option<String> {
        Some(args.user.clone())
    }
    async fn run(ctx: &JobContext, args: Self::Args, _attempt: u32) -> Outcome {
        crate::kyc_poll::run(ctx, args).await
    }
}

/// `exchange_finalize`.
pub struct ExchangeFinalize;

impl Job for ExchangeFinalize {
    type Args = crate::exchange_finalize::ExchangeFinalizeArgs;
    const KIND: Kind = Kind::ExchangeFinalize;
    fn unit(args: &Self::Args) -> Option<String> {
        Some(args.exchange.clone())
    }
    async fn run(ctx: &JobContext, args: Self::Args, _attempt: u32) -> Outcome {
        crate::exchange_finalize::run(ctx, args).await
    }
}

/// `sepa_status`.
pub struct SepaStatus;

impl Job for SepaStatus {
    type Args = crate::sepa_status::SepaStatusArgs;
    const KIND: Kind = Kind::SepaStatus;
    fn unit(args: &Self::Args) -> Option<String> {
        Some(args.transfer.clone())
    }
    async fn run(ctx: &JobContext, args: Self::Args, _attempt: u32) -> Outcome {
        crate::sepa_status::run(ctx, args).await
    }
}

/// `intake_sweep`.
pub struct IntakeSweep;

impl Job for IntakeSweep {
    type Args = crate::intake_sweep::IntakeSweepArgs;
    const KIND: Kind = Kind::IntakeSweep;
    fn unit(_args: &Self::Args) -> Option<String> {
        None
    }
    async fn run(ctx: &JobContext, args: Self::Args, _attempt: u32) -> Outcome {
        crate::intake_sweep::run(ctx, args).await
    }
}

/// `reconcile`.
pub struct Reconcile;

impl Job for Reconcile {
    type Args = crate::reconcile::ReconcileArgs;
    const KIND: Kind = Kind::Reconcile;
    fn unit(args: &Self::Args) -> Option<String> {
        args.user.clone()
    }
    async fn run(ctx: &JobContext, args: Self::Args, _attempt: u32) -> Outcome {
        crate::reconcile::run(ctx, args).await
    }
}

/// `report`.
pub struct Report;

impl Job for Report {
    type Args = crate::report::ReportArgs;
    const KIND: Kind = Kind::Report;
    fn unit(_args: &Self::Args) -> Option<String> {
        None
    }
    async fn run(ctx: &JobContext, args: Self::Args, _attempt: u32) -> Outcome {
        crate::report::run(ctx, args).await
    }
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
    let mut lease = id.as_int().map(|id| queue::lease::watch(id as i64));
    let lost = async {
        match &mut lease {
            Some(lease) => lease.lost().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        outcome = J::run(&ctx, args, attempt).instrument(span.clone()) => outcome,
        () = lost => {
            metrics::counter!("job_lease_lost_total", "kind" => J::KIND.name()).increment(1);
            Outcome::retry("stopped: the job's lease was taken from this process while it ran")
        }
    };
    drop(lease);
    let elapsed = started.elapsed();
    metrics::histogram!("job_duration_seconds", "kind" => J::KIND.name())
        .record(elapsed.as_secs_f64());
    let _entered = span.enter();
    let duration_ms = elapsed.as_millis() as u64;
    match &outcome {
        Outcome::Done(_) | Outcome::Snooze { .. } => {
            tracing::info!(
                duration_ms,
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
