//! Lost leases stop their handlers.
//!
//! A job's lease can be taken from a worker that is still running it (another replica
//! rescued it, or an operator moved it). The acknowledgement of the old run is fenced anyway;
//! this stops the old run itself, so the job never runs twice at once. Handlers register the
//! job they run ([`watch`]); one task per database checks, every heartbeat, that each watched
//! job of that database is still running under a worker of this process, and signals those
//! that are not. Job ids are per database, so a process serving two databases never confuses
//! them.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

/// Which database a job id belongs to.
type Key = (String, i64);

fn watched() -> &'static Mutex<HashMap<Key, watch::Sender<bool>>> {
    static WATCHED: OnceLock<Mutex<HashMap<Key, watch::Sender<bool>>>> = OnceLock::new();
    WATCHED.get_or_init(Mutex::default)
}

/// The database a pool connects to, as a key.
fn database_of(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}

/// A running job's lease, as its handler sees it. Dropping it stops the watching.
pub struct LeaseWatch {
    key: Key,
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
            w.remove(&self.key);
        }
    }
}

/// Starts watching the lease of job `id` of `pool`'s database for its handler.
pub fn watch(pool: &PgPool, id: i64) -> LeaseWatch {
    let (tx, rx) = watch::channel(false);
    let key = (database_of(pool), id);
    if let Ok(mut w) = watched().lock() {
        w.insert(key.clone(), tx);
    }
    LeaseWatch { key, lost: rx }
}

/// Starts the checker of `pool`'s database once: every `every`, its watched jobs that are no
/// longer running under a worker of `process` (worker names carry `@<process>-w`) are
/// signalled lost.
pub(crate) fn ensure_checker(pool: &PgPool, process: &str, every: Duration) {
    static STARTED: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let database = database_of(pool);
    let first = STARTED
        .get_or_init(Mutex::default)
        .lock()
        .map(|mut started| started.insert(database.clone()))
        .unwrap_or(false);
    if !first {
        return;
    }
    let (pool, process) = (pool.clone(), process.to_owned());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<i64> = watched()
                .lock()
                .map(|w| {
                    w.keys()
                        .filter(|(db, _)| *db == database)
                        .map(|(_, id)| *id)
                        .collect()
                })
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
                    if let Some(tx) = w.get(&(database.clone(), id)) {
                        let _ = tx.send(true);
                    }
                }
            }
        }
    });
}
