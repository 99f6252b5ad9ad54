//! `noop`: does nothing, or exactly the misbehaviour its arguments ask for.
//!
//! Used to measure the queue (`p100-recon bench queue`) and to test it end to end: retries,
//! dead jobs, deferrals, slow jobs across shutdowns and crashes. Safe to run any number of
//! times: it has no effects.

use std::time::Duration;

use queue::Outcome;

use serde::{Deserialize, Serialize};

/// Payload of `noop`. Every field is optional; tests use them to make the job misbehave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoopArgs {
    /// Payload version.
    #[serde(default)]
    pub v: u32,
    /// Dedup unit (at most one live `noop` per unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Sleep this long before answering.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sleep_ms: u64,
    /// Fail (retryably) on attempts up to and including this number.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub fail_attempts: u32,
    /// Fail permanently.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent_failure: bool,
    /// Ask to be deferred by this many seconds (as a 429 would) on every run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub defer_seconds: u64,
    /// Free text, shown in `jobs show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// Runs one attempt.
pub async fn run(args: NoopArgs, attempt: u32) -> Outcome {
    if args.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.sleep_ms)).await;
    }
    if args.permanent_failure {
        return Outcome::dead("noop asked to fail permanently");
    }
    if attempt <= args.fail_attempts {
        return Outcome::retry(format!(
            "noop asked to fail its first {} attempts (this is attempt {attempt})",
            args.fail_attempts
        ));
    }
    if args.defer_seconds > 0 {
        return Outcome::Defer {
            reason: "noop asked to be deferred".to_owned(),
            after: Duration::from_secs(args.defer_seconds),
        };
    }
    Outcome::Done(serde_json::json!({ "label": args.label, "attempt": attempt }))
}

/// `noop`: does nothing (or what its arguments ask for): measurement and tests of the queue.
pub struct NoopJob;

impl crate::handler::Job for NoopJob {
    type Args = NoopArgs;
    const KIND: crate::kinds::Kind = crate::kinds::Kind::Noop;
    const NAME: &'static str = "noop";

    fn default_limits() -> crate::schedule::KindLimits {
        use crate::schedule::KindLimits;
        use std::time::Duration;
        KindLimits {
            timeout: Duration::from_secs(60),
            max_attempts: 3,
            concurrency: 64,
            max_deferrals: 5,
            from_budget: false,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            ..KindLimits::default()
        }
    }

    fn dedup_key(args: &Self::Args) -> Result<Option<String>, String> {
        Ok(args.unit.clone())
    }

    fn unit(args: &Self::Args) -> Option<String> {
        args.unit.clone()
    }

    async fn run(
        _ctx: &crate::context::JobContext,
        args: Self::Args,
        attempt: u32,
    ) -> queue::Outcome {
        run(args, attempt).await
    }
}
