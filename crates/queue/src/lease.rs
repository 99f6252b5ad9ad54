//! Lost leases stop their handlers.
//!
//! A job's lease can be taken from a worker that is still running it (another replica
//! rescued it, or an operator moved it). The acknowledgement of the old run is fenced anyway;
//! this stops the old run itself, so the job never runs twice at once. Handlers register the
//! job they run ([`watch`]); one task per process checks, every heartbeat, that each watched
//! job is still running under a worker of this process, and signals those that are not.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

fn watched() -> &'static Mutex<HashMap<i64, watch::Sender<bool>>> {
    static WATCHED: OnceLock<Mutex<HashMap<i64, watch::Sender<bool>>>> = OnceLock::new();
    WATCHED.get_or_init(Mutex::default)
}

/// A running job's lease, as its handler sees it. Dropping it stops the watching.
pub struct LeaseWatch {
    id: i64,
    lost: watch::Receiver<bool>,
}

impl LeaseWatch {
    /// Resolves when the job's lease has been taken from this process.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }
}

impl Drop for LeaseWatch {
    fn drop(&mut self) {
        if let Ok(mut w) = watched().lock() {
            w.remove(&self.id);
        }
    }
}

/// Starts watching the lease of job `id` for its handler.
pub fn watch(id: i64) -> LeaseWatch {
    let (tx, rx) = watch::channel(false);
    if let Ok(mut w) = watched().lock() {
        w.insert(id, tx);
    }
    LeaseWatch { id, lost: rx }
}

/// Starts the process's checker once: every `every`, the watched jobs that are no longer
/// running under a worker of `process` (worker names carry `@<process>-w`) are signalled lost.
pub(crate) fn ensure_checker(pool: &PgPool, process: &str, every: Duration) {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.set(()).is_err() {
        return;
    }
    let (pool, process) = (pool.clone(), process.to_owned());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<i64> = watched()
                .lock()
                .map(|w| w.keys().copied().collect())
                .unwrap_or_default();
            if ids.is_empty() {
                continue;
            }
            let lost: Result<Vec<i64>, sqlx::Error> = sqlx::query_scalar(
                r#"
                SELECT id FROM jobs
                 WHERE id = ANY($1)
                   AND NOT (state = 'running' AND strpos(locked_by, '@' || $2 || '-w') > 0)
                "#,
            )
            .bind(&ids)
            .bind(&process)
            .fetch_all(&pool)
            .await;
            // A database that does not answer takes no lease away: nothing is signalled.
            let Ok(lost) = lost else { continue };
            if let Ok(w) = watched().lock() {
                for id in lost {
                    if let Some(tx) = w.get(&id) {
                        let _ = tx.send(true);
                    }
                }
            }
        }
    });
}
