//! `sync_sweep`: enqueues `tx_sync` for the tracked users synced longest ago, spread over the
//! sweep's interval so P100 sees an even load within `P100_MAX_RPS`.
//!
//! Scheduled (jobs/schedule.toml). Safe to run twice: each user has at most one live
//! `tx_sync`, so a second sweep only brings existing jobs forward to their new slot or later.

use chrono::Utc;
use queue::Outcome;
use serde::{Deserialize, Serialize};

use crate::context::JobContext;
use crate::kinds::Kind;
use crate::tx_sync::TxSyncArgs;

/// Payload of `sync_sweep`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncSweepArgs {
    /// Payload version.
    #[serde(default)]
    pub v: u32,
    /// Users per sweep. Budget: with `P100_MAX_RPS` = r, a sweep every s seconds may spend
    /// r × s requests; one user costs one request per page of new history.
    #[serde(default = "default_max_users")]
    pub max_users: i64,
    /// Seconds over which the users' syncs are spread (the sweep's interval).
    #[serde(default = "default_spread")]
    pub spread_seconds: u64,
}

fn default_max_users() -> i64 {
    1000
}

fn default_spread() -> u64 {
    600
}

/// Runs one sweep.
pub async fn run(ctx: &JobContext, args: SyncSweepArgs) -> Outcome {
    let users = match ledger::users::due_for_sync(&ctx.pool, args.max_users.max(0)).await {
        Ok(users) => users,
        Err(e) => return Outcome::retry(e.to_string()),
    };
    let n = users.len().max(1) as u64;
    let step_ms = args.spread_seconds.saturating_mul(1000) / n;
    let now = Utc::now();
    let mut jobs = Vec::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        let sync = TxSyncArgs {
            user: Some(user.clone()),
            ..TxSyncArgs::default()
        };
        // Spread at most a day: no spread asked for can push a sync past the clock.
        let offset_ms = step_ms.saturating_mul(i as u64).min(86_400_000);
        let at = now + chrono::Duration::milliseconds(offset_ms as i64);
        match crate::enqueue::new_job(
            Kind::TxSync,
            serde_json::to_value(&sync).unwrap_or_default(),
            &ctx.schedule,
            Some(at),
        ) {
            Ok(job) => jobs.push(job),
            Err(e) => {
                tracing::error!(user.id = %user, error = %e, "cannot build a tx_sync for tracked user {user}: {e}")
            }
        }
    }
    let enqueued = async {
        let mut conn = ctx.pool.acquire().await.map_err(queue::Error::from)?;
        queue::store::enqueue_many(&mut conn, &jobs).await
    };
    match enqueued.await {
        Ok(added) => Outcome::Done(
            serde_json::json!({ "due": users.len(), "enqueued": added, "spread_seconds": args.spread_seconds }),
        ),
        Err(e) => Outcome::retry(e.to_string()),
    }
}

/// `sync_sweep`: enqueues `tx_sync` for tracked users, spread over time.
pub struct SyncSweepJob;

impl crate::handler::Job for SyncSweepJob {
    type Args = SyncSweepArgs;
    const KIND: crate::kinds::Kind = crate::kinds::Kind::SyncSweep;
    const NAME: &'static str = "sync_sweep";

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
