//! The local ledger: its schema, its domain types and every SQL statement of the project.
//!
//! Knows nothing of HTTP or of P100's JSON: jobs translate P100's data into the plain types
//! defined here. Functions that run one statement take `impl PgExecutor`, so the caller picks
//! a pool or a transaction; transactions are opened by the orchestrating job.

#![warn(missing_docs)]

pub mod accounts;
pub mod balances;
pub mod console;
pub mod discrepancies;
pub mod exchanges;
pub mod intake;
pub mod owner;
pub mod owner_lock;
pub mod postings;
pub mod provider;
pub mod reconciliation;
pub mod sepa;
pub mod snapshots;
pub mod users;
pub mod webhooks;

pub use owner::Owner;
pub use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// A savepoint inside the caller's transaction: committing it keeps its work; rolling it
/// back (or dropping it) undoes only that.
pub async fn savepoint(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>, Error> {
    Ok(sqlx::Connection::begin(conn).await?)
}

/// The project's migrations (top-level `migrations/`), embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// A ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row broke an invariant the schema should have prevented.
    #[error("corrupt ledger row: {0}")]
    Corrupt(String),
}
