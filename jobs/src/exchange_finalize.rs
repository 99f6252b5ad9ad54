//! `exchange_finalize`: executes a locked exchange at P100 at most once and follows it.
//!
//! LOCKED → SUBMITTING → SUBMITTED(exchangeId) → COMPLETED | FAILED, plus EXPIRED (the lock
//! ran out before submission) and NEEDS_REVIEW. P100's Create and Finalize has no idempotency
//! key, so SUBMITTING is committed *before* the call: a run that finds an exchange already in
//! SUBMITTING (crash, timeout, P500) never sends again; it looks for the exchange in P100's
//! history by its `lockId` and records what it finds, or hands it to a person (NEEDS_REVIEW).
//! No submission within the safety margin before the lock expires. On COMPLETED the ledger
//! gets both legs and the fee as P100's details report them, under the same keys the history
//! sync uses for those legs, so they are never posted twice.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use ledger::Owner;
use ledger::exchanges::Exchange;
use ledger::provider::ObservedTx;
use p100::enums::{ExchangeStatus, TransactionType};
use p100::model::CreateExchange;
use p100::{Currency, ErrorClass, HistoryQuery, Scope};
use queue::Outcome;
use serde::{Deserialize, Serialize};

use crate::context::{JobContext, P100Health};
use crate::movement_time;

/// Default margin before lock expiry inside which we do not submit.
pub const DEFAULT_SAFETY_MARGIN: Duration = Duration::from_secs(10);
/// How long after lock expiry an unknown submission may still show up in history before a
/// person is asked to look.
pub const RESOLVE_GRACE: Duration = Duration::from_secs(600);

/// Payload of `exchange_finalize`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExchangeFinalizeArgs {
    /// Payload version.
    #[serde(default)]
    pub v: u32,
    /// The local exchange id (as printed by `exchange submit`) or its `lockId`.
    pub exchange: String,
    /// Safety margin in seconds (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_margin_seconds: Option<u64>,
}

/// Whether an exchange in `state` is no longer followed.
pub fn is_final(state: &str) -> bool {
    matches!(state, "COMPLETED" | "FAILED" | "EXPIRED" | "NEEDS_REVIEW")
}

/// What a person must check to close an exchange in NEEDS_REVIEW, from the reason the job
/// recorded (shown by the console). Empty for any other state.
pub fn review_steps(ex: &Exchange) -> Vec<String> {
    if ex.state != "NEEDS_REVIEW" {
        return Vec::new();
    }
    let lock = &ex.lock_id;
    let expiry = ex.expires_at.format("%Y-%m-%d %H:%M:%S UTC");
    let reason = ex.reason.as_deref().unwrap_or("");
    let mut steps = Vec::new();
    if ex.owner_kind == "user" {
        steps.push(format!(
            "P100 documents no user-level execute path, so nothing was sent. Execute lock {lock} for the user in P100's dashboard before it expires ({expiry}), or let it expire."
        ));
    } else if reason.contains("answer was lost") {
        steps.push(format!(
            "The submission of lock {lock} was sent, but its answer was lost and P100's history shows no exchange for it. Ask P100 whether lock {lock} was executed."
        ));
    } else if reason.contains("exchanges for lockId") {
        steps.push(format!(
            "P100's history shows more than one exchange for lock {lock}. Report it to P100 with the ids in the reason, and check whether both executed."
        ));
    } else {
        steps.push(format!(
            "Read the reason above, then look lock {lock} up in P100's dashboard or history (exchange id {}).",
            ex.exchange_id.as_deref().unwrap_or("unknown")
        ));
    }
    steps.push(format!(
        "Do not submit lock {lock} again from here: P100's exchange call has no idempotency key, so a second call may execute a second exchange (assumption A6)."
    ));
    steps.push(
        "If the exchange did execute, the next history sync of its owner posts its legs; the nightly reconciliation then shows whether the balances agree. If it did not, lock a new rate if it is still wanted."
            .to_owned(),
    );
    steps
}

fn owner_of(ex: &Exchange) -> Owner {
    match &ex.external_user_id {
        Some(id) => Owner::User(id.clone()),
        None => Owner::Partner,
    }
}

async fn set(
    ctx: &JobContext,
    ex: &Exchange,
    state: &str,
    exchange_id: Option<&str>,
    note: Option<&str>,
) -> Result<(), ledger::Error> {
    let mut conn = ctx.pool.acquire().await?;
    ledger::exchanges::transition(&mut conn, ex.id, state, exchange_id, note).await
}

/// One run; the job snoozes between steps that wait for P100.
pub async fn run(ctx: &JobContext, args: ExchangeFinalizeArgs) -> Outcome {
    match step(ctx, &args).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::retry(format!("exchange {}: {e}", args.exchange)),
    }
}

async fn step(ctx: &JobContext, args: &ExchangeFinalizeArgs) -> Result<Outcome, ledger::Error> {
    let Some(client) = &ctx.p100 else {
        return Ok(Outcome::dead("this process has no P100 client"));
    };
    let Some(found) = ledger::exchanges::find(&ctx.pool, &args.exchange).await? else {
        return Ok(Outcome::dead(format!("no exchange {}", args.exchange)));
    };
    // The row lock serialises two runs of the same exchange (after a lease loss): the second
    // waits, then sees the first one's state.
    let mut tx = ctx.pool.begin().await?;
    let Some(ex) = ledger::exchanges::load_for_update(&mut tx, found.id).await? else {
        return Ok(Outcome::dead(format!("exchange {} vanished", found.id)));
    };
    let done = |ex: &Exchange| {
        Outcome::Done(
            serde_json::json!({ "exchange": ex.id, "state": ex.state, "exchange_id": ex.exchange_id }),
        )
    };
    match ex.state.as_str() {
        state if is_final(state) => Ok(done(&ex)),
        "LOCKED" => {
            if ex.owner_kind == "user" {
                ledger::exchanges::transition(
                    &mut tx,
                    ex.id,
                    "NEEDS_REVIEW",
                    None,
                    Some("P100 documents no user-level execute path; finalize it by hand"),
                )
                .await?;
                tx.commit().await?;
                return Ok(Outcome::done());
            }
            let margin = args
                .safety_margin_seconds
                .map_or(DEFAULT_SAFETY_MARGIN, Duration::from_secs);
            let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX);
            // A margin past the end of time means no lock is ever fresh enough.
            if Utc::now()
                .checked_add_signed(margin)
                .is_none_or(|deadline| deadline >= ex.expires_at)
            {
                ledger::exchanges::transition(
                    &mut tx,
                    ex.id,
                    "EXPIRED",
                    None,
                    Some("the lock expires within the safety margin; not submitted"),
                )
                .await?;
                tx.commit().await?;
                return Ok(Outcome::done());
            }
            if ctx.p100_health() == P100Health::AuthFailed {
                return Ok(Outcome::Defer {
                    reason: "P100 rejected the API key".into(),
                    after: Duration::from_secs(300),
                });
            }
            ledger::exchanges::transition(&mut tx, ex.id, "SUBMITTING", None, None).await?;
            tx.commit().await?;
            let (Ok(from), Ok(to)) = (
                Currency::parse(&ex.currency_from),
                Currency::parse(&ex.currency_to),
            ) else {
                set(
                    ctx,
                    &ex,
                    "NEEDS_REVIEW",
                    None,
                    Some("invalid currency code"),
                )
                .await?;
                return Ok(Outcome::done());
            };
            let body = CreateExchange {
                amount: ex.amount,
                currency_from: from,
                currency_to: to,
                lock_id: ex.lock_id.clone(),
            };
            match client.create_exchange(&body).await {
                Ok(created) => {
                    set(ctx, &ex, "SUBMITTED", Some(&created.exchange_id), None).await?;
                    Ok(Outcome::Snooze {
                        result: serde_json::json!({ "exchange_id": created.exchange_id }),
                        after: Duration::from_secs(1),
                    })
                }
                // It may have happened: stay SUBMITTING; the next run looks in the history.
                Err(e) if e.class == ErrorClass::UnknownOutcome => Ok(Outcome::Retry {
                    reason: e.to_string(),
                    after: Some(Duration::from_secs(5)),
                }),
                // Not sent or refused before processing: back to LOCKED, try again later.
                Err(e) if e.class == ErrorClass::Transient => {
                    set(ctx, &ex, "LOCKED", None, Some(&e.to_string())).await?;
                    Ok(crate::p100_outcome::for_read_error(&e))
                }
                Err(e) if e.class == ErrorClass::Auth => {
                    ctx.set_p100_health(P100Health::AuthFailed);
                    set(ctx, &ex, "LOCKED", None, Some(&e.to_string())).await?;
                    Ok(Outcome::Defer {
                        reason: e.to_string(),
                        after: Duration::from_secs(300),
                    })
                }
                // P100 refused it: nothing was executed.
                Err(e) => {
                    set(ctx, &ex, "FAILED", None, Some(&e.to_string())).await?;
                    Ok(Outcome::done())
                }
            }
        }
        "SUBMITTING" => {
            tx.commit().await?;
            resolve_unknown(ctx, client, &ex).await
        }
        "SUBMITTED" => {
            tx.commit().await?;
            let Some(exchange_id) = ex.exchange_id.clone() else {
                set(
                    ctx,
                    &ex,
                    "NEEDS_REVIEW",
                    None,
                    Some("SUBMITTED without an exchangeId"),
                )
                .await?;
                return Ok(Outcome::done());
            };
            let details = match client.exchange_details(&exchange_id).await {
                Ok(d) => d,
                Err(e) => return Ok(crate::p100_outcome::for_read_error(&e)),
            };
            match details.status {
                ExchangeStatus::Completed => {
                    let owner = owner_of(&ex);
                    // P100's time of each leg from its history rows (A37); the exchange's
                    // `createdAt` (or now) when history does not show the leg.
                    let observed = details.created_at.unwrap_or_else(Utc::now);
                    let since = ex.submitted_at.unwrap_or(ex.created_at);
                    let rows = match movement_time::completed_rows(
                        client,
                        &crate::balances::scope_of(&owner),
                        TransactionType::Exchange,
                        &ex.lock_id,
                        since,
                    )
                    .await
                    {
                        Ok(rows) => rows,
                        Err(e) => {
                            tracing::warn!(
                                exchange = ex.id,
                                error = %e,
                                "P100's history could not be read for the legs' time; the exchange's createdAt is used"
                            );
                            Vec::new()
                        }
                    };
                    let mut sources = Vec::new();
                    let mut leg = |currency: &str, amount: rust_decimal::Decimal, fee| {
                        let (at, source) = movement_time::effective_at(
                            &rows,
                            |r| {
                                r.currency.as_str() == currency
                                    && r.amount.is_sign_negative() == amount.is_sign_negative()
                            },
                            observed,
                        );
                        sources.push(source.as_str());
                        ObservedTx {
                            provider_tx_id: format!("{exchange_id}:{currency}"),
                            kind: "EXCHANGE".into(),
                            status: "COMPLETED".into(),
                            currency: currency.to_owned(),
                            amount,
                            fee,
                            reference: Some(ex.lock_id.clone()),
                            exchange_id: Some(exchange_id.clone()),
                            created_at: at,
                            updated_at: at,
                            payload: serde_json::Value::Null,
                            payload_hash: String::new(),
                        }
                    };
                    let legs = [
                        leg(
                            details.currency_from.as_str(),
                            -details.amount_from,
                            details.fee.unwrap_or_default(),
                        ),
                        leg(
                            details.currency_to.as_str(),
                            details.amount_to,
                            rust_decimal::Decimal::ZERO,
                        ),
                    ];
                    // The owner's lock first: a history sync of the same owner either
                    // committed its rows of these legs already (then they stand for them and
                    // nothing is posted here) or waits and adopts these postings.
                    let mut tx = ctx.pool.begin().await?;
                    ledger::owner_lock::acquire(&mut tx, &owner).await?;
                    let mut postings = Vec::new();
                    for l in &legs {
                        let debit = l.amount.is_sign_negative();
                        if ledger::provider::row_posted_for(
                            &mut *tx,
                            &owner,
                            "EXCHANGE",
                            &ex.lock_id,
                            debit,
                        )
                        .await?
                        {
                            continue;
                        }
                        let keys = crate::mapping::local_operation_keys(&owner, l);
                        // Posted already, under today's key or the one an older build used.
                        if keys.is_empty() || ledger::postings::any_posted(&mut tx, &keys).await? {
                            continue;
                        }
                        let key = keys[0].clone();
                        match crate::mapping::to_posting(&owner, l, key) {
                            Ok(Some(p)) => postings.push(p),
                            Ok(None) => {}
                            Err(e) => {
                                drop(tx);
                                set(ctx, &ex, "NEEDS_REVIEW", None, Some(&e.to_string())).await?;
                                return Ok(Outcome::done());
                            }
                        }
                    }
                    ledger::postings::post(&mut tx, &postings).await?;
                    ledger::exchanges::transition(&mut tx, ex.id, "COMPLETED", None, None).await?;
                    tx.commit().await?;
                    Ok(Outcome::Done(serde_json::json!({
                        "exchange": ex.id,
                        "state": "COMPLETED",
                        "exchange_id": exchange_id,
                        "effective_at_source": sources,
                    })))
                }
                ExchangeStatus::Failed => {
                    set(
                        ctx,
                        &ex,
                        "FAILED",
                        None,
                        Some("P100 reports the exchange FAILED"),
                    )
                    .await?;
                    Ok(Outcome::done())
                }
                other => Ok(Outcome::Snooze {
                    result: serde_json::json!({ "p100_status": other.as_str() }),
                    after: Duration::from_secs(10),
                }),
            }
        }
        other => Ok(Outcome::dead(format!(
            "exchange {} is in unknown state {other}",
            ex.id
        ))),
    }
}

/// A submission whose answer was lost: find it in P100's history by `lockId`, never resend.
async fn resolve_unknown(
    ctx: &JobContext,
    client: &p100::Client,
    ex: &Exchange,
) -> Result<Outcome, ledger::Error> {
    let since = ex.submitted_at.unwrap_or(ex.created_at) - chrono::Duration::hours(1);
    let scope = match owner_of(ex) {
        Owner::Partner => Scope::Partner,
        Owner::User(id) => Scope::User(id),
    };
    let mut pages = std::pin::pin!(client.transaction_pages(
        scope,
        HistoryQuery {
            from: Some(since),
            ..HistoryQuery::default()
        }
    ));
    let mut ids = BTreeSet::new();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => ids.extend(
                page.transactions
                    .iter()
                    .filter(|t| t.reference.as_deref() == Some(ex.lock_id.as_str()))
                    .filter_map(|t| t.exchange_id.clone()),
            ),
            Err(e) => return Ok(crate::p100_outcome::for_read_error(&e)),
        }
    }
    match ids.len() {
        1 => {
            let id = ids.into_iter().next().unwrap_or_default();
            set(
                ctx,
                ex,
                "SUBMITTED",
                Some(&id),
                Some("the answer to the submission was lost; found in P100's history by lockId"),
            )
            .await?;
            Ok(Outcome::Snooze {
                result: serde_json::json!({ "exchange_id": id }),
                after: Duration::from_secs(1),
            })
        }
        0 if ex
            .expires_at
            .checked_add_signed(chrono::Duration::from_std(RESOLVE_GRACE).unwrap_or_default())
            .is_none_or(|until| Utc::now() < until) =>
        {
            // An exchange shows in history once settled: look again shortly.
            Ok(Outcome::Snooze {
                result: serde_json::json!({ "state": "SUBMITTING", "found": 0 }),
                after: Duration::from_secs(10),
            })
        }
        0 => {
            set(ctx, ex, "NEEDS_REVIEW", None, Some("the submission's answer was lost and P100's history shows no exchange for this lockId; check with P100 before resubmitting")).await?;
            Ok(Outcome::done())
        }
        n => {
            let note = format!(
                "P100's history shows {n} exchanges for lockId {}: {ids:?}",
                ex.lock_id
            );
            set(ctx, ex, "NEEDS_REVIEW", None, Some(&note)).await?;
            Ok(Outcome::done())
        }
    }
}

/// `exchange_finalize`: executes a locked exchange at most once and follows it.
pub struct ExchangeFinalizeJob;

impl crate::handler::Job for ExchangeFinalizeJob {
    type Args = ExchangeFinalizeArgs;
    const KIND: crate::kinds::Kind = crate::kinds::Kind::ExchangeFinalize;
    const NAME: &'static str = "exchange_finalize";

    fn default_limits() -> crate::schedule::KindLimits {
        use crate::schedule::KindLimits;
        use std::time::Duration;
        KindLimits {
            timeout: Duration::from_secs(120),
            max_attempts: 20,
            concurrency: 4,
            max_deferrals: 1_000,
            from_budget: false,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            ..KindLimits::default()
        }
    }

    fn dedup_key(args: &Self::Args) -> Result<Option<String>, String> {
        if args.exchange.trim().is_empty() {
            return Err(
                "exchange_finalize needs \"exchange\": \"<local id or lockId>\"".to_owned(),
            );
        }
        Ok(Some(format!("exchange:{}", args.exchange)))
    }

    fn unit(args: &Self::Args) -> Option<String> {
        Some(args.exchange.clone())
    }

    async fn run(
        ctx: &crate::context::JobContext,
        args: Self::Args,
        _attempt: u32,
    ) -> queue::Outcome {
        // The lock expires in seconds: every request of the run goes first.
        p100::Lane::Deadline.scope(run(ctx, args)).await
    }
}
