//! Tracked users: whom the sweeps follow.

use sqlx::PgExecutor;

use crate::Error;

/// Starts following users; returns how many were new.
pub async fn track(
    db: impl PgExecutor<'_>,
    ids: &[String],
    source: &str,
    first_job: crate::intake::FirstJob,
) -> Result<u64, Error> {
    let done = sqlx::query(
        "INSERT INTO tracked_users (external_user_id, source, queued_at)
         SELECT id, $2, CASE WHEN $3 THEN now() END FROM UNNEST($1::text[]) AS u(id) ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(source)
    .bind(first_job.queued())
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Tracked users whose history was synced longest ago (never first), at most `limit`.
pub async fn due_for_sync(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar(
        r#"
        SELECT t.external_user_id
          FROM tracked_users t
          LEFT JOIN sync_cursors c ON c.owner_kind = 'user' AND c.external_user_id = t.external_user_id
         ORDER BY c.synced_at NULLS FIRST, t.external_user_id
         LIMIT $1
        "#,
    )
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// A user's KYC as last seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct TrackedUser {
    /// The partner's id.
    pub external_user_id: String,
    /// P100's `status` (or NO_VERIFICATION / UNKNOWN_USER).
    pub kyc_status: Option<String>,
    /// P100's `attemptStatus`.
    pub kyc_attempt_status: Option<String>,
    /// P100's `rejectionReason`, when it sent one.
    pub kyc_rejection_reason: Option<String>,
    /// When P100 was last asked.
    pub kyc_checked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Polls in a row that found the verification in progress.
    pub kyc_pending_polls: i32,
    /// P100 answered P412 (user unknown).
    pub unknown_at_p100: bool,
    /// Since when we follow the user.
    pub tracked_at: chrono::DateTime<chrono::Utc>,
}

/// What one KYC poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KycObservation {
    /// P100's `status`, or NO_VERIFICATION (P445) / UNKNOWN_USER (P412).
    pub status: String,
    /// P100's `attemptStatus`.
    pub attempt_status: Option<String>,
    /// P100's `rejectionReason`.
    pub rejection_reason: Option<String>,
    /// P100 request id of the poll.
    pub request_id: Option<String>,
    /// True when the verification is still in progress (drives the growing delay).
    pub in_progress: bool,
}

/// Records a poll: the user's current KYC, and a history row when anything changed. Returns
/// the user as now stored, or `None` if the user is not tracked.
pub async fn record_kyc(
    conn: &mut sqlx::PgConnection,
    user: &str,
    seen: &KycObservation,
) -> Result<Option<TrackedUser>, Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let before: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT kyc_status, kyc_attempt_status, kyc_rejection_reason FROM tracked_users WHERE external_user_id = $1 FOR UPDATE",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(before) = before else {
        return Ok(None);
    };
    let now = (
        Some(seen.status.clone()),
        seen.attempt_status.clone(),
        seen.rejection_reason.clone(),
    );
    if before != now {
        sqlx::query(
            "INSERT INTO kyc_checks (external_user_id, status, attempt_status, rejection_reason, p100_request_id) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user)
        .bind(&seen.status)
        .bind(&seen.attempt_status)
        .bind(&seen.rejection_reason)
        .bind(&seen.request_id)
        .execute(&mut *tx)
        .await?;
    }
    let stored: TrackedUser = sqlx::query_as(
        r#"
        UPDATE tracked_users
           SET kyc_status = $2, kyc_attempt_status = $3, kyc_rejection_reason = $4, kyc_checked_at = now(),
               kyc_pending_polls = CASE WHEN $5 THEN kyc_pending_polls + 1 ELSE 0 END,
               unknown_at_p100 = ($2 = 'UNKNOWN_USER')
         WHERE external_user_id = $1
        RETURNING external_user_id, kyc_status, kyc_attempt_status, kyc_rejection_reason, kyc_checked_at,
                  kyc_pending_polls, unknown_at_p100, tracked_at
        "#,
    )
    .bind(user)
    .bind(&seen.status)
    .bind(&seen.attempt_status)
    .bind(&seen.rejection_reason)
    .bind(seen.in_progress)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(stored))
}

/// Tracked users, by id.
pub async fn list(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<TrackedUser>, Error> {
    search(db, None, None, limit).await
}

/// Tracked users whose id contains `text` and whose KYC status is `kyc` (`none` for never
/// checked), by id.
pub async fn search(
    db: impl PgExecutor<'_>,
    text: Option<&str>,
    kyc: Option<&str>,
    limit: i64,
) -> Result<Vec<TrackedUser>, Error> {
    Ok(sqlx::query_as(
        r#"
        SELECT external_user_id, kyc_status, kyc_attempt_status, kyc_rejection_reason, kyc_checked_at,
               kyc_pending_polls, unknown_at_p100, tracked_at
          FROM tracked_users
         WHERE ($2::text IS NULL OR strpos(external_user_id, $2) > 0)
           AND ($3::text IS NULL OR ($3 = 'none' AND kyc_status IS NULL) OR kyc_status = $3)
         ORDER BY external_user_id LIMIT $1
        "#,
    )
    .bind(limit)
    .bind(text)
    .bind(kyc)
    .fetch_all(db)
    .await?)
}

/// One tracked user.
pub async fn show(db: impl PgExecutor<'_>, user: &str) -> Result<Option<TrackedUser>, Error> {
    Ok(sqlx::query_as(
        r#"
        SELECT external_user_id, kyc_status, kyc_attempt_status, kyc_rejection_reason, kyc_checked_at,
               kyc_pending_polls, unknown_at_p100, tracked_at
          FROM tracked_users WHERE external_user_id = $1
        "#,
    )
    .bind(user)
    .fetch_optional(db)
    .await?)
}

/// A user's KYC history: (status, attempt status, rejection reason, checked at).
pub async fn kyc_history(
    db: impl PgExecutor<'_>,
    user: &str,
) -> Result<
    Vec<(
        String,
        Option<String>,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
    )>,
    Error,
> {
    Ok(sqlx::query_as(
        "SELECT status, attempt_status, rejection_reason, checked_at FROM kyc_checks WHERE external_user_id = $1 ORDER BY id",
    )
    .bind(user)
    .fetch_all(db)
    .await?)
}

/// Users P100 answered for: any marked unknown at P100 is known again.
pub async fn mark_known(db: impl PgExecutor<'_>, users: &[String]) -> Result<u64, Error> {
    if users.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(
        "UPDATE tracked_users SET unknown_at_p100 = false \
          WHERE unknown_at_p100 AND external_user_id = ANY($1)",
    )
    .bind(users)
    .execute(db)
    .await?
    .rows_affected())
}
