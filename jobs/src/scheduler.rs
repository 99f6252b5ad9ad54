//! The tick producer: every replica runs one, Postgres decides who enqueues each tick.
//!
//! For each schedule, the latest tick recorded in `schedule_ticks` is where we resume. A tick
//! that fell due while every replica was down is enqueued once at start (only the latest one:
//! catching up on twenty missed quarter-hours would do the same work twenty times). Each tick's
//! row is inserted in the same transaction as its job, so a tick runs once whatever the number
//! of replicas.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use crate::enqueue::new_job;
use crate::schedule::{ScheduleEntry, ScheduleFile};

/// Longest single sleep; the loop re-reads the clock at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Runs every schedule until `stop` turns true.
pub async fn run(pool: ledger::PgPool, file: Arc<ScheduleFile>, stop: watch::Receiver<bool>) {
    let mut tasks = Vec::new();
    for entry in file.schedules.clone() {
        let (pool, file, stop) = (pool.clone(), file.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            run_one(pool, file, entry, stop).await
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn run_one(
    pool: ledger::PgPool,
    file: Arc<ScheduleFile>,
    entry: ScheduleEntry,
    mut stop: watch::Receiver<bool>,
) {
    let mut resume_after = loop {
        match queue::store::last_tick(&pool, &entry.name).await {
            Ok(Some(last)) => {
                let Some(missed) = entry.latest_at_or_before(last, Utc::now()) else {
                    break last;
                };
                tracing::info!(schedule = %entry.name, tick = %missed, "running tick {missed} of {} missed while no replica was up", entry.name);
                // The missed tick must not be lost to a database hiccup at start.
                while !fire(&pool, &file, &entry, missed).await {
                    if sleep_or_stop(Duration::from_secs(5), &mut stop).await {
                        return;
                    }
                }
                break missed;
            }
            Ok(None) => break Utc::now(),
            Err(e) => {
                tracing::warn!(schedule = %entry.name, error = %e, "cannot read the last tick; retrying");
                if sleep_or_stop(Duration::from_secs(5), &mut stop).await {
                    return;
                }
            }
        }
    };
    loop {
        let Some(next) = entry.next_after(resume_after) else {
            tracing::info!(schedule = %entry.name, "schedule {} has no further ticks", entry.name);
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        if wait > Duration::ZERO {
            if sleep_or_stop(wait.min(MAX_SLEEP), &mut stop).await {
                return;
            }
            if Utc::now() < next {
                continue;
            }
        }
        if fire(&pool, &file, &entry, next).await {
            resume_after = next;
        } else if sleep_or_stop(Duration::from_secs(5), &mut stop).await {
            return;
        }
    }
}

/// Enqueues one tick unless another replica did; false if the database failed (retry).
async fn fire(
    pool: &ledger::PgPool,
    file: &ScheduleFile,
    entry: &ScheduleEntry,
    tick: chrono::DateTime<Utc>,
) -> bool {
    let job = match new_job(entry.kind, entry.args.clone(), file, None) {
        Ok(job) => job,
        Err(e) => {
            // Validated at load; unreachable unless the kind's payload changed under us.
            tracing::error!(schedule = %entry.name, error = %e, "schedule {} has invalid args: {e}", entry.name);
            return true;
        }
    };
    let result = async {
        let mut conn = pool.acquire().await?;
        queue::store::enqueue_tick(&mut conn, &entry.name, tick, &job).await
    }
    .await;
    match result {
        Ok(Some(enqueued)) => {
            tracing::info!(schedule = %entry.name, job.id = enqueued.id, job.kind = entry.kind.name(), tick = %tick, "tick {tick} of {} enqueued job {}", entry.name, enqueued.id);
            true
        }
        Ok(None) => true,
        Err(e) => {
            tracing::warn!(schedule = %entry.name, error = %e, "tick {tick} of {} could not be enqueued: {e}", entry.name);
            false
        }
    }
}

/// Sleeps; true if asked to stop meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
