//! Outgoing SEPA transfers we follow, and the holds they place on the ledger.
//!
//! A hold moves the transfer's amount from the owner's hold account to the holds clearing
//! account when tracking starts; the account mirroring P100's balance is untouched until P100
//! reports the transfer `SUCCESSFUL` (the settled movement is posted then, by whoever sees it
//! first: the SEPA job or the history sync). Settling and releasing both reverse the hold.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor};

use crate::accounts::{AccountKind, AccountRef};
use crate::postings::{self, NewEntry, NewPosting, PostingMeta, Source};
use crate::{Error, Owner};

/// Statuses after which a transfer is no longer polled.
pub const TERMINAL: [&str; 3] = ["SUCCESSFUL", "FAILED", RELEASED];
/// P100 still answered P428 after the grace period; its hold stays and it is re-read slowly.
pub const MISSING: &str = "MISSING_AT_PROVIDER";
/// A person released the hold of a transfer P100 never showed.
pub const RELEASED: &str = "RELEASED";

/// A transfer as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct SepaTransfer {
    /// Local id.
    pub id: i64,
    /// P100's `transferId`.
    pub transfer_id: String,
    /// `partner` or `user`.
    pub owner_kind: String,
    /// The user, for user transfers.
    pub external_user_id: Option<String>,
    /// Amount as registered.
    pub amount: Decimal,
    /// Currency as registered.
    pub currency: String,
    /// `TRACKING`, P100's status as last read, `MISSING_AT_PROVIDER` or `RELEASED`.
    pub status: String,
    /// `none`, `held`, `settled` or `released`.
    pub hold_state: String,
    /// Amount as P100 reports it.
    pub p100_amount: Option<Decimal>,
    /// Currency as P100 reports it.
    pub p100_currency: Option<String>,
    /// Fee as P100 reports it.
    pub fee: Option<Decimal>,
    /// P100's `error` object of a failed transfer.
    pub error: Option<serde_json::Value>,
    /// Why it is in its status (errors, notes).
    pub reason: Option<String>,
    /// Reads of P100 that found it still in progress (drives the growing delay).
    pub polls: i32,
    /// Last time P100 was asked.
    pub checked_at: Option<DateTime<Utc>>,
    /// When tracking started.
    pub created_at: DateTime<Utc>,
}

impl SepaTransfer {
    /// Whose balance the transfer debits.
    pub fn owner(&self) -> Result<Owner, Error> {
        Owner::from_columns(&self.owner_kind, self.external_user_id.clone())
    }

    /// True once it is no longer followed.
    pub fn is_terminal(&self) -> bool {
        TERMINAL.contains(&self.status.as_str())
    }
}

const COLUMNS: &str = "id, transfer_id, owner_kind, external_user_id, amount, currency, status, hold_state, p100_amount, p100_currency, fee, error, reason, polls, checked_at, created_at";

/// Idempotency key of a transfer's hold.
pub fn hold_key(transfer_id: &str) -> String {
    format!("sepa-hold:{transfer_id}")
}

/// Idempotency key of the reversal that ends a transfer's hold (settled or released).
pub fn release_key(transfer_id: &str) -> String {
    format!("sepa-hold-release:{transfer_id}")
}

/// The hold a transfer places: its amount reserved on the owner's hold account.
pub fn hold_posting(t: &SepaTransfer) -> Result<NewPosting, Error> {
    let owner = t.owner()?;
    let entries = vec![
        NewEntry {
            account: AccountRef::hold(&owner, &t.currency),
            amount: -t.amount,
        },
        NewEntry {
            account: AccountRef::counter(AccountKind::HoldsClearing, &t.currency),
            amount: t.amount,
        },
    ];
    let meta = PostingMeta {
        key: hold_key(&t.transfer_id),
        source: Source::LocalOperation,
        provider_tx_id: None,
        provider_status: None,
        description: format!("hold for SEPA transfer {}", t.transfer_id),
        effective_at: t.created_at,
    };
    NewPosting::new(meta, entries).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Registers a transfer and places its hold, in the caller's transaction. The same
/// `transferId` twice is refused by the database.
pub async fn track(
    conn: &mut PgConnection,
    owner: &Owner,
    transfer_id: &str,
    amount: Decimal,
    currency: &str,
    first_job: crate::intake::FirstJob,
) -> Result<SepaTransfer, Error> {
    // The hold is a posting for this owner: its write lock first, before any row is written.
    crate::owner_lock::acquire(conn, owner).await?;
    let sql = format!(
        "INSERT INTO sepa_transfers (owner_kind, external_user_id, transfer_id, amount, currency, queued_at)
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END) RETURNING {COLUMNS}"
    );
    let t: SepaTransfer = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(owner.kind())
        .bind(owner.external_user_id())
        .bind(transfer_id)
        .bind(amount)
        .bind(currency)
        .bind(first_job.queued())
        .fetch_one(&mut *conn)
        .await?;
    place_hold(conn, &t).await?;
    event(conn, t.id, "TRACKING", Some("hold placed")).await?;
    Ok(SepaTransfer {
        hold_state: "held".into(),
        ..t
    })
}

/// Places the hold of a transfer registered without one (an intake row). Idempotent.
pub async fn place_hold(conn: &mut PgConnection, t: &SepaTransfer) -> Result<(), Error> {
    if t.hold_state != "none" {
        return Ok(());
    }
    postings::post(conn, &[hold_posting(t)?]).await?;
    sqlx::query("UPDATE sepa_transfers SET hold_state = 'held', updated_at = now() WHERE id = $1")
        .bind(t.id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Ends a transfer's hold as `settled` or `released`, effective at `at`. Idempotent.
pub async fn end_hold(
    conn: &mut PgConnection,
    t: &SepaTransfer,
    hold_state: &str,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    if t.hold_state == "held" {
        let description = format!("SEPA transfer {} {hold_state}", t.transfer_id);
        postings::reverse(
            conn,
            &[(hold_key(&t.transfer_id), release_key(&t.transfer_id), at)],
            &description,
        )
        .await?;
    }
    sqlx::query("UPDATE sepa_transfers SET hold_state = $2, updated_at = now() WHERE id = $1")
        .bind(t.id)
        .bind(hold_state)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Why a person's release was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// No such transfer is tracked.
    #[error("no SEPA transfer {0} is tracked")]
    NotFound(String),
    /// Only transfers P100 does not know can be released by hand.
    #[error("transfer {transfer_id} is {status}; only {MISSING} transfers can be released by hand")]
    WrongStatus {
        /// Which.
        transfer_id: String,
        /// Its status.
        status: String,
    },
    /// The database failed.
    #[error(transparent)]
    Ledger(#[from] Error),
}

/// A person releases the hold of the transfer `transfer_id`, in the caller's transaction: the
/// owner's write lock, then the transfer's row (the one order every writer uses; `sepa_status`
/// takes them so too), then [`release`]. Returns the transfer as it was.
pub async fn release_by_hand(
    conn: &mut PgConnection,
    transfer_id: &str,
    actor: &str,
    note: &str,
) -> Result<SepaTransfer, ReleaseError> {
    let t = find(&mut *conn, transfer_id)
        .await?
        .ok_or_else(|| ReleaseError::NotFound(transfer_id.to_owned()))?;
    crate::owner_lock::acquire(conn, &t.owner()?).await?;
    let t = load_for_update(conn, t.id)
        .await?
        .ok_or_else(|| ReleaseError::NotFound(transfer_id.to_owned()))?;
    release(conn, &t, actor, note).await?;
    Ok(t)
}

/// A person releases the hold of a transfer P100 never showed; it is no longer followed.
pub async fn release(
    conn: &mut PgConnection,
    t: &SepaTransfer,
    actor: &str,
    note: &str,
) -> Result<(), ReleaseError> {
    if t.status != MISSING {
        return Err(ReleaseError::WrongStatus {
            transfer_id: t.transfer_id.clone(),
            status: t.status.clone(),
        });
    }
    end_hold(conn, t, "released", Utc::now()).await?;
    let seen = Observation {
        status: RELEASED.into(),
        note: Some(format!("hold released by {actor}: {note}")),
        ..Observation::default()
    };
    record(conn, t, &seen).await?;
    Ok(())
}

/// What one read of P100 found.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// New status.
    pub status: String,
    /// Amount P100 reports.
    pub p100_amount: Option<Decimal>,
    /// Currency P100 reports.
    pub p100_currency: Option<String>,
    /// Fee P100 reports.
    pub fee: Option<Decimal>,
    /// P100's error object.
    pub error: Option<serde_json::Value>,
    /// Why (kept as the transfer's reason when given).
    pub note: Option<String>,
    /// Whether this read found the transfer still in progress.
    pub still_pending: bool,
}

/// Records a read of P100; a status change (or a note) is added to the transfer's events.
pub async fn record(
    conn: &mut PgConnection,
    t: &SepaTransfer,
    seen: &Observation,
) -> Result<(), Error> {
    sqlx::query(
        r#"
        UPDATE sepa_transfers
           SET status = $2, p100_amount = COALESCE($3, p100_amount), p100_currency = COALESCE($4, p100_currency),
               fee = COALESCE($5, fee), error = COALESCE($6, error), reason = COALESCE($7, reason),
               polls = CASE WHEN $8 THEN polls + 1 ELSE 0 END, checked_at = now(), updated_at = now()
         WHERE id = $1
        "#,
    )
    .bind(t.id)
    .bind(&seen.status)
    .bind(seen.p100_amount)
    .bind(&seen.p100_currency)
    .bind(seen.fee)
    .bind(&seen.error)
    .bind(&seen.note)
    .bind(seen.still_pending)
    .execute(&mut *conn)
    .await?;
    if seen.status != t.status || seen.note.is_some() {
        event(conn, t.id, &seen.status, seen.note.as_deref()).await?;
    }
    Ok(())
}

async fn event(
    conn: &mut PgConnection,
    id: i64,
    status: &str,
    note: Option<&str>,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO sepa_events (transfer, status, note) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(status)
        .bind(note)
        .execute(conn)
        .await?;
    Ok(())
}

/// Loads a transfer and locks it for the caller's transaction.
pub async fn load_for_update(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<SepaTransfer>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM sepa_transfers WHERE id = $1 FOR UPDATE");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// One transfer by P100's `transferId`.
pub async fn find(
    db: impl PgExecutor<'_>,
    transfer_id: &str,
) -> Result<Option<SepaTransfer>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM sepa_transfers WHERE transfer_id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(transfer_id)
        .fetch_optional(db)
        .await?)
}

/// Transfers (only those in `status`, when given), newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<SepaTransfer>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM sepa_transfers WHERE ($2::text IS NULL OR status = $2) ORDER BY id DESC LIMIT $1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .bind(status)
        .fetch_all(db)
        .await?)
}

/// The statuses a transfer went through: (status, note, at).
pub async fn events(
    db: impl PgExecutor<'_>,
    id: i64,
) -> Result<Vec<(String, Option<String>, DateTime<Utc>)>, Error> {
    Ok(
        sqlx::query_as("SELECT status, note, at FROM sepa_events WHERE transfer = $1 ORDER BY id")
            .bind(id)
            .fetch_all(db)
            .await?,
    )
}
