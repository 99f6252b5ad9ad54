//! `sepa_status`: follows one outgoing SEPA transfer to `SUCCESSFUL` or `FAILED`.
//!
//! Tracking places a hold on the owner's hold account. Each run reads the transfer's details
//! once and records what P100 says. `SUCCESSFUL` settles: the movement (amount and fee as
//! P100 reports them) is posted under the key the history sync uses for the same transfer's
//! SEPA_TRANSFER row, so whichever sees it first posts it, and the hold is reversed, in one
//! transaction. `FAILED` releases the hold and keeps P100's `error`. A P428 (unknown
//! transfer) is tolerated for a grace period (P100 may not show a fresh transfer yet); after
//! it the transfer becomes `MISSING_AT_PROVIDER` with a discrepancy and its hold stays: it is
//! re-read every six hours, so a late appearance settles or releases it as usual, until a
//! person releases the hold (`sepa release`). Read-only at P100.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledger::discrepancies::Finding;
use ledger::provider::ObservedTx;
use ledger::sepa::{Observation, SepaTransfer};
use p100::ErrorClass;
use p100::enums::{SepaStatus, TransactionType};
use queue::Outcome;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::context::{JobContext, P100Health};
use crate::movement_time;
use crate::schedule::KindLimits;

/// First re-read delay while the transfer is in progress.
pub const FIRST_DELAY: Duration = Duration::from_secs(30);
/// Longest re-read delay while the transfer is in progress.
pub const MAX_DELAY: Duration = Duration::from_secs(1800);
/// How long a P428 is taken to mean "not visible yet" rather than "missing".
pub const DEFAULT_NOT_FOUND_GRACE: Duration = Duration::from_secs(3600);
/// Re-read of a transfer P100 did not know after the grace period (until it shows up, or a
/// person releases its hold with `sepa release`).
pub const MISSING_RECHECK: Duration = Duration::from_secs(6 * 3600);
/// How long the kind pauses after P100 rejected the key.
pub const AUTH_PAUSE: Duration = Duration::from_secs(300);
/// Who the discrepancies this job raises are attributed to.
const ACTOR: &str = "sepa_status";

/// Payload of `sepa_status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SepaStatusArgs {
    /// Payload version.
    #[serde(default)]
    pub v: u32,
    /// P100's `transferId`.
    pub transfer: String,
    /// Grace period for P428 in seconds (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found_grace_seconds: Option<u64>,
}

/// The delay after the n-th read in a row that found the transfer in progress.
pub fn in_progress_delay(polls: u32, limits: &KindLimits) -> Duration {
    let exponent = polls.saturating_sub(1).min(16);
    limits
        .poll_first
        .saturating_mul(1 << exponent)
        .min(limits.poll_max)
}

/// One read.
pub async fn run(ctx: &JobContext, args: SepaStatusArgs) -> Outcome {
    match step(ctx, &args).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::retry(format!("SEPA transfer {}: {e}", args.transfer)),
    }
}

fn done(t: &SepaTransfer, status: &str) -> Outcome {
    Outcome::Done(serde_json::json!({ "transfer_id": t.transfer_id, "status": status }))
}

async fn step(ctx: &JobContext, args: &SepaStatusArgs) -> Result<Outcome, ledger::Error> {
    let Some(client) = &ctx.p100 else {
        return Ok(Outcome::dead("this process has no P100 client"));
    };
    let Some(found) = ledger::sepa::find(&ctx.pool, &args.transfer).await? else {
        return Ok(Outcome::dead(format!(
            "no SEPA transfer {} is tracked",
            args.transfer
        )));
    };
    if found.is_terminal() {
        return Ok(done(&found, &found.status));
    }
    if found.hold_state == "none" {
        // An intake row: the hold is placed by its first run.
        let mut tx = ctx.pool.begin().await?;
        ledger::owner_lock::acquire(&mut tx, &found.owner()?).await?;
        if let Some(t) = ledger::sepa::load_for_update(&mut tx, found.id).await? {
            ledger::sepa::place_hold(&mut tx, &t).await?;
        }
        tx.commit().await?;
    }
    if ctx.p100_health() == P100Health::AuthFailed {
        return Ok(Outcome::Defer {
            reason: "P100 rejected the API key; sepa_status is paused".into(),
            after: AUTH_PAUSE,
        });
    }
    let answer = client.sepa_transfer(&found.transfer_id).await;
    // P100's time of the settlement, read before any lock is taken (it is an HTTP call).
    let settled = match &answer {
        Ok(details) if details.status == SepaStatus::Successful => {
            Some(settlement_time(client, &found, details.created_at).await)
        }
        _ => None,
    };
    // The row lock serialises two runs of the same transfer; the second sees the first's work.
    let mut tx = ctx.pool.begin().await?;
    // The owner's write lock before the transfer's row lock: the one order every writer uses.
    ledger::owner_lock::acquire(&mut tx, &found.owner()?).await?;
    let Some(t) = ledger::sepa::load_for_update(&mut tx, found.id).await? else {
        return Ok(Outcome::dead(format!(
            "SEPA transfer {} vanished",
            found.id
        )));
    };
    if t.is_terminal() {
        return Ok(done(&t, &t.status));
    }
    let details = match answer {
        Ok(details) => details,
        Err(e) if e.code() == Some("P428") => {
            let grace = args
                .not_found_grace_seconds
                .map_or(DEFAULT_NOT_FOUND_GRACE, Duration::from_secs);
            let age = (Utc::now() - t.created_at).to_std().unwrap_or_default();
            if t.status == ledger::sepa::MISSING {
                // Already flagged: keep asking, slowly, so a late appearance settles it.
                tx.commit().await?;
                return Ok(Outcome::Snooze {
                    result: serde_json::json!({ "p100": "P428", "status": ledger::sepa::MISSING }),
                    after: MISSING_RECHECK,
                });
            }
            if age < grace {
                let seen = Observation {
                    status: t.status.clone(),
                    still_pending: true,
                    ..Observation::default()
                };
                ledger::sepa::record(&mut tx, &t, &seen).await?;
                tx.commit().await?;
                let wait = in_progress_delay(
                    t.polls as u32 + 1,
                    &ctx.schedule.limits(crate::kinds::Kind::SepaStatus),
                )
                .min(grace - age);
                return Ok(Outcome::Snooze {
                    result: serde_json::json!({ "p100": "P428", "within_grace": true }),
                    after: wait.max(Duration::from_secs(1)),
                });
            }
            let note = format!(
                "P100 does not know transfer {} (P428) {} s after tracking started",
                t.transfer_id,
                age.as_secs()
            );
            let owner = t.owner()?;
            let finding = Finding {
                owner,
                currency: Some(t.currency.clone()),
                subject: Some(t.transfer_id.clone()),
                class: "missing_at_provider".into(),
                provider_balance: None,
                ledger_balance: None,
                delta: None,
                // Signed movement, as reconciliation records it.
                amount: Some(-t.amount),
                explanations: serde_json::json!([]),
                detail: Some(note.clone()),
            };
            crate::findings::raise(&mut tx, &finding, ACTOR, None).await?;
            let seen = Observation {
                status: ledger::sepa::MISSING.into(),
                note: Some(note),
                ..Observation::default()
            };
            ledger::sepa::record(&mut tx, &t, &seen).await?;
            tx.commit().await?;
            return Ok(Outcome::Snooze {
                result: serde_json::json!({ "transfer_id": t.transfer_id, "status": ledger::sepa::MISSING }),
                after: MISSING_RECHECK,
            });
        }
        Err(e) if e.class == ErrorClass::Auth => {
            ctx.set_p100_health(P100Health::AuthFailed);
            return Ok(Outcome::Defer {
                reason: e.to_string(),
                after: AUTH_PAUSE,
            });
        }
        Err(e) => return Ok(crate::p100_outcome::for_read_error(&e)),
    };
    let mut seen = Observation {
        status: details.status.as_str().to_owned(),
        p100_amount: Some(details.amount),
        p100_currency: Some(details.currency.as_str().to_owned()),
        fee: details.fee,
        error: details.error.clone(),
        note: None,
        still_pending: false,
    };
    let now = Utc::now();
    match details.status {
        SepaStatus::Successful => {
            let owner = t.owner()?;
            let (settled_at, source) = settled.unwrap_or((now, movement_time::Source::Observed));
            let movement = ObservedTx {
                provider_tx_id: t.transfer_id.clone(),
                kind: "SEPA_TRANSFER".into(),
                status: "COMPLETED".into(),
                currency: details.currency.as_str().to_owned(),
                amount: -details.amount,
                fee: details.fee.unwrap_or_default(),
                reference: Some(t.transfer_id.clone()),
                exchange_id: None,
                created_at: details.created_at.unwrap_or(settled_at),
                updated_at: settled_at,
                payload: serde_json::Value::Null,
                payload_hash: String::new(),
            };
            // A history sync that already posted this transfer's row stands for it.
            let synced = ledger::provider::row_posted_for(
                &mut *tx,
                &owner,
                "SEPA_TRANSFER",
                &t.transfer_id,
                true,
            )
            .await?;
            let keys = crate::mapping::local_operation_keys(&owner, &movement);
            // Posted already, under today's key or the one an older build used.
            let posted = ledger::postings::any_posted(&mut tx, &keys).await?;
            let key = keys.into_iter().next().filter(|_| !posted);
            match key.map(|key| crate::mapping::to_posting(&owner, &movement, key)) {
                Some(Ok(Some(p))) if !synced => {
                    ledger::postings::post(&mut tx, &[p]).await?;
                }
                Some(Err(e)) => return Ok(Outcome::dead(e.to_string())),
                _ => {}
            }
            if let Some(finding) = mismatch(&t, &owner, details.amount, details.currency.as_str()) {
                crate::findings::raise(&mut tx, &finding, ACTOR, None).await?;
            }
            ledger::sepa::end_hold(&mut tx, &t, "settled", now).await?;
            ledger::sepa::record(&mut tx, &t, &seen).await?;
            tx.commit().await?;
            Ok(Outcome::Done(serde_json::json!({
                "transfer_id": t.transfer_id,
                "status": "SUCCESSFUL",
                "effective_at": settled_at,
                "effective_at_source": source.as_str(),
            })))
        }
        SepaStatus::Failed => {
            seen.note = Some(match &details.error {
                Some(error) => format!("P100: {error}"),
                None => "P100 reports FAILED without an error".into(),
            });
            ledger::sepa::end_hold(&mut tx, &t, "released", now).await?;
            ledger::sepa::record(&mut tx, &t, &seen).await?;
            tx.commit().await?;
            Ok(done(&t, "FAILED"))
        }
        _ => {
            seen.still_pending = true;
            ledger::sepa::record(&mut tx, &t, &seen).await?;
            tx.commit().await?;
            Ok(Outcome::Snooze {
                result: serde_json::json!({ "p100_status": details.status.as_str() }),
                after: in_progress_delay(
                    t.polls as u32 + 1,
                    &ctx.schedule.limits(crate::kinds::Kind::SepaStatus),
                ),
            })
        }
    }
}

/// When P100's balance took the transfer: its history row's `updatedAt`, else now (A37).
async fn settlement_time(
    client: &p100::Client,
    t: &SepaTransfer,
    p100_created_at: Option<DateTime<Utc>>,
) -> (DateTime<Utc>, movement_time::Source) {
    let observed = Utc::now();
    let Ok(owner) = t.owner() else {
        return (observed, movement_time::Source::Observed);
    };
    // It completed after P100 created it and after the last read that found it in progress:
    // the later of the two bounds keeps the window narrow.
    let since = [p100_created_at, t.checked_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(t.created_at);
    let rows = movement_time::completed_rows(
        client,
        &crate::balances::scope_of(&owner),
        TransactionType::SepaTransfer,
        &t.transfer_id,
        since,
    )
    .await;
    match rows {
        // The debit row; a return of the same transfer would be a credit.
        Ok(rows) => movement_time::effective_at(&rows, |r| r.amount.is_sign_negative(), observed),
        Err(e) => {
            tracing::warn!(
                transfer = %t.transfer_id,
                error = %e,
                "P100's history could not be read for the settlement time; the time it was seen settled is used"
            );
            (observed, movement_time::Source::Observed)
        }
    }
}

/// What P100 settled that differs from what was registered, if anything.
fn mismatch(
    t: &SepaTransfer,
    owner: &ledger::Owner,
    amount: Decimal,
    currency: &str,
) -> Option<Finding> {
    let (class, detail) = if currency != t.currency {
        (
            "currency_mismatch",
            format!(
                "transfer {} was registered in {} but P100 settled it in {currency}",
                t.transfer_id, t.currency
            ),
        )
    } else if amount != t.amount {
        (
            "amount_mismatch",
            format!(
                "transfer {} was registered for {} but P100 settled {amount}",
                t.transfer_id, t.amount
            ),
        )
    } else {
        return None;
    };
    Some(Finding {
        owner: owner.clone(),
        currency: Some(t.currency.clone()),
        subject: Some(t.transfer_id.clone()),
        class: class.into(),
        provider_balance: None,
        ledger_balance: None,
        delta: None,
        // The signed movement, as reconciliation records it.
        amount: Some(-amount),
        explanations: serde_json::json!([]),
        detail: Some(detail),
    })
}

/// `sepa_status`: follows one outgoing SEPA transfer to its end.
pub struct SepaStatusJob;

impl crate::handler::Job for SepaStatusJob {
    type Args = SepaStatusArgs;
    const KIND: crate::kinds::Kind = crate::kinds::Kind::SepaStatus;
    const NAME: &'static str = "sepa_status";

    fn default_limits() -> crate::schedule::KindLimits {
        // Like kyc_poll: a 401 defers every read until the key is fixed.
        use crate::schedule::KindLimits;
        use std::time::Duration;
        KindLimits {
            timeout: Duration::from_secs(60),
            max_attempts: 10,
            concurrency: 8,
            max_deferrals: 10_000,
            from_budget: false,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            poll_first: FIRST_DELAY,
            poll_max: MAX_DELAY,
        }
    }

    fn dedup_key(args: &Self::Args) -> Result<Option<String>, String> {
        if args.transfer.trim().is_empty() {
            return Err("sepa_status needs \"transfer\": \"<transferId>\"".to_owned());
        }
        Ok(Some(format!("transfer:{}", args.transfer)))
    }

    fn unit(args: &Self::Args) -> Option<String> {
        Some(args.transfer.clone())
    }

    async fn run(
        ctx: &crate::context::JobContext,
        args: Self::Args,
        _attempt: u32,
    ) -> queue::Outcome {
        // Ahead of bulk work, the settlement-time history read included.
        p100::Lane::Interactive.scope(run(ctx, args)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_from_thirty_seconds_to_half_an_hour() {
        let limits = <SepaStatusJob as crate::handler::Job>::default_limits();
        assert_eq!(in_progress_delay(1, &limits), Duration::from_secs(30));
        assert_eq!(in_progress_delay(2, &limits), Duration::from_secs(60));
        assert_eq!(in_progress_delay(4, &limits), Duration::from_secs(240));
        assert_eq!(in_progress_delay(7, &limits), Duration::from_secs(1800));
        assert_eq!(in_progress_delay(500, &limits), Duration::from_secs(1800));
    }
}
