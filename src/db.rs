//! The database pool and migrations.

use std::time::Duration;

use anyhow::Context;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use crate::settings::redact_url;

/// How long a connection may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to Postgres; the error says which database could not be reached.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<ledger::PgPool> {
    // One connection first: a refused port or a rejected password says so at once, where the
    // pool would retry until its timeout and report only "pool timed out".
    let (first, options) = connect_one(url).await?;
    first.close().await.ok();
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to the database at {}", redact_url(url)))
}

/// One connection outside any pool (for a task that must never queue behind the pool), and
/// the options to open it again.
pub async fn connect_one(url: &str) -> anyhow::Result<(PgConnection, PgConnectOptions)> {
    let shown = redact_url(url);
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid DATABASE_URL {shown}: {e}"))?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "cannot connect to the database at {shown}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("cannot connect to the database at {shown}: {e}"))?;
    Ok((conn, options))
}

/// Applies the project's migrations.
pub async fn migrate(pool: &ledger::PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    migrate_on(&mut conn).await
}

/// Applies the project's migrations on one connection.
pub async fn migrate_on(conn: &mut PgConnection) -> anyhow::Result<()> {
    ledger::MIGRATOR
        .run(conn)
        .await
        .context("applying migrations failed")?;
    Ok(())
}
