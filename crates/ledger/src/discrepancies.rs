//! Discrepancies between P100 and the ledger, and the workflow that closes them.
//!
//! One row per (owner, currency or subject, class): a later finding of the same thing updates
//! the row (and reopens it if it had been resolved) instead of adding another. Every change is
//! an event with its actor, time and note; events are append-only.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor};

use crate::{Error, Owner};

/// What a reconciliation run (or a job) found.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Whose balance or transaction.
    pub owner: Owner,
    /// The currency, when it is about one.
    pub currency: Option<String>,
    /// The transaction or operation (P100 transaction id, transferId, lockId), when it is
    /// about one.
    pub subject: Option<String>,
    /// `balance_mismatch`, `missing_locally`, … (checked by the database).
    pub class: String,
    /// P100's balance, for account-level findings.
    pub provider_balance: Option<Decimal>,
    /// The ledger's settled balance, for account-level findings.
    pub ledger_balance: Option<Decimal>,
    /// `provider_balance − ledger_balance`.
    pub delta: Option<Decimal>,
    /// The amount at stake, for transaction-level findings.
    pub amount: Option<Decimal>,
    /// Candidate explanations (JSON array).
    pub explanations: serde_json::Value,
    /// One line for a person.
    pub detail: Option<String>,
}

/// What [`raise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// A new discrepancy.
    Opened,
    /// An unresolved one seen again (figures refreshed).
    Updated,
    /// A resolved one found again.
    Reopened,
}

/// A discrepancy as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Discrepancy {
    /// Local id.
    pub id: i64,
    /// `partner` or `user`.
    pub owner_kind: String,
    /// The user, for user discrepancies.
    pub external_user_id: Option<String>,
    /// Currency, when it is about one.
    pub currency: Option<String>,
    /// Transaction or operation, when it is about one.
    pub subject: Option<String>,
    /// Class.
    pub class: String,
    /// P100's balance.
    pub provider_balance: Option<Decimal>,
    /// The ledger's settled balance.
    pub ledger_balance: Option<Decimal>,
    /// `provider_balance − ledger_balance`.
    pub delta: Option<Decimal>,
    /// Amount at stake (transaction-level).
    pub amount: Option<Decimal>,
    /// Candidate explanations.
    pub explanations: serde_json::Value,
    /// One line for a person.
    pub detail: Option<String>,
    /// `open`, `acknowledged` or `resolved`.
    pub state: String,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// First found.
    pub first_seen_at: DateTime<Utc>,
    /// Last found.
    pub last_seen_at: DateTime<Utc>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The reconciliation run that last found it.
    pub last_run: Option<i64>,
}

/// One entry of a discrepancy's log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Event {
    /// `opened`, `updated`, `acknowledged`, `resolved`, `auto_resolved`, `reopened`.
    pub event: String,
    /// Who: a job (`reconcile`, `sepa_status`) or a person (from the CLI).
    pub actor: String,
    /// Why.
    pub note: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

const COLUMNS: &str = "id, owner_kind, external_user_id, currency, subject, class, provider_balance, ledger_balance, delta, amount, explanations, detail, state, severity, first_seen_at, last_seen_at, resolved_at, last_run";

/// Records a finding: opens a discrepancy, refreshes an unresolved one, or reopens a resolved
/// one. `severity` gives the severity for the discrepancy's age (zero for a new one; since it
/// was first seen otherwise). Returns its id and what happened; a refresh is logged only when
/// the figures changed.
pub async fn raise(
    conn: &mut PgConnection,
    f: &Finding,
    actor: &str,
    run: Option<i64>,
    severity: impl Fn(std::time::Duration) -> String,
) -> Result<(i64, Raised), Error> {
    let inserted: Option<i64> = sqlx::query_scalar(
        r#"
        INSERT INTO discrepancies (owner_kind, external_user_id, currency, subject, class, provider_balance,
                                   ledger_balance, delta, amount, explanations, detail, severity, last_run)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        ON CONFLICT (owner_kind, COALESCE(external_user_id, ''), COALESCE(currency, ''), COALESCE(subject, ''), class)
        DO NOTHING RETURNING id
        "#,
    )
    .bind(f.owner.kind())
    .bind(f.owner.external_user_id())
    .bind(&f.currency)
    .bind(&f.subject)
    .bind(&f.class)
    .bind(f.provider_balance)
    .bind(f.ledger_balance)
    .bind(f.delta)
    .bind(f.amount)
    .bind(&f.explanations)
    .bind(&f.detail)
    .bind(severity(std::time::Duration::ZERO))
    .bind(run)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        log(conn, id, "opened", actor, f.detail.as_deref()).await?;
        return Ok((id, Raised::Opened));
    }
    #[derive(sqlx::FromRow)]
    struct Existing {
        id: i64,
        state: String,
        first_seen_at: DateTime<Utc>,
        provider_balance: Option<Decimal>,
        ledger_balance: Option<Decimal>,
        delta: Option<Decimal>,
        amount: Option<Decimal>,
    }
    let old: Existing = sqlx::query_as(
        r#"
        SELECT id, state, first_seen_at, provider_balance, ledger_balance, delta, amount FROM discrepancies
         WHERE owner_kind = $1 AND COALESCE(external_user_id, '') = COALESCE($2, '')
           AND COALESCE(currency, '') = COALESCE($3, '') AND COALESCE(subject, '') = COALESCE($4, '')
           AND class = $5
         FOR UPDATE
        "#,
    )
    .bind(f.owner.kind())
    .bind(f.owner.external_user_id())
    .bind(&f.currency)
    .bind(&f.subject)
    .bind(&f.class)
    .fetch_one(&mut *conn)
    .await?;
    let changed = (
        old.provider_balance,
        old.ledger_balance,
        old.delta,
        old.amount,
    ) != (f.provider_balance, f.ledger_balance, f.delta, f.amount);
    let age = (Utc::now() - old.first_seen_at)
        .to_std()
        .unwrap_or_default();
    sqlx::query(
        r#"
        UPDATE discrepancies
           SET provider_balance = $2, ledger_balance = $3, delta = $4, amount = $5, explanations = $6,
               detail = $7, severity = $8, last_seen_at = now(), last_run = COALESCE($9, last_run),
               state = CASE WHEN state = 'resolved' THEN 'open' ELSE state END,
               resolved_at = CASE WHEN state = 'resolved' THEN NULL ELSE resolved_at END
         WHERE id = $1
        "#,
    )
    .bind(old.id)
    .bind(f.provider_balance)
    .bind(f.ledger_balance)
    .bind(f.delta)
    .bind(f.amount)
    .bind(&f.explanations)
    .bind(&f.detail)
    .bind(severity(age))
    .bind(run)
    .execute(&mut *conn)
    .await?;
    if old.state == "resolved" {
        log(conn, old.id, "reopened", actor, f.detail.as_deref()).await?;
        Ok((old.id, Raised::Reopened))
    } else {
        if changed {
            log(conn, old.id, "updated", actor, f.detail.as_deref()).await?;
        }
        Ok((old.id, Raised::Updated))
    }
}

/// Resolves, on behalf of `actor`, the unresolved discrepancies among `ids` (a run found the
/// account matching again). Returns how many it resolved.
pub async fn auto_resolve(
    conn: &mut PgConnection,
    ids: &[i64],
    actor: &str,
    note: &str,
) -> Result<u64, Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let resolved: Vec<i64> = sqlx::query_scalar(
        "UPDATE discrepancies SET state = 'resolved', resolved_at = now()
          WHERE id = ANY($1) AND state <> 'resolved' RETURNING id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO discrepancy_events (discrepancy, event, actor, note)
         SELECT id, 'auto_resolved', $2, $3 FROM UNNEST($1::bigint[]) AS id",
    )
    .bind(&resolved)
    .bind(actor)
    .bind(note)
    .execute(&mut *conn)
    .await?;
    Ok(resolved.len() as u64)
}

/// Why a person's step was refused.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// No such discrepancy.
    #[error("no discrepancy {0}")]
    NotFound(i64),
    /// The step does not apply to its state.
    #[error("discrepancy {id} is {state}; {step} applies to {allowed}")]
    WrongState {
        /// Which one.
        id: i64,
        /// Its state.
        state: String,
        /// The step asked for.
        step: &'static str,
        /// States the step applies to.
        allowed: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Ledger(#[from] Error),
}

/// A person's step: `acknowledged` (from open) or `resolved` (from open or acknowledged).
pub async fn step(
    conn: &mut PgConnection,
    id: i64,
    to: &'static str,
    actor: &str,
    note: &str,
) -> Result<Discrepancy, StepError> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM discrepancies WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(Error::from)?;
    let state = state.ok_or(StepError::NotFound(id))?;
    let allowed: &[&str] = match to {
        "acknowledged" => &["open"],
        _ => &["open", "acknowledged"],
    };
    if !allowed.contains(&state.as_str()) {
        return Err(StepError::WrongState {
            id,
            state,
            step: if to == "acknowledged" {
                "ack"
            } else {
                "resolve"
            },
            allowed: if to == "acknowledged" {
                "open ones"
            } else {
                "open or acknowledged ones"
            },
        });
    }
    sqlx::query(
        "UPDATE discrepancies SET state = $2,
                resolved_at = CASE WHEN $2 = 'resolved' THEN now() ELSE resolved_at END
          WHERE id = $1",
    )
    .bind(id)
    .bind(to)
    .execute(&mut *conn)
    .await
    .map_err(Error::from)?;
    log(conn, id, to, actor, Some(note)).await?;
    show(&mut *conn, id).await?.ok_or(StepError::NotFound(id))
}

async fn log(
    conn: &mut PgConnection,
    id: i64,
    event: &str,
    actor: &str,
    note: Option<&str>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO discrepancy_events (discrepancy, event, actor, note) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(event)
    .bind(actor)
    .bind(note)
    .execute(conn)
    .await?;
    Ok(())
}

/// Filter of [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this state.
    pub state: Option<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Only this class.
    pub class: Option<String>,
    /// Only this owner's.
    pub owner: Option<crate::Owner>,
    /// Include resolved ones (when no state is given).
    pub all: bool,
    /// At most this many.
    pub limit: i64,
}

/// Discrepancies, most severe and oldest first.
pub async fn list(db: impl PgExecutor<'_>, filter: &Filter) -> Result<Vec<Discrepancy>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM discrepancies
          WHERE ($1::text IS NULL OR state = $1)
            AND ($2::text IS NULL OR severity = $2)
            AND ($1::text IS NOT NULL OR $3 OR state <> 'resolved')
            AND ($5::text IS NULL OR class = $5)
            AND ($6::text IS NULL OR (owner_kind = $6 AND external_user_id IS NOT DISTINCT FROM $7))
          ORDER BY CASE severity WHEN 'high' THEN 0 WHEN 'medium' THEN 1 ELSE 2 END, first_seen_at, id
          LIMIT $4"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&filter.state)
        .bind(&filter.severity)
        .bind(filter.all)
        .bind(filter.limit)
        .bind(&filter.class)
        .bind(filter.owner.as_ref().map(crate::Owner::kind))
        .bind(
            filter
                .owner
                .as_ref()
                .and_then(crate::Owner::external_user_id),
        )
        .fetch_all(db)
        .await?)
}

/// Every unresolved discrepancy.
pub async fn unresolved(db: impl PgExecutor<'_>) -> Result<Vec<Discrepancy>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM discrepancies WHERE state <> 'resolved' ORDER BY id");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(db)
        .await?)
}

/// The discrepancies with these ids, in the order given.
pub async fn by_ids(db: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<Discrepancy>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM discrepancies d JOIN UNNEST($1::bigint[]) WITH ORDINALITY AS u(id, n) USING (id) ORDER BY u.n"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(db)
        .await?)
}

/// One discrepancy.
pub async fn show(db: impl PgExecutor<'_>, id: i64) -> Result<Option<Discrepancy>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM discrepancies WHERE id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// A discrepancy's log, oldest first.
pub async fn events(db: impl PgExecutor<'_>, id: i64) -> Result<Vec<Event>, Error> {
    Ok(sqlx::query_as(
        "SELECT event, actor, note, at FROM discrepancy_events WHERE discrepancy = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(db)
    .await?)
}

/// Unresolved discrepancies per severity (for metrics).
pub async fn open_by_severity(db: impl PgExecutor<'_>) -> Result<Vec<(String, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT severity, count(*) FROM discrepancies WHERE state <> 'resolved' GROUP BY severity ORDER BY severity",
    )
    .fetch_all(db)
    .await?)
}
