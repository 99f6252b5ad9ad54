//! The database pool and migrations.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::settings::redact_url;

/// Connects to Postgres; the error says which database could not be reached.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<ledger::PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .with_context(|| format!("invalid DATABASE_URL {}", redact_url(url)))?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to the database at {}", redact_url(url)))
}

/// Applies the project's migrations.
pub async fn migrate(pool: &ledger::PgPool) -> anyhow::Result<()> {
    ledger::MIGRATOR
        .run(pool)
        .await
        .context("applying migrations failed")?;
    Ok(())
}
