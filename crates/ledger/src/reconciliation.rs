//! What reconciliation reads from the database and what it records of each run.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgExecutor;

use crate::{Error, Owner};

fn columns(owners: &[Owner]) -> (Vec<&'static str>, Vec<String>) {
    owners
        .iter()
        .map(|o| {
            (
                o.kind(),
                o.external_user_id().unwrap_or_default().to_owned(),
            )
        })
        .unzip()
}

/// Tracked users to reconcile now: those with activity since their last reconciliation
/// (history rows seen, operations open, discrepancies unresolved) and those not reconciled
/// within `window`, never reconciled first, at most `limit`. Users P100 does not know are
/// left out (they are reported as `unknown_user` without a call).
pub async fn select_users(
    db: impl PgExecutor<'_>,
    window: std::time::Duration,
    limit: i64,
) -> Result<Vec<String>, Error> {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    Ok(sqlx::query_scalar(
        r#"
        SELECT u.external_user_id
          FROM tracked_users u
          LEFT JOIN reconciled_owners r ON r.owner_kind = 'user' AND r.external_user_id = u.external_user_id
         WHERE NOT u.unknown_at_p100
           AND (r.reconciled_at IS NULL OR r.reconciled_at < now() - $1::interval
                OR EXISTS (SELECT 1 FROM provider_transactions p
                            WHERE p.owner_kind = 'user' AND p.external_user_id = u.external_user_id
                              AND p.last_seen_at > r.reconciled_at)
                OR EXISTS (SELECT 1 FROM sepa_transfers s
                            WHERE s.external_user_id = u.external_user_id AND s.updated_at > r.reconciled_at)
                OR EXISTS (SELECT 1 FROM exchanges e
                            WHERE e.external_user_id = u.external_user_id AND e.updated_at > r.reconciled_at)
                OR EXISTS (SELECT 1 FROM discrepancies d
                            WHERE d.owner_kind = 'user' AND d.external_user_id = u.external_user_id
                              AND d.state <> 'resolved'))
         ORDER BY r.reconciled_at NULLS FIRST, u.external_user_id
         LIMIT $2
        "#,
    )
    .bind(window)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Tracked users P100 answered P412 for.
pub async fn unknown_users(db: impl PgExecutor<'_>) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT external_user_id FROM tracked_users WHERE unknown_at_p100 ORDER BY external_user_id",
    )
    .fetch_all(db)
    .await?)
}

/// One mirror account's settled balance at its owner's cut-off.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SettledBalance {
    /// The user, or `None` for the partner.
    pub external_user_id: Option<String>,
    /// Currency.
    pub currency: String,
    /// Balance of the entries effective up to the cut-off.
    pub balance: Decimal,
}

/// The settled balances of the owners' mirror accounts, each at its owner's cut-off: the
/// maintained balance minus the entries effective after the cut-off (few, so this reads
/// little whatever the history's length).
pub async fn settled_balances(
    db: impl PgExecutor<'_>,
    owners: &[(Owner, DateTime<Utc>)],
) -> Result<Vec<SettledBalance>, Error> {
    let (list, cutoffs): (Vec<Owner>, Vec<DateTime<Utc>>) = owners.iter().cloned().unzip();
    let (kinds, users) = columns(&list);
    Ok(sqlx::query_as(
        r#"
        SELECT a.external_user_id, a.currency,
               a.balance - COALESCE((SELECT sum(e.amount) FROM ledger_entries e
                                      WHERE e.account_id = a.id AND e.effective_at > o.cutoff), 0) AS balance
          FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS o(kind, usr, cutoff)
          JOIN ledger_accounts a
            ON a.owner_kind = o.kind AND COALESCE(a.external_user_id, '') = o.usr
        "#,
    )
    .bind(&kinds)
    .bind(&users)
    .bind(&cutoffs)
    .fetch_all(db)
    .await?)
}

/// A P100 history row (latest version) as reconciliation reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RowData {
    /// The user, or `None` for the partner's history.
    pub external_user_id: Option<String>,
    /// P100's id.
    pub provider_tx_id: String,
    /// Type.
    pub kind: String,
    /// Status.
    pub status: String,
    /// Currency.
    pub currency: String,
    /// Signed amount.
    pub amount: Decimal,
    /// Fee.
    pub fee: Decimal,
    /// Reference.
    pub reference: Option<String>,
    /// `updatedAt`.
    pub updated_at: DateTime<Utc>,
    /// Whether it has a posting.
    pub posted: bool,
    /// Why P100's latest version of it could not be read (its movement is then unknown to the
    /// ledger); `None` for a readable row.
    pub unreadable: Option<String>,
}

/// History rows worth matching: pending ones, completed ones without a posting, operation
/// rows (SEPA, exchange) seen since `since`, rows referencing `references`, and rows an
/// unresolved discrepancy is about (so it can be found matching again); and every row kept as
/// undecodable that has not been seen readable since (its P100 id, or its payload hash when it
/// had no readable id).
pub async fn rows_to_match(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    references: &[String],
) -> Result<Vec<RowData>, Error> {
    Ok(sqlx::query_as(
        r#"
        SELECT external_user_id, provider_tx_id, kind, status,
               currency, amount, fee, reference, updated_at, ledger_state = 'posted' AS posted,
               NULL::text AS unreadable
          FROM provider_transactions
         WHERE status = 'PENDING'
            OR (status = 'COMPLETED' AND ledger_state <> 'posted')
            OR (ledger_state = 'posted' AND status NOT IN ('PENDING', 'COMPLETED', 'FAILED'))
            OR (kind IN ('SEPA_TRANSFER', 'EXCHANGE') AND last_seen_at > $1)
            OR reference = ANY($2)
            OR provider_tx_id IN (SELECT subject FROM discrepancies WHERE state <> 'resolved' AND subject IS NOT NULL)
        UNION ALL
        SELECT u.external_user_id, COALESCE(u.provider_tx_id, 'unreadable:' || left(u.payload_hash, 16)),
               COALESCE(left(u.payload->>'type', 64), ''), COALESCE(left(u.payload->>'status', 64), ''),
               COALESCE(lower(left(u.payload->>'currency', 16)), ''), 0, 0, NULL, u.last_seen_at, false,
               u.error
          FROM provider_transactions_undecodable u
         WHERE NOT EXISTS (
               SELECT 1 FROM provider_transactions t
                WHERE t.owner_kind = u.owner_kind
                  AND COALESCE(t.external_user_id, '') = COALESCE(u.external_user_id, '')
                  AND t.provider_tx_id = u.provider_tx_id
                  AND t.last_seen_at > u.last_seen_at)
        "#,
    )
    .bind(since)
    .bind(references)
    .fetch_all(db)
    .await?)
}

/// A local operation (SEPA transfer or exchange) as reconciliation reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OpData {
    /// `sepa` or `exchange`.
    pub op: String,
    /// The user, or `None` for the partner.
    pub external_user_id: Option<String>,
    /// transferId or lockId.
    pub key: String,
    /// Local status or state.
    pub status: String,
    /// Currency debited.
    pub currency: String,
    /// Amount debited.
    pub amount: Decimal,
    /// Fee, if known.
    pub fee: Option<Decimal>,
    /// When it entered its status.
    pub since: DateTime<Utc>,
}

/// Operations worth matching: open ones, ones changed since `since`, and ones an unresolved
/// discrepancy is about.
pub async fn operations_to_match(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
) -> Result<Vec<OpData>, Error> {
    Ok(sqlx::query_as(
        r#"
        SELECT 'sepa' AS op, external_user_id, transfer_id AS key,
               status, currency, amount, fee,
               CASE WHEN status IN ('SUCCESSFUL', 'FAILED', 'RELEASED') THEN updated_at ELSE created_at END AS since
          FROM sepa_transfers
         WHERE status NOT IN ('SUCCESSFUL', 'FAILED', 'RELEASED') OR updated_at > $1
            OR transfer_id IN (SELECT subject FROM discrepancies WHERE state <> 'resolved' AND subject IS NOT NULL)
        UNION ALL
        SELECT 'exchange', external_user_id, lock_id, state, currency_from, amount, NULL,
               CASE WHEN state IN ('COMPLETED', 'FAILED', 'EXPIRED') THEN updated_at ELSE created_at END
          FROM exchanges
         WHERE state NOT IN ('COMPLETED', 'FAILED', 'EXPIRED') OR updated_at > $1
            OR lock_id IN (SELECT subject FROM discrepancies WHERE state <> 'resolved' AND subject IS NOT NULL)
        "#,
    )
    .bind(since)
    .fetch_all(db)
    .await?)
}

/// Starts a run; returns its id. A run of the same scope still marked running was abandoned
/// (its job timed out or its process died: one scope has one live job), and is marked failed.
/// `writes_report`: the run queues its day's report (the nightly chain).
pub async fn start_run(
    db: impl PgExecutor<'_>,
    scope: &str,
    budget: i64,
    writes_report: bool,
) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        r#"
        WITH abandoned AS (
            UPDATE reconciliation_runs
               SET state = 'failed', finished_at = now(),
                   error = 'abandoned: the job running it stopped (timeout or crash) before it was recorded'
             WHERE state = 'running' AND scope = $1
        )
        INSERT INTO reconciliation_runs (scope, p100_budget, writes_report) VALUES ($1, $2, $3) RETURNING id
        "#,
    )
    .bind(scope)
    .bind(budget)
    .bind(writes_report)
    .fetch_one(db)
    .await?)
}

/// A run as recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Run {
    /// Id.
    pub id: i64,
    /// Scope.
    pub scope: String,
    /// `running`, `finished` or `failed`.
    pub state: String,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Latest P100 read.
    pub cutoff: Option<DateTime<Utc>>,
    /// Accounts compared.
    pub accounts_checked: i64,
    /// Matched.
    pub matched: i64,
    /// Matched in flight.
    pub matched_in_flight: i64,
    /// Discrepancies found.
    pub discrepancies: i64,
    /// Totals per currency (report shape).
    pub by_currency: serde_json::Value,
    /// Unmatched transactions (report shape).
    pub unmatched: serde_json::Value,
    /// Discrepancies found by the run.
    pub discrepancy_ids: Vec<i64>,
    /// P100 calls spent.
    pub p100_calls: i64,
    /// P100 calls allowed.
    pub p100_budget: i64,
    /// Whether everything it depends on worked.
    pub complete: bool,
    /// Why not.
    pub incomplete_reasons: serde_json::Value,
    /// Why it failed.
    pub error: Option<String>,
}

const RUN_COLUMNS: &str = "id, scope, state, started_at, finished_at, cutoff, accounts_checked, matched, matched_in_flight, discrepancies, by_currency, unmatched, discrepancy_ids, p100_calls, p100_budget, complete, incomplete_reasons, error";

/// Records a run's results and marks it finished.
pub async fn finish_run(db: impl PgExecutor<'_>, run: &Run) -> Result<(), Error> {
    sqlx::query(
        r#"
        UPDATE reconciliation_runs
           SET state = 'finished', finished_at = now(), cutoff = $2, accounts_checked = $3, matched = $4,
               matched_in_flight = $5, discrepancies = $6, by_currency = $7, unmatched = $8,
               discrepancy_ids = $9, p100_calls = $10, complete = $11, incomplete_reasons = $12
         WHERE id = $1
        "#,
    )
    .bind(run.id)
    .bind(run.cutoff)
    .bind(run.accounts_checked)
    .bind(run.matched)
    .bind(run.matched_in_flight)
    .bind(run.discrepancies)
    .bind(&run.by_currency)
    .bind(&run.unmatched)
    .bind(&run.discrepancy_ids)
    .bind(run.p100_calls)
    .bind(run.complete)
    .bind(&run.incomplete_reasons)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a run failed with its error.
pub async fn fail_run(db: impl PgExecutor<'_>, id: i64, error: &str) -> Result<(), Error> {
    sqlx::query(
        "UPDATE reconciliation_runs SET state = 'failed', finished_at = now(), error = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// Records when owners were reconciled.
pub async fn mark_reconciled(
    db: impl PgExecutor<'_>,
    owners: &[Owner],
    at: DateTime<Utc>,
) -> Result<(), Error> {
    let (kinds, users) = columns(owners);
    let users: Vec<Option<&str>> = kinds
        .iter()
        .zip(&users)
        .map(|(k, u)| (*k == "user").then_some(u.as_str()))
        .collect();
    sqlx::query(
        r#"
        INSERT INTO reconciled_owners (owner_kind, external_user_id, reconciled_at)
        SELECT k, u, $3 FROM UNNEST($1::text[], $2::text[]) AS o(k, u)
        ON CONFLICT (owner_kind, external_user_id) DO UPDATE SET reconciled_at = EXCLUDED.reconciled_at
        "#,
    )
    .bind(&kinds)
    .bind(&users)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// The run a day's report describes: the last finished run that started on `day` (UTC) and
/// writes its report (the nightly chain); else the last of scope `all`; else the last of any
/// scope. A manual or one-user run later that day no longer replaces the nightly one.
pub async fn last_run_on(
    db: impl PgExecutor<'_>,
    day: chrono::NaiveDate,
) -> Result<Option<Run>, Error> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM reconciliation_runs
          WHERE state = 'finished' AND (started_at AT TIME ZONE 'UTC')::date = $1
          ORDER BY writes_report DESC, (scope = 'all') DESC, started_at DESC, id DESC LIMIT 1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(day)
        .fetch_optional(db)
        .await?)
}

/// One run.
pub async fn run(db: impl PgExecutor<'_>, id: i64) -> Result<Option<Run>, Error> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE id = $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// The finished runs up to `id`, newest last, at most `limit`.
pub async fn trend(db: impl PgExecutor<'_>, up_to: i64, limit: i64) -> Result<Vec<Run>, Error> {
    let sql = format!(
        "SELECT * FROM (SELECT {RUN_COLUMNS} FROM reconciliation_runs
                         WHERE state = 'finished' AND id <= $1 ORDER BY id DESC LIMIT $2) r
          ORDER BY id"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(up_to)
        .bind(limit)
        .fetch_all(db)
        .await?)
}

/// The latest runs of any state, newest first.
pub async fn recent_runs(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Run>, Error> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM reconciliation_runs ORDER BY id DESC LIMIT $1");
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(db)
        .await?)
}

/// A stored report as the archive lists it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredReport {
    /// The day it describes.
    pub day: chrono::NaiveDate,
    /// The run it describes.
    pub run: i64,
    /// When it was (last) written.
    pub written_at: DateTime<Utc>,
    /// Whether the run was complete.
    pub complete: Option<bool>,
    /// Accounts compared.
    pub accounts_checked: Option<i64>,
    /// Discrepancies found.
    pub discrepancies: Option<i64>,
}

/// The stored reports, newest day first.
pub async fn stored_reports(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<StoredReport>, Error> {
    Ok(sqlx::query_as(
        "SELECT day, run, written_at, (report->>'complete')::boolean AS complete,
                (report->'summary'->>'accounts_checked')::bigint AS accounts_checked,
                (report->'summary'->>'discrepancies')::bigint AS discrepancies
           FROM reports ORDER BY day DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// The report stored for `day`, with the run it describes.
pub async fn stored_report(
    db: impl PgExecutor<'_>,
    day: chrono::NaiveDate,
) -> Result<Option<(i64, serde_json::Value)>, Error> {
    Ok(
        sqlx::query_as("SELECT run, report FROM reports WHERE day = $1")
            .bind(day)
            .fetch_optional(db)
            .await?,
    )
}

/// Stores (or replaces) the report of a day.
pub async fn store_report(
    db: impl PgExecutor<'_>,
    day: chrono::NaiveDate,
    run: i64,
    report: &serde_json::Value,
) -> Result<(), Error> {
    sqlx::query(
        r#"
        INSERT INTO reports (day, run, report) VALUES ($1, $2, $3)
        ON CONFLICT (day) DO UPDATE SET run = EXCLUDED.run, report = EXCLUDED.report, written_at = now()
        "#,
    )
    .bind(day)
    .bind(run)
    .bind(report)
    .execute(db)
    .await?;
    Ok(())
}
