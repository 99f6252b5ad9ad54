//! The operator console's sessions: who signed in, with which line of the tokens file, until
//! when. Ids arrive hashed: the session id itself never reaches the database.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::Error;

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    /// The signed-in name (from the tokens file).
    pub name: String,
    /// The fingerprint of the token it signed in with.
    pub token: Vec<u8>,
    /// The token every form of this session carries.
    pub csrf: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

/// Starts a session lasting `ttl`.
pub async fn start(
    db: impl PgExecutor<'_>,
    id_hash: &[u8; 32],
    name: &str,
    token: &[u8; 32],
    csrf: &str,
    ttl: std::time::Duration,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO console_sessions (id_hash, name, token, csrf, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(&id_hash[..])
    .bind(name)
    .bind(&token[..])
    .bind(csrf)
    .bind(ttl.as_secs_f64())
    .execute(db)
    .await?;
    Ok(())
}

/// The session whose id hashes to `id_hash`, if it has not expired.
pub async fn find(db: impl PgExecutor<'_>, id_hash: &[u8; 32]) -> Result<Option<Session>, Error> {
    Ok(sqlx::query_as(
        "SELECT name, token, csrf, expires_at FROM console_sessions
          WHERE id_hash = $1 AND expires_at > now()",
    )
    .bind(&id_hash[..])
    .fetch_optional(db)
    .await?)
}

/// Ends a session (sign-out).
pub async fn end(db: impl PgExecutor<'_>, id_hash: &[u8; 32]) -> Result<(), Error> {
    sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
        .bind(&id_hash[..])
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
