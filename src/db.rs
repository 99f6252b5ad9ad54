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
    let shown = redact_url(url);
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid DATABASE_URL {shown}: {e}"))?;
    // One connection first: a refused port or a rejected password says so at once, where the
    // pool would retry until its timeout and report only "pool timed out".
    let first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "cannot connect to the database at {shown}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("cannot connect to the database at {shown}: {e}"))?;
    first.close().await.ok();
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to the database at {shown}"))
}

/// Applies the project's migrations.
pub async fn migrate(pool: &ledger::PgPool) -> anyhow::Result<()> {
    ledger::MIGRATOR
        .run(pool)
        .await
        .context("applying migrations failed")?;
    Ok(())
}
