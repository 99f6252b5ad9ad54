//! `kyc_poll`: follows one user through P100's KYC.
//!
//! Each run asks P100 once, records the user's KYC (a history row whenever it changed), and
//! says when to ask again: from a minute, doubling to an hour, while the attempt is `PENDING`
//! or `VERIFICATION`; daily once `VERIFIED` (to catch `EXPIRED`); every six hours while P100
//! has no verification for the user (P445). `REJECTED_BY_PROVIDER` and `EXPIRED` end the job;
//! so does P412 (the user is flagged unknown at P100). A rejected API key (401) pauses every
//! `kyc_poll` of the process without spending attempts, and shows in `/readyz`. Read-only at
//! P100, so running twice is harmless.

use std::time::Duration;

use ledger::users::KycObservation;
use p100::ErrorClass;
use p100::enums::{KycAttemptStatus, KycStatus};
use queue::Outcome;
use serde::{Deserialize, Serialize};

use crate::context::{JobContext, P100Health};
use crate::schedule::KindLimits;

/// First re-poll delay while verification is in progress.
pub const FIRST_DELAY: Duration = Duration::from_secs(60);
/// Longest re-poll delay while verification is in progress.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Re-check of verified users (to catch `EXPIRED`).
pub const VERIFIED_RECHECK: Duration = Duration::from_secs(24 * 3600);
/// Re-check of users P100 has no verification for (P445).
pub const NO_VERIFICATION_RECHECK: Duration = Duration::from_secs(6 * 3600);
/// Re-check after a value P100 does not document.
pub const UNKNOWN_RECHECK: Duration = Duration::from_secs(3600);
/// How long the kind pauses after P100 rejected the key.
pub const AUTH_PAUSE: Duration = Duration::from_secs(300);

/// Payload of `kyc_poll`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KycPollArgs {
    /// Payload version.
    #[serde(default)]
    pub v: u32,
    /// The user (externalUserId).
    pub user: String,
}

/// The delay after the n-th poll in a row that found the verification in progress, between
/// the kind's `poll_first` and `poll_max` (default [`FIRST_DELAY`] and [`MAX_DELAY`]).
pub fn in_progress_delay(pending_polls: u32, limits: &KindLimits) -> Duration {
    let exponent = pending_polls.saturating_sub(1).min(16);
    limits
        .poll_first
        .saturating_mul(1 << exponent)
        .min(limits.poll_max)
}

/// What to do after P100 answered with a status.
fn next_step(
    status: &KycStatus,
    attempt: &KycAttemptStatus,
    pending_polls: u32,
    limits: &KindLimits,
) -> Option<Duration> {
    match (status, attempt) {
        (KycStatus::Expired, _) => None,
        (_, KycAttemptStatus::RejectedByProvider) => None,
        (KycStatus::Verified, _) => Some(VERIFIED_RECHECK),
        (KycStatus::NotVerified, KycAttemptStatus::Pending | KycAttemptStatus::Verification) => {
            Some(in_progress_delay(pending_polls, limits))
        }
        // Not verified, attempt successful: P100 is about to flip the status; keep polling fast.
        (KycStatus::NotVerified, KycAttemptStatus::Successful) => Some(limits.poll_first),
        _ => Some(UNKNOWN_RECHECK),
    }
}

/// One poll.
pub async fn run(ctx: &JobContext, args: KycPollArgs) -> Outcome {
    let Some(client) = &ctx.p100 else {
        return Outcome::dead("this process has no P100 client");
    };
    if ctx.p100_health() == P100Health::AuthFailed {
        return Outcome::Defer {
            reason: "P100 rejected the API key; kyc_poll is paused".into(),
            after: AUTH_PAUSE,
        };
    }
    let (seen, next) = match client.kyc_status(&args.user).await {
        Ok(kyc) => {
            let in_progress = matches!(
                kyc.attempt_status,
                KycAttemptStatus::Pending | KycAttemptStatus::Verification
            ) && kyc.status == KycStatus::NotVerified;
            let seen = KycObservation {
                status: kyc.status.as_str().to_owned(),
                attempt_status: Some(kyc.attempt_status.as_str().to_owned()),
                rejection_reason: kyc.rejection_reason.clone(),
                request_id: None,
                in_progress,
            };
            (seen, Some((kyc.status, kyc.attempt_status)))
        }
        Err(e) if e.code() == Some("P445") => (
            KycObservation {
                status: "NO_VERIFICATION".into(),
                attempt_status: None,
                rejection_reason: None,
                request_id: Some(e.request_id.clone()),
                in_progress: false,
            },
            None,
        ),
        Err(e) if e.code() == Some("P412") => (
            KycObservation {
                status: "UNKNOWN_USER".into(),
                attempt_status: None,
                rejection_reason: None,
                request_id: Some(e.request_id.clone()),
                in_progress: false,
            },
            None,
        ),
        Err(e) if e.class == ErrorClass::Auth => {
            ctx.set_p100_health(P100Health::AuthFailed);
            tracing::error!(error = %e, "P100 rejected the API key; pausing kyc_poll until an operator fixes it");
            return Outcome::Defer {
                reason: e.to_string(),
                after: AUTH_PAUSE,
            };
        }
        Err(e) => return crate::p100_outcome::for_read_error(&e),
    };
    let stored = async {
        let mut conn = ctx.pool.acquire().await?;
        ledger::users::record_kyc(&mut conn, &args.user, &seen).await
    }
    .await;
    let user = match stored {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Outcome::dead(format!(
                "user {} is not tracked (users track it first)",
                args.user
            ));
        }
        Err(e) => return Outcome::retry(e.to_string()),
    };
    let result = serde_json::json!({ "status": seen.status, "attempt_status": seen.attempt_status, "rejection_reason": seen.rejection_reason });
    let after = match (&seen.status[..], next) {
        ("UNKNOWN_USER", _) => None,
        ("NO_VERIFICATION", _) => Some(NO_VERIFICATION_RECHECK),
        (_, Some((status, attempt))) => next_step(
            &status,
            &attempt,
            user.kyc_pending_polls.max(0) as u32,
            &ctx.schedule.limits(crate::kinds::Kind::KycPoll),
        ),
        _ => Some(UNKNOWN_RECHECK),
    };
    tracing::info!(kyc.status = %seen.status, kyc.attempt_status = ?seen.attempt_status, next_poll_s = after.map(|d| d.as_secs()), "KYC of {} is {}", args.user, seen.status);
    match after {
        Some(after) => Outcome::Snooze { result, after },
        None => Outcome::Done(result),
    }
}

/// `kyc_poll`: follows one user through P100's KYC.
pub struct KycPollJob;

impl crate::handler::Job for KycPollJob {
    type Args = KycPollArgs;
    const KIND: crate::kinds::Kind = crate::kinds::Kind::KycPoll;
    const NAME: &'static str = "kyc_poll";

    fn default_limits() -> crate::schedule::KindLimits {
        // A 401 defers every poll until the key is fixed: deferrals must outlast that.
        use crate::schedule::KindLimits;
        use std::time::Duration;
        KindLimits {
            timeout: Duration::from_secs(60),
            max_attempts: 10,
            concurrency: 16,
            max_deferrals: 10_000,
            from_budget: false,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            poll_first: FIRST_DELAY,
            poll_max: MAX_DELAY,
        }
    }

    fn dedup_key(args: &Self::Args) -> Result<Option<String>, String> {
        ledger::owner::check_external_user_id(&args.user)
            .map_err(|e| format!("kyc_poll needs \"user\": \"<externalUserId>\": {e}"))?;
        Ok(Some(format!("user:{}", args.user)))
    }

    fn unit(args: &Self::Args) -> Option<String> {
        Some(args.user.clone())
    }

    async fn run(
        ctx: &crate::context::JobContext,
        args: Self::Args,
        _attempt: u32,
    ) -> queue::Outcome {
        // A user waits on it: ahead of bulk work.
        p100::Lane::Interactive.scope(run(ctx, args)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_from_a_minute_to_an_hour() {
        let limits = <KycPollJob as crate::handler::Job>::default_limits();
        let minutes: Vec<u64> = (1..=8)
            .map(|n| in_progress_delay(n, &limits).as_secs() / 60)
            .collect();
        assert_eq!(minutes, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        // An operator's schedule.toml changes both ends.
        let fast = KindLimits {
            poll_first: Duration::from_secs(5),
            poll_max: Duration::from_secs(20),
            ..limits
        };
        let seconds: Vec<u64> = (1..=4)
            .map(|n| in_progress_delay(n, &fast).as_secs())
            .collect();
        assert_eq!(seconds, vec![5, 10, 20, 20]);
    }

    #[test]
    fn terminal_states_stop_and_verified_users_are_rechecked_slowly() {
        use KycAttemptStatus as A;
        use KycStatus as S;
        let limits = <KycPollJob as crate::handler::Job>::default_limits();
        assert_eq!(
            next_step(&S::Verified, &A::Successful, 0, &limits),
            Some(VERIFIED_RECHECK)
        );
        assert_eq!(
            next_step(&S::NotVerified, &A::RejectedByProvider, 3, &limits),
            None
        );
        assert_eq!(next_step(&S::Expired, &A::Successful, 0, &limits), None);
        assert_eq!(
            next_step(&S::NotVerified, &A::Verification, 3, &limits),
            Some(Duration::from_secs(240))
        );
        assert_eq!(
            next_step(&S::Unknown("ON_HOLD".into()), &A::Pending, 1, &limits),
            Some(UNKNOWN_RECHECK)
        );
    }
}
