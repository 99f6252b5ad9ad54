//! The operator console's sessions: who signed in, with which role, until when.
//!
//! The session id itself never reaches the table: it is hashed (SHA-256, by Postgres) on the
//! way in and on every lookup.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::Error;

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    /// The signed-in name (from the tokens file).
    pub name: String,
    /// `viewer` or `operator`, as at sign-in.
    pub role: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

/// Starts a session lasting `ttl`.
pub async fn start(
    db: impl PgExecutor<'_>,
    id: &str,
    name: &str,
    role: &str,
    csrf: &str,
    ttl: std::time::Duration,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO console_sessions (id_hash, name, role, csrf, expires_at)
         VALUES (sha256(convert_to($1, 'UTF8')), $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(id)
    .bind(name)
    .bind(role)
    .bind(csrf)
    .bind(ttl.as_secs_f64())
    .execute(db)
    .await?;
    Ok(())
}

/// The session with this id, if it has not expired.
pub async fn find(db: impl PgExecutor<'_>, id: &str) -> Result<Option<Session>, Error> {
    Ok(sqlx::query_as(
        "SELECT name, role, csrf, expires_at FROM console_sessions
          WHERE id_hash = sha256(convert_to($1, 'UTF8')) AND expires_at > now()",
    )
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Ends a session (sign-out).
pub async fn end(db: impl PgExecutor<'_>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM console_sessions WHERE id_hash = sha256(convert_to($1, 'UTF8'))")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets expired sessions; returns how many.
pub async fn prune(db: impl PgExecutor<'_>) -> Result<u64, Error> {
    Ok(
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= now()")
            .execute(db)
            .await?
            .rows_affected(),
    )
}
