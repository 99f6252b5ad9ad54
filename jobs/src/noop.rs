//! `noop`: does nothing, or exactly the misbehaviour its arguments ask for.
//!
//! Used to measure the queue (`p100-recon bench queue`) and to test it end to end: retries,
//! dead jobs, deferrals, slow jobs across shutdowns and crashes. Safe to run any number of
//! times: it has no effects.

use std::time::Duration;

use queue::Outcome;

use crate::kinds::NoopArgs;

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
