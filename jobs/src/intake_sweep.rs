//! `intake_sweep`: queues the first job of rows the partner's application inserted into the
//! intake tables directly (`tracked_users` → `kyc_poll`, `exchanges` → `exchange_finalize`,
//! `sepa_transfers` → `sepa_status`). Rows are marked queued in the same transaction as their
//! jobs, so a crash queues them again and a second sweep skips them. Rows registered through
//! the CLI are marked queued when they are inserted (their first job commits with them).

use queue::Outcome;
use serde::{Deserialize, Serialize};

use crate::context::JobContext;
use crate::exchange_finalize::ExchangeFinalizeArgs;
use crate::kinds::Kind;
use crate::kyc_poll::KycPollArgs;
use crate::sepa_status::SepaStatusArgs;

/// Payload of `intake_sweep`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntakeSweepArgs {
    /// Payload version.
    #[serde(default)]
    pub v: u32,
    /// Rows per table per sweep.
    #[serde(default = "default_batch")]
    pub batch: i64,
}

impl Default for IntakeSweepArgs {
    fn default() -> Self {
        Self {
            v: 0,
            batch: default_batch(),
        }
    }
}

fn default_batch() -> i64 {
    1000
}

/// Runs one sweep.
pub async fn run(ctx: &JobContext, args: IntakeSweepArgs) -> Outcome {
    match sweep(ctx, &args).await {
        Ok(result) => Outcome::Done(result),
        Err(e) => Outcome::retry(e),
    }
}

async fn sweep(ctx: &JobContext, args: &IntakeSweepArgs) -> Result<serde_json::Value, String> {
    let mut tx = ctx.pool.begin().await.map_err(|e| e.to_string())?;
    let due = ledger::intake::claim_unqueued(&mut tx, args.batch.max(1))
        .await
        .map_err(|e| e.to_string())?;
    let mut jobs = Vec::new();
    // A row the job's own validation refuses (one stored before the tables' CHECKs held the
    // same rules) is named and skipped: one bad row must not stop every other row's intake.
    let mut add = |kind: Kind, payload: serde_json::Value| match crate::enqueue::new_job(
        kind,
        payload.clone(),
        &ctx.schedule,
        None,
    ) {
        Ok(job) => jobs.push(job),
        Err(e) => {
            metrics::counter!("intake_rejected_total", "kind" => kind.name()).increment(1);
            // The row is already marked taken (queued_at): say how to bring it back.
            tracing::error!(job.kind = kind.name(), args = %payload, error = %e,
                "intake row refused and left without a {kind} job: {e}; correct the row and \
                 set its queued_at to NULL for the next sweep to take it");
        }
    };
    for user in &due.users {
        add(
            Kind::KycPoll,
            serde_json::json!(KycPollArgs {
                v: 0,
                user: user.clone()
            }),
        );
    }
    for id in &due.exchanges {
        let args = ExchangeFinalizeArgs {
            exchange: id.to_string(),
            ..ExchangeFinalizeArgs::default()
        };
        add(Kind::ExchangeFinalize, serde_json::json!(args));
    }
    for transfer in &due.transfers {
        let args = SepaStatusArgs {
            transfer: transfer.clone(),
            ..SepaStatusArgs::default()
        };
        add(Kind::SepaStatus, serde_json::json!(args));
    }
    let added = queue::store::enqueue_many(&mut tx, &jobs)
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "users": due.users.len(), "exchanges": due.exchanges.len(),
        "transfers": due.transfers.len(), "enqueued": added,
    }))
}

/// `intake_sweep`: queues the first job of intake rows the partner's application inserted directly.
pub struct IntakeSweepJob;

impl crate::handler::Job for IntakeSweepJob {
    type Args = IntakeSweepArgs;
    const KIND: crate::kinds::Kind = crate::kinds::Kind::IntakeSweep;
    const NAME: &'static str = "intake_sweep";

    fn default_limits() -> crate::schedule::KindLimits {
        use crate::schedule::KindLimits;
        use std::time::Duration;
        KindLimits {
            timeout: Duration::from_secs(120),
            max_attempts: 3,
            concurrency: 1,
            max_deferrals: 5,
            from_budget: false,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(600),
            ..KindLimits::default()
        }
    }

    fn dedup_key(_args: &Self::Args) -> Result<Option<String>, String> {
        // One live sweep at a time.
        Ok(Some("sweep".to_owned()))
    }

    async fn run(
        ctx: &crate::context::JobContext,
        args: Self::Args,
        _attempt: u32,
    ) -> queue::Outcome {
        run(ctx, args).await
    }
}
