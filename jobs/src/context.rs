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
    /// What this process's job runs did, per kind.
    pub runs: Arc<RunStats>,
}

/// Runs, time and P100 requests per job kind in this process (the demo's summary; the daemon
/// exports the same through `/metrics`).
#[derive(Debug, Default)]
pub struct RunStats {
    by_kind: std::sync::Mutex<std::collections::BTreeMap<crate::kinds::Kind, KindRuns>>,
}

/// One kind's runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindRuns {
    /// Runs ended (any outcome).
    pub runs: u64,
    /// Time spent in them.
    pub busy: std::time::Duration,
    /// Requests they sent to P100.
    pub p100_calls: u64,
}

impl RunStats {
    /// Records one run.
    pub fn record(&self, kind: crate::kinds::Kind, busy: std::time::Duration, p100_calls: u64) {
        let mut by_kind = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        let entry = by_kind.entry(kind).or_default();
        entry.runs += 1;
        entry.busy += busy;
        entry.p100_calls += p100_calls;
    }

    /// Every kind that ran, in the catalogue's order.
    pub fn snapshot(&self) -> Vec<(crate::kinds::Kind, KindRuns)> {
        let by_kind = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        by_kind.iter().map(|(k, r)| (*k, *r)).collect()
    }
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
