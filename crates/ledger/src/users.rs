//! Tracked users: whom the sweeps follow.

use sqlx::PgExecutor;

use crate::Error;

/// Starts following users; returns how many were new.
pub async fn track(db: impl PgExecutor<'_>, ids: &[String], source: &str) -> Result<u64, Error> {
    let done = sqlx::query(
        "INSERT INTO tracked_users (external_user_id, source) SELECT id, $2 FROM UNNEST($1::text[]) AS u(id) ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(source)
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
