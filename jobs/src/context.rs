//! What every job handler is handed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

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
    /// P100 as last seen by this process (shared with `/readyz`).
    pub p100_health: Arc<AtomicU8>,
    /// Where reports are written (`REPORT_DIR`).
    pub report_dir: std::path::PathBuf,
}

/// What this process knows about P100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum P100Health {
    /// The last check answered.
    Reachable = 0,
    /// P100 could not be reached (jobs retry with backoff).
    Unreachable = 1,
    /// P100 rejected the key: an operator must act.
    AuthFailed = 2,
}

impl JobContext {
    /// P100 as last seen.
    pub fn p100_health(&self) -> P100Health {
        match self.p100_health.load(Ordering::Relaxed) {
            0 => P100Health::Reachable,
            1 => P100Health::Unreachable,
            _ => P100Health::AuthFailed,
        }
    }

    /// Records what a call found.
    pub fn set_p100_health(&self, health: P100Health) {
        self.p100_health.store(health as u8, Ordering::Relaxed);
    }
}
