//! Rows of the intake tables that have no job queued yet (inserted directly by the partner's
//! application rather than through the CLI).

use sqlx::PgConnection;

use crate::Error;

/// Who queues an intake row's first job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstJob {
    /// The caller, in the same transaction as the row (the row is marked queued).
    QueuedByCaller,
    /// The intake sweep.
    LeftToSweep,
}

impl FirstJob {
    pub(crate) fn queued(self) -> bool {
        self == FirstJob::QueuedByCaller
    }
}

/// Units waiting for their first job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unqueued {
    /// Tracked users (first KYC poll).
    pub users: Vec<String>,
    /// Local ids of exchanges still to finalize.
    pub exchanges: Vec<i64>,
    /// `transferId`s of SEPA transfers still to follow.
    pub transfers: Vec<String>,
}

/// Claims up to `limit` rows of each table that have no job queued, marking them queued in
/// the caller's transaction (the caller enqueues their jobs in the same transaction). Rows
/// another sweep is claiming are skipped.
pub async fn claim_unqueued(conn: &mut PgConnection, limit: i64) -> Result<Unqueued, Error> {
    let users = sqlx::query_scalar(
        r#"
        UPDATE tracked_users SET queued_at = now()
         WHERE external_user_id IN (SELECT external_user_id FROM tracked_users WHERE queued_at IS NULL
                                     ORDER BY tracked_at LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING external_user_id
        "#,
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    // Exchanges already past LOCKED/SUBMITTING/SUBMITTED need no job.
    let exchanges = sqlx::query_scalar::<_, Option<i64>>(
        r#"
        UPDATE exchanges SET queued_at = now()
         WHERE id IN (SELECT id FROM exchanges WHERE queued_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING CASE WHEN state IN ('LOCKED', 'SUBMITTING', 'SUBMITTED') THEN id END
        "#,
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .flatten()
    .collect();
    let transfers = sqlx::query_scalar::<_, Option<String>>(
        r#"
        UPDATE sepa_transfers SET queued_at = now()
         WHERE id IN (SELECT id FROM sepa_transfers WHERE queued_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING CASE WHEN status NOT IN ('SUCCESSFUL', 'FAILED', 'RELEASED') THEN transfer_id END
        "#,
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .flatten()
    .collect();
    Ok(Unqueued {
        users,
        exchanges,
        transfers,
    })
}
