//! The job queue: a Postgres job store and the apalis 1.0 backend that runs its jobs.
//!
//! apalis's own Postgres storage retries failures at once with no backoff, loops forever on
//! `RetryAfterError`, stops a worker on one undecodable payload, and slows down as finished
//! rows pile up (`../shared/guides/apalis-1.0.md` §14, §15a). This crate keeps apalis's worker,
//! monitor and tower layers, and replaces the storage: claims in batches by primary key with
//! `SKIP LOCKED`, acknowledges in batches, persists backoff in `run_at`, deduplicates live
//! jobs by a partial unique index, rescues expired leases, and prunes finished rows.
//!
//! Owns the SQL of the `jobs`, `job_workers` and `schedule_ticks` tables, and of the
//! membership tables that let replicas share one request budget (`budget`); the schema is in
//! the top-level `migrations/`. Knows nothing of P100's API or the ledger.

#![warn(missing_docs)]

pub mod backend;
pub mod backoff;
pub mod budget;
pub mod lease;
pub mod outcome;
pub mod store;

pub use backend::{Notifier, PgJobs, QueueConfig};
pub use backoff::Backoff;
pub use outcome::Outcome;
pub use store::{Completion, Enqueued, JobRow, JobState, NewJob};

/// A queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or could not be reached.
    #[error("job store: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row broke an invariant.
    #[error("job store: corrupt row: {0}")]
    Corrupt(String),
    /// Concurrent changes kept an operation from completing.
    #[error("job store: {0}")]
    Contended(String),
}
