//! Locked exchanges and their state machine's persistence.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor};

use crate::{Error, Owner};

/// An exchange as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Exchange {
    /// Local id.
    pub id: i64,
    /// `partner` or `user`.
    pub owner_kind: String,
    /// The user, for user exchanges.
    pub external_user_id: Option<String>,
    /// P100's lock.
    pub lock_id: String,
    /// Source currency.
    pub currency_from: String,
    /// Target currency.
    pub currency_to: String,
    /// Amount in the source currency.
    pub amount: Decimal,
    /// The lock's expiry.
    pub expires_at: DateTime<Utc>,
    /// State (see the migration).
    pub state: String,
    /// P100's id once submitted.
    pub exchange_id: Option<String>,
    /// Why it is in its state (errors, review reasons).
    pub reason: Option<String>,
    /// When SUBMITTING was committed.
    pub submitted_at: Option<DateTime<Utc>>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, owner_kind, external_user_id, lock_id, currency_from, currency_to, amount, expires_at, state, exchange_id, reason, submitted_at, created_at";

/// A locked exchange to register.
#[derive(Debug, Clone)]
pub struct NewExchange<'a> {
    /// Whose balances.
    pub owner: &'a Owner,
    /// P100's lock.
    pub lock_id: &'a str,
    /// Source currency (lowercase).
    pub from: &'a str,
    /// Target currency (lowercase).
    pub to: &'a str,
    /// Amount in the source currency.
    pub amount: Decimal,
    /// The lock's expiry.
    pub expires_at: DateTime<Utc>,
}

/// Registers a locked exchange; the same lock twice is refused by the database.
pub async fn submit(
    db: impl PgExecutor<'_>,
    new: &NewExchange<'_>,
    first_job: crate::intake::FirstJob,
) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        r#"
        INSERT INTO exchanges (owner_kind, external_user_id, lock_id, currency_from, currency_to, amount, expires_at, queued_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END) RETURNING id
        "#,
    )
    .bind(new.owner.kind())
    .bind(new.owner.external_user_id())
    .bind(new.lock_id)
    .bind(new.from)
    .bind(new.to)
    .bind(new.amount)
    .bind(new.expires_at)
    .bind(first_job.queued())
    .fetch_one(db)
    .await?)
}

/// Loads an exchange and locks it for the caller's transaction.
pub async fn load_for_update(conn: &mut PgConnection, id: i64) -> Result<Option<Exchange>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM exchanges WHERE id = $1 FOR UPDATE");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// One exchange by local id or lock id.
pub async fn find(db: impl PgExecutor<'_>, id_or_lock: &str) -> Result<Option<Exchange>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM exchanges WHERE id = $2 OR lock_id = $1 ORDER BY id LIMIT 1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id_or_lock)
        .bind(id_or_lock.parse::<i64>().ok())
        .fetch_optional(db)
        .await?)
}

/// One exchange by its `lockId` only.
pub async fn find_by_lock(
    db: impl PgExecutor<'_>,
    lock_id: &str,
) -> Result<Option<Exchange>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM exchanges WHERE lock_id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(lock_id)
        .fetch_optional(db)
        .await?)
}

/// One exchange by P100's `exchangeId`.
pub async fn find_by_exchange_id(
    db: impl PgExecutor<'_>,
    exchange_id: &str,
) -> Result<Option<Exchange>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM exchanges WHERE exchange_id = $1 ORDER BY id LIMIT 1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(exchange_id)
        .fetch_optional(db)
        .await?)
}

/// Exchanges (only those in `state`, when given), newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<Exchange>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM exchanges WHERE ($2::text IS NULL OR state = $2) ORDER BY id DESC LIMIT $1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .bind(state)
        .fetch_all(db)
        .await?)
}

/// Moves an exchange to `state`, recording why; `exchange_id` is kept once known.
pub async fn transition(
    conn: &mut PgConnection,
    id: i64,
    state: &str,
    exchange_id: Option<&str>,
    note: Option<&str>,
) -> Result<(), Error> {
    sqlx::query(
        r#"
        UPDATE exchanges SET state = $2, exchange_id = COALESCE($3, exchange_id), reason = COALESCE($4, reason),
               submitted_at = CASE WHEN $2 = 'SUBMITTING' THEN now() ELSE submitted_at END, updated_at = now()
         WHERE id = $1
        "#,
    )
    .bind(id)
    .bind(state)
    .bind(exchange_id)
    .bind(note)
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO exchange_events (exchange, state, note) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(state)
        .bind(note)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The states an exchange went through: (state, note, at).
pub async fn events(
    db: impl PgExecutor<'_>,
    id: i64,
) -> Result<Vec<(String, Option<String>, DateTime<Utc>)>, Error> {
    Ok(sqlx::query_as(
        "SELECT state, note, at FROM exchange_events WHERE exchange = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(db)
    .await?)
}
