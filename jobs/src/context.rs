//! What every job handler is handed.

use std::sync::Arc;

use crate::schedule::ScheduleFile;

/// Shared state of one process's jobs: the pool, the P100 client, the limits.
#[derive(Clone)]
pub struct JobContext {
    /// The database.
    pub pool: ledger::PgPool,
    /// The P100 client (shared rate limit); `None` when the process runs only kinds that do not
    /// call P100.
    pub p100: Option<p100::Client>,
    /// Per-kind limits and schedules.
    pub schedule: Arc<ScheduleFile>,
}
