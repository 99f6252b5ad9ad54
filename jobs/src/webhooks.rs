//! What a P100 webhook leads to: the polling job of the unit it names, brought forward.
//!
//! A webhook is a hint, never a fact to post: P100 signs nothing and sends no event id, and
//! deliveries may arrive late, twice or out of order. So a delivery never writes the ledger
//! or a status; it only makes the job that reads P100's API run now (`kyc_poll`,
//! `sepa_status`, `tx_sync` of the owner, `exchange_finalize` of an exchange still being
//! followed, a first `reconcile` with sync for a user's `ACTIVE`), and that job records what
//! the API says. A state can therefore never move backwards because of a webhook. A delivery
//! about something we do not follow is kept and shown as `ignored`.
//!
//! Deliveries are acted on from the inbox in batches ([`act`]), by whichever replica claims
//! them first, in the transaction that records the effect: a crash between the two leaves the
//! delivery to be acted on again, never half-done. [`confirm`] then notes when the job's run
//! that answers the delivery has ended (`webhook_confirm_seconds`).

use ledger::webhooks::{Delivery, DeliveryState, Effect};
use p100::webhook::Route;
use queue::NewJob;
use serde_json::json;

use crate::enqueue::new_job;
use crate::kinds::Kind;
use crate::schedule::ScheduleFile;

/// Acting on the inbox failed (the deliveries stay to be acted on).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The inbox or a lookup.
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    /// Enqueueing.
    #[error(transparent)]
    Queue(#[from] queue::Error),
    /// A job's arguments did not fit its kind (a bug: they are built from a validated id).
    #[error("webhook job arguments: {0}")]
    Args(String),
}

/// Deliveries acted on per transaction.
pub const BATCH: i64 = 200;

/// Acts on up to [`BATCH`] deliveries not yet acted on; returns how many.
pub async fn act(pool: &ledger::PgPool, schedule: &ScheduleFile) -> Result<usize, Error> {
    let mut tx = pool.begin().await.map_err(ledger::Error::from)?;
    let deliveries = ledger::webhooks::claim_unacted(&mut tx, BATCH).await?;
    for d in &deliveries {
        // Each delivery in a savepoint: one that cannot be acted on (an id stored before
        // today's checks, say) is recorded as such instead of blocking the inbox behind it.
        let mut one = ledger::savepoint(&mut tx).await?;
        let effect = match effect_of(&mut one, schedule, d).await {
            Ok(effect) => {
                one.commit().await.map_err(ledger::Error::from)?;
                effect
            }
            Err(e) if is_database(&e) => return Err(e),
            Err(e) => {
                one.rollback().await.map_err(ledger::Error::from)?;
                Effect {
                    state: DeliveryState::Ignored,
                    text: format!("could not be acted on: {e}"),
                    job: None,
                }
            }
        };
        tracing::info!(
            webhook.id = d.id,
            webhook.route = %d.route,
            webhook.entity = d.entity_id.as_deref().unwrap_or(""),
            webhook.status = d.status.as_deref().unwrap_or(""),
            job.id = effect.job.map(|j| j.0),
            "webhook {} {}: {}",
            d.route,
            d.entity_id.as_deref().unwrap_or(""),
            effect.text
        );
        ledger::webhooks::record_effect(&mut *tx, d.id, &effect).await?;
    }
    tx.commit().await.map_err(ledger::Error::from)?;
    Ok(deliveries.len())
}

/// A failure of the database itself (the batch is retried later), not of one delivery.
fn is_database(e: &Error) -> bool {
    matches!(
        e,
        Error::Ledger(ledger::Error::Database(_)) | Error::Queue(queue::Error::Database(_))
    )
}

/// Notes deliveries whose job has finished the run that answers them; returns each one's
/// route and seconds from its arrival to now.
pub async fn confirm(pool: &ledger::PgPool) -> Result<Vec<(String, f64)>, Error> {
    let now = chrono::Utc::now();
    Ok(ledger::webhooks::confirm_answered(pool)
        .await?
        .into_iter()
        .map(|(route, received_at)| {
            let waited = (now - received_at).num_milliseconds().max(0) as f64 / 1000.0;
            (route, waited)
        })
        .collect())
}

/// Decides and does what one delivery leads to.
async fn effect_of(
    conn: &mut ledger::PgConnection,
    schedule: &ScheduleFile,
    d: &Delivery,
) -> Result<Effect, Error> {
    let ignored = |text: String| Effect {
        state: DeliveryState::Ignored,
        text,
        job: None,
    };
    let Some(route) = Route::parse(&d.route) else {
        return Ok(ignored(format!("route {} is not followed", d.route)));
    };
    let Some(entity) = d.entity_id.as_deref() else {
        return Ok(ignored("names no entity".into()));
    };
    let claimed = d.status.as_deref().unwrap_or("");
    match route {
        Route::Kyc => {
            let Some(user) = ledger::users::show(&mut *conn, entity).await? else {
                return Ok(ignored(format!("user {entity} is not tracked")));
            };
            let seen = match (&user.kyc_status, &user.kyc_attempt_status) {
                (Some(s), Some(a)) => format!("{s}/{a}"),
                (s, a) => s.clone().or(a.clone()).unwrap_or_default(),
            };
            if seen == claimed {
                return Ok(nothing_new(&seen));
            }
            bring_forward(conn, schedule, Kind::KycPoll, json!({ "user": entity })).await
        }
        Route::User => {
            if ledger::users::show(&mut *conn, entity).await?.is_none() {
                return Ok(ignored(format!("user {entity} is not tracked")));
            }
            // Balances exist now: the first balance read, after a history sync.
            let args = json!({ "user": entity, "sync": true });
            bring_forward(conn, schedule, Kind::Reconcile, args).await
        }
        Route::PoaVerification => Ok(ignored(
            "proof-of-address verification is not followed by p100-recon".into(),
        )),
        Route::SepaTransfer => {
            let Some(transfer) = ledger::sepa::find(&mut *conn, entity).await? else {
                return Ok(ignored(format!("transfer {entity} is not tracked")));
            };
            // A transfer we no longer follow has nothing left to read (its job would end at once).
            if transfer.status == claimed || transfer.is_terminal() {
                return Ok(nothing_new(&transfer.status));
            }
            bring_forward(
                conn,
                schedule,
                Kind::SepaStatus,
                json!({ "transfer": entity }),
            )
            .await
        }
        Route::Exchange => {
            let Some(ex) = ledger::exchanges::find_by_exchange_id(&mut *conn, entity).await? else {
                return Ok(ignored(format!("exchange {entity} is not tracked")));
            };
            if !crate::exchange_finalize::is_final(&ex.state) {
                let args = json!({ "exchange": ex.id.to_string() });
                return bring_forward(conn, schedule, Kind::ExchangeFinalize, args).await;
            }
            let args = match &ex.external_user_id {
                Some(user) => json!({ "user": user }),
                None => json!({ "partner": true }),
            };
            bring_forward(conn, schedule, Kind::TxSync, args).await
        }
        Route::SepaDeposit
        | Route::CryptoDeposit
        | Route::CryptoWithdrawal
        | Route::P2pTransfer
        | Route::CardTransaction => {
            // The movement shows in its owner's history: sync that, if we follow the owner.
            let Some(user) = d.external_user_id.as_deref() else {
                return Ok(ignored(
                    "names no externalUserId (the partner's own history is synced on its schedule)"
                        .into(),
                ));
            };
            if ledger::users::show(&mut *conn, user).await?.is_none() {
                return Ok(ignored(format!("user {user} is not tracked")));
            }
            bring_forward(conn, schedule, Kind::TxSync, json!({ "user": user })).await
        }
    }
}

fn nothing_new(seen: &str) -> Effect {
    Effect {
        state: DeliveryState::Accepted,
        text: format!("polling already saw {seen}; nothing to do"),
        job: None,
    }
}

async fn bring_forward(
    conn: &mut ledger::PgConnection,
    schedule: &ScheduleFile,
    kind: Kind,
    args: serde_json::Value,
) -> Result<Effect, Error> {
    // The arguments are built here from a validated id, so they always fit the kind.
    let job: NewJob = new_job(kind, args, schedule, None).map_err(Error::Args)?;
    let done = queue::store::enqueue(conn, &job).await?;
    // The run that answers this delivery is the next one to end, or the one after the run in
    // progress (which may have read P100 before the change).
    let answering_runs = done.runs + 1 + i32::from(done.rerun_after);
    let verb = if done.created {
        "queued"
    } else {
        "brought forward"
    };
    Ok(Effect {
        state: DeliveryState::Accepted,
        text: format!("{verb} {kind} job {}", done.id),
        job: Some((done.id, answering_runs)),
    })
}
