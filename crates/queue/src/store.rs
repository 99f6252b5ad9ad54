//! Every SQL statement on the `jobs`, `job_workers` and `schedule_ticks` tables.
//!
//! The queue is at-least-once: a job may run again after its worker crashed. Every statement
//! that finishes a job checks `locked_by`, so a worker that lost its lease cannot overwrite
//! the outcome of the worker that took the job over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::Error;

/// States a job can be in (`jobs.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `run_at`.
    Pending,
    /// Claimed by a worker.
    Running,
    /// The last attempt failed; a retry is scheduled at `run_at`.
    Failed,
    /// Finished successfully.
    Done,
    /// Gave up: permanent error, attempts exhausted, or undecodable payload.
    Dead,
    /// Cancelled by an operator before it ran.
    Cancelled,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Running,
        JobState::Failed,
        JobState::Done,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Failed => "failed",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses the stored spelling (also used for CLI filters).
    pub fn parse(text: &str) -> Option<JobState> {
        Some(match text {
            "pending" => JobState::Pending,
            "running" => JobState::Running,
            "failed" => JobState::Failed,
            "done" => JobState::Done,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job will not run again on its own.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Dead | JobState::Cancelled)
    }

    fn decode(text: &str) -> Result<JobState, Error> {
        JobState::parse(text).ok_or_else(|| Error::Corrupt(format!("unknown job state {text:?}")))
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A job to add.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Queue name (the job kind).
    pub kind: String,
    /// Encoded arguments.
    pub payload: serde_json::Value,
    /// At most one live job per (kind, key); `None` for no deduplication.
    pub dedup_key: Option<String>,
    /// Not before this instant (default: now).
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before the job goes dead.
    pub max_attempts: i32,
}

/// What `enqueue` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job that will do the work.
    pub id: i64,
    /// False when a live job of the same unit already existed (it was brought forward).
    pub created: bool,
    /// Runs the job had completed when it was enqueued (what `--wait` counts from).
    pub runs: i32,
    /// The live job was running: the request is one more run after it (a new job if it ends,
    /// its next run if it stays live).
    pub rerun_after: bool,
}

/// Adds a job; if a live job of the same (kind, dedup key) exists, returns it instead and
/// brings its `run_at` forward to the requested time. Never fails on a duplicate.
pub async fn enqueue(conn: &mut PgConnection, job: &NewJob) -> Result<Enqueued, Error> {
    // The live job may finish between our insert and our update; then insert again.
    for _ in 0..5 {
        let inserted: Option<(i64, i32)> = sqlx::query_as(
            r#"
            INSERT INTO jobs (kind, payload, dedup_key, run_at, max_attempts)
            VALUES ($1, $2, $3, COALESCE($4, now()), $5)
            ON CONFLICT (kind, dedup_key)
                WHERE dedup_key IS NOT NULL AND state IN ('pending', 'failed', 'running')
                DO NOTHING
            RETURNING id, runs
            "#,
        )
        .bind(&job.kind)
        .bind(&job.payload)
        .bind(&job.dedup_key)
        .bind(job.run_at)
        .bind(job.max_attempts)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((id, runs)) = inserted {
            return Ok(Enqueued {
                id,
                created: true,
                runs,
                rerun_after: false,
            });
        }
        let existing: Option<(i64, i32, bool)> = sqlx::query_as(
            r#"
            UPDATE jobs
               SET run_at = CASE WHEN state = 'running' THEN run_at
                                 ELSE LEAST(run_at, COALESCE($3, now())) END,
                   -- Running: what it is doing may predate this request; run once more after.
                   rerun_payload = CASE WHEN state = 'running' THEN $4 ELSE rerun_payload END,
                   rerun_at = CASE WHEN state = 'running'
                                   THEN LEAST(COALESCE(rerun_at, 'infinity'), COALESCE($3, now()))
                                   ELSE rerun_at END
             WHERE kind = $1 AND dedup_key = $2 AND state IN ('pending', 'failed', 'running')
            RETURNING id, runs, state = 'running'
            "#,
        )
        .bind(&job.kind)
        .bind(&job.dedup_key)
        .bind(job.run_at)
        .bind(&job.payload)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((id, runs, rerun_after)) = existing {
            return Ok(Enqueued {
                id,
                created: false,
                runs,
                rerun_after,
            });
        }
    }
    Err(Error::Contended(format!(
        "could not enqueue {} {:?}: its live job kept changing",
        job.kind, job.dedup_key
    )))
}

/// Adds many jobs in one statement; a duplicate of a live job is skipped, or, when that job
/// is running, asks for one rerun after it (as [`enqueue`] does). Returns how many rows were
/// added.
pub async fn enqueue_many(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<u64, Error> {
    let mut added = 0;
    let mut left: Vec<&NewJob> = jobs.iter().collect();
    // A job whose live duplicate ended between this statement's insert and its rerun mark was
    // neither added nor marked: it is sent again (then nothing conflicts, or a new live job
    // does). Converges in a round or two; bounded all the same.
    for _ in 0..5 {
        if left.is_empty() {
            return Ok(added);
        }
        let kinds: Vec<&str> = left.iter().map(|j| j.kind.as_str()).collect();
        let payloads: Vec<&serde_json::Value> = left.iter().map(|j| &j.payload).collect();
        let keys: Vec<Option<&str>> = left.iter().map(|j| j.dedup_key.as_deref()).collect();
        let run_ats: Vec<Option<DateTime<Utc>>> = left.iter().map(|j| j.run_at).collect();
        let max: Vec<i32> = left.iter().map(|j| j.max_attempts).collect();
        let (inserted, unhandled): (i64, Vec<i64>) = sqlx::query_as(
            r#"
            WITH u AS (
                SELECT * FROM UNNEST($1::text[], $2::jsonb[], $3::text[], $4::timestamptz[], $5::int[])
                       WITH ORDINALITY AS u(k, p, d, r, m, i)
            ), added AS (
                INSERT INTO jobs (kind, payload, dedup_key, run_at, max_attempts)
                SELECT k, p, d, COALESCE(r, now()), m FROM u ORDER BY i
                ON CONFLICT (kind, dedup_key)
                    WHERE dedup_key IS NOT NULL AND state IN ('pending', 'failed', 'running')
                    DO NOTHING
                RETURNING kind, dedup_key
            ), rerun AS (
                UPDATE jobs j
                   SET rerun_payload = u.p,
                       rerun_at = LEAST(COALESCE(j.rerun_at, 'infinity'), COALESCE(u.r, now()))
                  FROM u
                 WHERE j.kind = u.k AND j.dedup_key = u.d AND j.state = 'running'
                RETURNING u.i
            ), waiting AS (
                -- A pending or failed duplicate will do the work: nothing more to do.
                SELECT u.i FROM u JOIN jobs j
                  ON j.kind = u.k AND j.dedup_key = u.d AND j.state IN ('pending', 'failed')
            )
            SELECT (SELECT count(*) FROM added),
                   ARRAY(SELECT u.i FROM u
                          WHERE u.d IS NOT NULL
                            AND NOT EXISTS (SELECT 1 FROM added a WHERE a.kind = u.k AND a.dedup_key = u.d)
                            AND u.i NOT IN (SELECT i FROM rerun)
                            AND u.i NOT IN (SELECT i FROM waiting))
            "#,
        )
        .bind(&kinds)
        .bind(&payloads)
        .bind(&keys)
        .bind(&run_ats)
        .bind(&max)
        .fetch_one(&mut *conn)
        .await?;
        added += inserted as u64;
        left = unhandled
            .into_iter()
            .filter_map(|i| left.get((i - 1) as usize).copied())
            .collect();
    }
    if left.is_empty() {
        Ok(added)
    } else {
        Err(Error::Contended(format!(
            "{} jobs could not be enqueued: their live jobs kept changing",
            left.len()
        )))
    }
}

/// A job claimed by a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Job id.
    pub id: i64,
    /// Encoded arguments, as stored.
    pub payload: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
}

/// Claims up to `limit` runnable jobs of `kind` for `worker`, oldest `run_at` first, and
/// counts the attempt. Rows other workers are claiming are skipped, not waited for.
pub async fn claim(
    db: impl PgExecutor<'_>,
    kind: &str,
    worker: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, Error> {
    let rows: Vec<(i64, String, i32, i32)> = sqlx::query_as(
        r#"
        WITH next AS (
            SELECT id FROM jobs
             WHERE kind = $1 AND state IN ('pending', 'failed') AND run_at <= now()
               AND NOT EXISTS (SELECT 1 FROM paused_kinds p WHERE p.kind = $1)
             ORDER BY run_at, id
             LIMIT $3
             FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs j
           SET state = 'running', locked_by = $2, attempts = j.attempts + 1,
               locked_until = now() + make_interval(secs => $4), started_at = now()
          FROM next
         WHERE j.id = next.id
        RETURNING j.id, j.payload::text, j.attempts, j.max_attempts
        "#,
    )
    .bind(kind)
    .bind(worker)
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(db)
    .await?;
    let mut claimed: Vec<Claimed> = rows
        .into_iter()
        .map(|(id, payload, attempt, max_attempts)| Claimed {
            id,
            payload,
            attempt,
            max_attempts,
        })
        .collect();
    claimed.sort_by_key(|c| c.id);
    Ok(claimed)
}

/// How one attempt ended, as the queue records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Success; the result is kept for `jobs show`.
    Done(serde_json::Value),
    /// Failed; retry at the given time unless attempts are exhausted (then dead).
    Retry {
        /// Why it failed.
        error: String,
        /// When to try again.
        at: DateTime<Utc>,
    },
    /// Failed for good.
    Dead(String),
    /// Not now (rate limited): run again at the given time without spending the attempt;
    /// dead once `max_deferrals` is exceeded.
    Defer {
        /// Why.
        reason: String,
        /// When to try again.
        at: DateTime<Utc>,
        /// Cap on deferrals for this job.
        max_deferrals: i32,
    },
    /// The work is done for now and the same job runs again at the given time, with a fresh
    /// attempt budget (a polling job's next poll).
    Snooze {
        /// Result of this run, kept for `jobs show`.
        result: serde_json::Value,
        /// Next run.
        at: DateTime<Utc>,
    },
}

/// Records the outcomes of a batch of attempts in one statement. Jobs no longer locked by
/// `worker` (their lease expired and another worker took them) are left alone. Returns the
/// number of jobs updated.
pub async fn complete(
    db: impl PgExecutor<'_>,
    worker: &str,
    outcomes: &[(i64, Completion)],
) -> Result<u64, Error> {
    let unguarded: Vec<(i64, Option<i32>, Completion)> = outcomes
        .iter()
        .map(|(id, c)| (*id, None, c.clone()))
        .collect();
    complete_attempts(db, worker, &unguarded).await
}

/// Longest error text kept for a job (`last_error` and each entry of its history).
pub const MAX_ERROR_CHARS: usize = 2_000;

/// An error as stored: control characters (which could forge lines where it is printed)
/// become spaces, and it is cut at [`MAX_ERROR_CHARS`].
fn bounded_error(error: &str) -> String {
    let mut out: String = error
        .chars()
        .take(MAX_ERROR_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if error.chars().nth(MAX_ERROR_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// [`complete`], guarded by attempt: an outcome of attempt n is recorded only while the job is
/// still in attempt n, so a run that lost its lease (and whose job was claimed again, even by
/// the same worker) cannot overwrite the newer attempt's result. `None` skips the check.
pub async fn complete_attempts(
    db: impl PgExecutor<'_>,
    worker: &str,
    outcomes: &[(i64, Option<i32>, Completion)],
) -> Result<u64, Error> {
    if outcomes.is_empty() {
        return Ok(0);
    }
    let n = outcomes.len();
    let mut ids = Vec::with_capacity(n);
    let mut actions = Vec::with_capacity(n);
    let mut errors: Vec<Option<String>> = Vec::with_capacity(n);
    let mut run_ats: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut results: Vec<Option<&serde_json::Value>> = Vec::with_capacity(n);
    let mut caps: Vec<i32> = Vec::with_capacity(n);
    let mut attempts: Vec<Option<i32>> = Vec::with_capacity(n);
    for (id, attempt, outcome) in outcomes {
        ids.push(*id);
        attempts.push(*attempt);
        let (action, error, at, result, cap) = match outcome {
            Completion::Done(result) => ("done", None, None, Some(result), 0),
            Completion::Retry { error, at } => ("retry", Some(error.as_str()), Some(*at), None, 0),
            Completion::Dead(error) => ("dead", Some(error.as_str()), None, None, 0),
            Completion::Defer {
                reason,
                at,
                max_deferrals,
            } => (
                "defer",
                Some(reason.as_str()),
                Some(*at),
                None,
                *max_deferrals,
            ),
            Completion::Snooze { result, at } => ("snooze", None, Some(*at), Some(result), 0),
        };
        actions.push(action);
        errors.push(error.map(bounded_error));
        run_ats.push(at);
        results.push(result);
        caps.push(cap);
    }
    // Joined by primary key and filtered on locked_by alone (the table's CHECK makes that
    // imply state = 'running'): a `state = 'running'` predicate lets the planner pick the
    // partial lease index, whose dead entries from every finished job made acks ~10x slower.
    // A job that ends (done or dead) with a rerun asked for while it ran is followed by exactly
    // one new job with the newest arguments asked for.
    let updated: i64 = sqlx::query_scalar(
        r#"
        WITH updated AS (
        UPDATE jobs j
           SET state = CASE
                   WHEN u.action IN ('done', 'dead') THEN u.action
                   WHEN u.action = 'retry' AND j.attempts >= j.max_attempts THEN 'dead'
                   WHEN u.action = 'retry' THEN 'failed'
                   WHEN u.action = 'defer' AND j.deferrals >= u.cap THEN 'dead'
                   ELSE 'pending' END,
               locked_by = NULL,
               locked_until = NULL,
               -- A rerun asked for while it ran: a job that stays live runs next with the
               -- newest arguments, no later than asked; one that ends is followed by a new job.
               run_at = CASE
                   WHEN j.rerun_payload IS NOT NULL AND u.action IN ('retry', 'defer', 'snooze')
                        AND NOT (u.action = 'retry' AND j.attempts >= j.max_attempts)
                        AND NOT (u.action = 'defer' AND j.deferrals >= u.cap)
                       THEN LEAST(COALESCE(u.at, j.run_at), j.rerun_at)
                   ELSE COALESCE(u.at, j.run_at) END,
               payload = CASE
                   WHEN j.rerun_payload IS NOT NULL AND u.action IN ('retry', 'defer', 'snooze')
                        AND NOT (u.action = 'retry' AND j.attempts >= j.max_attempts)
                        AND NOT (u.action = 'defer' AND j.deferrals >= u.cap)
                       THEN j.rerun_payload
                   ELSE j.payload END,
               -- Consumed by a job that stays live (above); kept on one that ends, for the
               -- insert below (a terminal row never runs again, so it is inert there).
               rerun_payload = CASE WHEN u.action IN ('retry', 'defer', 'snooze')
                                     AND NOT (u.action = 'retry' AND j.attempts >= j.max_attempts)
                                     AND NOT (u.action = 'defer' AND j.deferrals >= u.cap)
                                    THEN NULL ELSE j.rerun_payload END,
               rerun_at = CASE WHEN u.action IN ('retry', 'defer', 'snooze')
                                AND NOT (u.action = 'retry' AND j.attempts >= j.max_attempts)
                                AND NOT (u.action = 'defer' AND j.deferrals >= u.cap)
                               THEN NULL ELSE j.rerun_at END,
               attempts = CASE u.action WHEN 'defer' THEN j.attempts - 1 WHEN 'snooze' THEN 0 ELSE j.attempts END,
               deferrals = CASE u.action WHEN 'defer' THEN j.deferrals + 1 WHEN 'snooze' THEN 0 ELSE j.deferrals END,
               last_error = CASE
                   WHEN u.action = 'defer' AND j.deferrals >= u.cap
                       THEN 'deferred more than ' || j.deferrals || ' times; last: ' || u.error
                   ELSE COALESCE(u.error, j.last_error) END,
               errors = CASE WHEN u.error IS NULL THEN j.errors
                             ELSE jobs_errors_append(j.errors, jsonb_build_object(
                                 'attempt', j.attempts, 'at', now(), 'error', u.error, 'action', u.action))
                        END,
               result = COALESCE(u.result, j.result),
               runs = j.runs + CASE WHEN u.action IN ('done', 'snooze') THEN 1 ELSE 0 END,
               finished_at = CASE
                   WHEN u.action IN ('done', 'dead')
                     OR (u.action = 'retry' AND j.attempts >= j.max_attempts)
                     OR (u.action = 'defer' AND j.deferrals >= u.cap) THEN now() END
          FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::timestamptz[], $6::jsonb[], $7::int[], $8::int[])
               AS u(id, action, error, at, result, cap, attempt)
         WHERE j.id = u.id AND j.locked_by = $1 AND (u.attempt IS NULL OR j.attempts = u.attempt)
        RETURNING j.kind, j.dedup_key, j.max_attempts, j.state, j.rerun_payload, j.rerun_at
        ), rerun AS (
            INSERT INTO jobs (kind, payload, dedup_key, run_at, max_attempts)
            SELECT kind, rerun_payload, dedup_key, GREATEST(rerun_at, now()), max_attempts
              FROM updated
             WHERE rerun_payload IS NOT NULL AND state IN ('done', 'dead')
            ON CONFLICT (kind, dedup_key)
                WHERE dedup_key IS NOT NULL AND state IN ('pending', 'failed', 'running')
                DO NOTHING
        )
        SELECT count(*) FROM updated
        "#,
    )
    .bind(worker)
    .bind(&ids)
    .bind(&actions)
    .bind(&errors)
    .bind(&run_ats)
    .bind(&results)
    .bind(&caps)
    .bind(&attempts)
    .fetch_one(db)
    .await?;
    Ok(updated as u64)
}

/// Gives claimed jobs that never started back to the queue without spending their attempt
/// (shutdown with a prefetched batch).
pub async fn release(db: impl PgExecutor<'_>, worker: &str, ids: &[i64]) -> Result<u64, Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        r#"
        UPDATE jobs
           SET state = CASE WHEN attempts > 1 THEN 'failed' ELSE 'pending' END,
               attempts = attempts - 1, locked_by = NULL, locked_until = NULL
         WHERE id = ANY($2) AND locked_by = $1
        "#,
    )
    .bind(worker)
    .bind(ids)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Gives back every job held under `worker`, without spending the attempt (rows a lost claim
/// answer left with it). Returns the count.
pub async fn release_held(db: impl PgExecutor<'_>, worker: &str) -> Result<u64, Error> {
    let done = sqlx::query(
        r#"
        UPDATE jobs
           SET state = CASE WHEN attempts > 1 THEN 'failed' ELSE 'pending' END,
               attempts = attempts - 1, locked_by = NULL, locked_until = NULL
         WHERE locked_by = $1 AND state = 'running'
        "#,
    )
    .bind(worker)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Gives back every job still running under a worker of this process (worker names carry
/// `@<process identity>-w`), without spending the attempt: used at shutdown once the grace
/// period is over, so a deploy during a long job costs the job nothing but the time it ran.
/// Returns the count.
pub async fn release_process(db: impl PgExecutor<'_>, process: &str) -> Result<u64, Error> {
    let done = sqlx::query(
        r#"
        UPDATE jobs
           SET state = CASE WHEN attempts > 1 THEN 'failed' ELSE 'pending' END,
               attempts = attempts - 1, locked_by = NULL, locked_until = NULL, run_at = now(),
               errors = jobs_errors_append(errors, jsonb_build_object(
                   'attempt', attempts, 'at', now(), 'action', 'release',
                   'error', 'its process shut down before the job ended; released unspent'))
         WHERE state = 'running' AND strpos(locked_by, '@' || $1 || '-w') > 0
        "#,
    )
    .bind(process)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Marks one claimed job dead (e.g. its payload cannot be decoded).
pub async fn bury(
    db: impl PgExecutor<'_>,
    worker: &str,
    id: i64,
    error: &str,
) -> Result<(), Error> {
    complete(db, worker, &[(id, Completion::Dead(error.to_owned()))]).await?;
    Ok(())
}

/// Registers a worker process.
pub async fn register_worker(
    db: impl PgExecutor<'_>,
    id: &str,
    host: &str,
    pid: i32,
    kinds: &[String],
) -> Result<(), Error> {
    sqlx::query(
        r#"
        INSERT INTO job_workers (id, host, pid, kinds) VALUES ($1, $2, $3, $4)
        ON CONFLICT (id) DO UPDATE SET last_seen = now(), stopped_at = NULL
        "#,
    )
    .bind(id)
    .bind(host)
    .bind(pid)
    .bind(kinds)
    .execute(db)
    .await?;
    Ok(())
}

/// Proves the worker alive and extends the leases of the jobs it holds.
pub async fn heartbeat(
    conn: &mut PgConnection,
    worker: &str,
    lease: Duration,
) -> Result<u64, Error> {
    sqlx::query("UPDATE job_workers SET last_seen = now() WHERE id = $1")
        .bind(worker)
        .execute(&mut *conn)
        .await?;
    // SKIP LOCKED: a row being acknowledged at this moment needs no renewal, and a renewal
    // that waited on it while holding other rows of the same worker could deadlock with the
    // acknowledgement (measured once in a 10,000-user `bench cycle`).
    let done = sqlx::query(
        r#"
        UPDATE jobs SET locked_until = now() + make_interval(secs => $2)
         WHERE id IN (SELECT id FROM jobs WHERE locked_by = $1 AND state = 'running'
                      ORDER BY id FOR UPDATE SKIP LOCKED)
        "#,
    )
    .bind(worker)
    .bind(lease.as_secs_f64())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Marks a worker stopped (clean shutdown).
pub async fn stop_worker(db: impl PgExecutor<'_>, worker: &str) -> Result<(), Error> {
    sqlx::query("UPDATE job_workers SET stopped_at = now(), last_seen = now() WHERE id = $1")
        .bind(worker)
        .execute(db)
        .await?;
    Ok(())
}

/// Returns jobs whose lease expired *and* whose worker's heartbeat is older than
/// `worker_stale_after` (or that worker stopped or never registered) to the queue: the worker
/// crashed or hung. A lease that lapsed only because renewals could not reach the database
/// (an outage) belongs to a worker that is still alive and still running the job; it is not
/// taken away, so the job never runs twice at once. The lost attempt counts, so a job that
/// keeps killing its worker ends up dead. Returns the count.
pub async fn rescue_expired(
    db: impl PgExecutor<'_>,
    worker_stale_after: Duration,
) -> Result<u64, Error> {
    // A job that goes dead here with a rerun asked for is followed by it, as on any other end.
    let rescued: i64 = sqlx::query_scalar(
        r#"
        WITH rescued AS (
        UPDATE jobs
           SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'failed' END,
               last_error = 'worker ' || locked_by || ' stopped renewing its lease during attempt ' || attempts,
               errors = jobs_errors_append(errors, jsonb_build_object(
                   'attempt', attempts, 'at', now(), 'action', 'rescue',
                   'error', 'worker ' || locked_by || ' stopped renewing its lease')),
               finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
               run_at = now(), locked_by = NULL, locked_until = NULL
         WHERE state = 'running' AND locked_until < now()
           AND NOT EXISTS (
               SELECT 1 FROM job_workers w
                WHERE w.id = jobs.locked_by AND w.stopped_at IS NULL
                  AND w.last_seen > now() - make_interval(secs => $1))
        RETURNING kind, dedup_key, max_attempts, state, rerun_payload, rerun_at
        ), rerun AS (
            INSERT INTO jobs (kind, payload, dedup_key, run_at, max_attempts)
            SELECT kind, rerun_payload, dedup_key, GREATEST(rerun_at, now()), max_attempts
              FROM rescued
             WHERE rerun_payload IS NOT NULL AND state = 'dead'
            ON CONFLICT (kind, dedup_key)
                WHERE dedup_key IS NOT NULL AND state IN ('pending', 'failed', 'running')
                DO NOTHING
        )
        SELECT count(*) FROM rescued
        "#,
    )
    .bind(worker_stale_after.as_secs_f64())
    .fetch_one(db)
    .await?;
    Ok(rescued as u64)
}

/// Deletes schedule ticks older than `age`, keeping each schedule's latest (the scheduler's
/// catch-up after downtime starts from it). Returns how many were deleted.
pub async fn prune_ticks(pool: &PgPool, age: Duration) -> Result<u64, Error> {
    let done = sqlx::query(
        r#"
        DELETE FROM schedule_ticks t
         WHERE t.enqueued_at < now() - make_interval(secs => $1)
           AND t.tick_at < (SELECT max(m.tick_at) FROM schedule_ticks m WHERE m.schedule = t.schedule)
        "#,
    )
    .bind(age.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes finished jobs (done, cancelled) older than `done_age` and dead ones older than
/// `dead_age`, at most `batch` rows per call. Returns how many were deleted.
pub async fn prune(
    pool: &PgPool,
    done_age: Duration,
    dead_age: Duration,
    batch: i64,
) -> Result<u64, Error> {
    let done = sqlx::query(
        r#"
        DELETE FROM jobs WHERE id IN (
            SELECT id FROM jobs
             WHERE (state IN ('done', 'cancelled') AND finished_at < now() - make_interval(secs => $1))
                OR (state = 'dead' AND finished_at < now() - make_interval(secs => $2))
             LIMIT $3)
        "#,
    )
    .bind(done_age.as_secs_f64())
    .bind(dead_age.as_secs_f64())
    .bind(batch)
    .execute(pool)
    .await?;
    sqlx::query(
        r#"
        DELETE FROM job_workers w
         WHERE last_seen < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.locked_by = w.id)
        "#,
    )
    .bind(dead_age.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// A job as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// Job id.
    pub id: i64,
    /// Kind (queue name).
    pub kind: String,
    /// Current state.
    pub state: JobState,
    /// Attempts made (the running one included).
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Times the job was deferred without spending an attempt.
    pub deferrals: i32,
    /// Next (or last) scheduled run.
    pub run_at: DateTime<Utc>,
    /// Last error, if any attempt failed.
    pub last_error: Option<String>,
    /// Arguments.
    pub payload: serde_json::Value,
    /// Deduplication key.
    pub dedup_key: Option<String>,
    /// Worker holding it, while running.
    pub locked_by: Option<String>,
    /// One entry per failed attempt.
    pub errors: serde_json::Value,
    /// Result of the last successful run.
    pub result: Option<serde_json::Value>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it finished (done, dead).
    pub finished_at: Option<DateTime<Utc>>,
    /// Runs that completed (done or snoozed).
    pub runs: i32,
    /// When the current or last attempt started.
    pub started_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct RawJob {
    id: i64,
    kind: String,
    state: String,
    attempts: i32,
    max_attempts: i32,
    deferrals: i32,
    run_at: DateTime<Utc>,
    last_error: Option<String>,
    payload: serde_json::Value,
    dedup_key: Option<String>,
    locked_by: Option<String>,
    errors: serde_json::Value,
    result: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    runs: i32,
    started_at: Option<DateTime<Utc>>,
}

macro_rules! job_columns {
    () => {
        "id, kind, state, attempts, max_attempts, deferrals, run_at, last_error, payload, \
         dedup_key, locked_by, errors, result, created_at, finished_at, runs, started_at"
    };
}

fn job_row(r: RawJob) -> Result<JobRow, Error> {
    Ok(JobRow {
        id: r.id,
        kind: r.kind,
        state: JobState::decode(&r.state)?,
        attempts: r.attempts,
        max_attempts: r.max_attempts,
        deferrals: r.deferrals,
        run_at: r.run_at,
        last_error: r.last_error,
        payload: r.payload,
        dedup_key: r.dedup_key,
        locked_by: r.locked_by,
        errors: r.errors,
        result: r.result,
        created_at: r.created_at,
        finished_at: r.finished_at,
        runs: r.runs,
        started_at: r.started_at,
    })
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only these states.
    pub states: Vec<JobState>,
    /// At most this many rows (newest first).
    pub limit: i64,
}

/// Jobs matching a filter, newest first.
pub async fn list(db: impl PgExecutor<'_>, filter: &ListFilter) -> Result<Vec<JobRow>, Error> {
    let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
    let sql = concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs
          WHERE ($1::text IS NULL OR kind = $1) AND (cardinality($2::text[]) = 0 OR state = ANY($2))
          ORDER BY id DESC LIMIT $3"
    );
    let rows: Vec<RawJob> = sqlx::query_as(sql)
        .bind(&filter.kind)
        .bind(&states)
        .bind(filter.limit.max(1))
        .fetch_all(db)
        .await?;
    rows.into_iter().map(job_row).collect()
}

/// One job by id.
pub async fn show(db: impl PgExecutor<'_>, id: i64) -> Result<Option<JobRow>, Error> {
    let sql = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
    let row: Option<RawJob> = sqlx::query_as(sql).bind(id).fetch_optional(db).await?;
    row.map(job_row).transpose()
}

/// Why an operator action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such job.
    NotFound,
    /// The job is in a state the action does not apply to.
    WrongState(JobState),
    /// Another live job already does this unit's work.
    Duplicate(i64),
}

impl Refusal {
    /// Why an operator's retry or cancel of job `id` was refused, for a person.
    pub fn explain(&self, id: i64) -> String {
        match self {
            Refusal::NotFound => format!("no job {id}"),
            Refusal::WrongState(state) => format!(
                "job {id} is {state}; only failed, dead or cancelled jobs can be retried and only pending or failed ones cancelled"
            ),
            Refusal::Duplicate(other) => format!(
                "job {other} already does this unit's work; retry refused to avoid running it twice"
            ),
        }
    }
}

/// Puts a failed, dead or cancelled job back in the queue to run now, with `extra_attempts`
/// more attempts than it has used. Its error history is kept.
pub async fn retry(
    conn: &mut PgConnection,
    id: i64,
    extra_attempts: i32,
) -> Result<Result<(), Refusal>, Error> {
    let Some(job) = show(&mut *conn, id).await? else {
        return Ok(Err(Refusal::NotFound));
    };
    if !matches!(
        job.state,
        JobState::Failed | JobState::Dead | JobState::Cancelled
    ) {
        return Ok(Err(Refusal::WrongState(job.state)));
    }
    if let Some(key) = &job.dedup_key {
        let live: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM jobs WHERE kind = $1 AND dedup_key = $2 AND state IN ('pending', 'failed', 'running') AND id <> $3",
        )
        .bind(&job.kind)
        .bind(key)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((other,)) = live {
            return Ok(Err(Refusal::Duplicate(other)));
        }
    }
    let done = sqlx::query(
        r#"
        UPDATE jobs SET state = 'pending', run_at = now(), finished_at = NULL, deferrals = 0,
                        max_attempts = attempts + $2, rerun_payload = NULL, rerun_at = NULL
         WHERE id = $1 AND state IN ('failed', 'dead', 'cancelled')
        "#,
    )
    .bind(id)
    .bind(extra_attempts.max(1))
    .execute(&mut *conn)
    .await;
    // Said only when it happened: the job may have moved on, or a live job of its unit may
    // have appeared, since it was read above.
    match done {
        Ok(done) if done.rows_affected() == 1 => Ok(Ok(())),
        Ok(_) => Ok(Err(match show(&mut *conn, id).await? {
            None => Refusal::NotFound,
            Some(job) => Refusal::WrongState(job.state),
        })),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            let live: (i64,) = sqlx::query_as(
                "SELECT id FROM jobs WHERE kind = $1 AND dedup_key = $2 AND state IN ('pending', 'failed', 'running')",
            )
            .bind(&job.kind)
            .bind(&job.dedup_key)
            .fetch_one(&mut *conn)
            .await?;
            Ok(Err(Refusal::Duplicate(live.0)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Cancels a job that has not started (pending or waiting to retry).
pub async fn cancel(conn: &mut PgConnection, id: i64) -> Result<Result<(), Refusal>, Error> {
    let done = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = now() WHERE id = $1 AND state IN ('pending', 'failed')",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Ok(()));
    }
    Ok(Err(match show(&mut *conn, id).await? {
        None => Refusal::NotFound,
        Some(job) => Refusal::WrongState(job.state),
    }))
}

/// A job kind an operator paused: no worker of any replica claims its jobs until it is resumed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct PausedKind {
    /// The kind.
    pub kind: String,
    /// Since when.
    pub paused_at: DateTime<Utc>,
    /// Who paused it.
    pub paused_by: String,
    /// Why.
    pub note: String,
}

/// Pauses `kind`; false when it was already paused (the first pause and its note stand).
/// A job already running finishes.
pub async fn pause(
    db: impl PgExecutor<'_>,
    kind: &str,
    by: &str,
    note: &str,
) -> Result<bool, Error> {
    let done = sqlx::query(
        "INSERT INTO paused_kinds (kind, paused_by, note) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(kind)
    .bind(by)
    .bind(note)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Resumes `kind` and wakes its idle workers; false when it was not paused.
pub async fn resume(db: impl PgExecutor<'_>, kind: &str) -> Result<bool, Error> {
    let woken: Vec<(String,)> = sqlx::query_as(
        "WITH gone AS (DELETE FROM paused_kinds WHERE kind = $1 RETURNING kind)
         SELECT kind FROM gone, LATERAL (SELECT pg_notify('jobs_ready', kind)) AS n",
    )
    .bind(kind)
    .fetch_all(db)
    .await?;
    Ok(!woken.is_empty())
}

/// Paused kinds, oldest pause first.
pub async fn paused(db: impl PgExecutor<'_>) -> Result<Vec<PausedKind>, Error> {
    Ok(sqlx::query_as(
        "SELECT kind, paused_at, paused_by, note FROM paused_kinds ORDER BY paused_at, kind",
    )
    .fetch_all(db)
    .await?)
}

/// Queue depth: job counts per (kind, state), for metrics and `/readyz`.
pub async fn depth(db: impl PgExecutor<'_>) -> Result<Vec<(String, JobState, i64)>, Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, state, count(*) FROM jobs GROUP BY kind, state ORDER BY kind, state",
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(kind, state, n)| Ok((kind, JobState::decode(&state)?, n)))
        .collect()
}

/// Job counts per (kind, state) of the unfinished states only (pending, running, failed, dead),
/// each read through its partial index: what the operator console shows on every page load,
/// without counting the finished jobs [`depth`] counts for `/metrics`.
pub async fn unfinished_depth(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(String, JobState, i64)>, Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, state, count(*) FROM jobs WHERE state IN ('pending', 'failed') GROUP BY kind, state
         UNION ALL
         SELECT kind, 'running', count(*) FROM jobs WHERE state = 'running' GROUP BY kind
         UNION ALL
         SELECT kind, 'dead', count(*) FROM jobs WHERE state = 'dead' GROUP BY kind",
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(kind, state, n)| Ok((kind, JobState::decode(&state)?, n)))
        .collect()
}

/// What needs attention in the queue, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Jobs waiting for a retry.
    pub failed: i64,
    /// Jobs that ran out of attempts.
    pub dead: i64,
    /// Age in seconds of the oldest pending job that is due.
    pub oldest_pending_age_seconds: i64,
}

/// Failed and dead jobs, and how long the oldest due job has waited.
pub async fn backlog(db: impl PgExecutor<'_>) -> Result<Backlog, Error> {
    let (failed, dead, oldest_pending_age_seconds) = sqlx::query_as(
        r#"
        SELECT (SELECT count(*) FROM jobs WHERE state = 'failed'),
               (SELECT count(*) FROM jobs WHERE state = 'dead'),
               COALESCE(EXTRACT(EPOCH FROM now() - (SELECT min(run_at) FROM jobs
                                                      WHERE state = 'pending' AND run_at <= now()))::bigint, 0)
        "#,
    )
    .fetch_one(db)
    .await?;
    Ok(Backlog {
        failed,
        dead,
        oldest_pending_age_seconds,
    })
}

/// Records a schedule tick and enqueues its job, once across all replicas: the tick's row is
/// the guard. Returns the job if this call enqueued it, `None` if another replica did.
pub async fn enqueue_tick(
    conn: &mut PgConnection,
    schedule: &str,
    tick_at: DateTime<Utc>,
    job: &NewJob,
) -> Result<Option<Enqueued>, Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let claimed = sqlx::query(
        "INSERT INTO schedule_ticks (schedule, tick_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(schedule)
    .bind(tick_at)
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    let enqueued = enqueue(&mut tx, job).await?;
    sqlx::query("UPDATE schedule_ticks SET job_id = $3 WHERE schedule = $1 AND tick_at = $2")
        .bind(schedule)
        .bind(tick_at)
        .bind(enqueued.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(enqueued))
}

/// The latest tick recorded for a schedule.
pub async fn last_tick(
    db: impl PgExecutor<'_>,
    schedule: &str,
) -> Result<Option<DateTime<Utc>>, Error> {
    let row: Option<(Option<DateTime<Utc>>,)> =
        sqlx::query_as("SELECT max(tick_at) FROM schedule_ticks WHERE schedule = $1")
            .bind(schedule)
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|r| r.0))
}

#[cfg(test)]
mod bounded_error_tests {
    use super::*;

    /// Security review: a 100 KB P100 message with `\u{1b}[2J\n FAKE LOG LINE` was stored
    /// whole in `jobs.last_error` and printed raw by `enqueue --wait`.
    #[test]
    fn stored_errors_are_bounded_and_hold_no_control_characters() {
        let hostile = format!(
            "P100 said: \u{1b}[2J\n FAKE LOG LINE {}",
            "A".repeat(100_000)
        );
        let stored = bounded_error(&hostile);
        assert!(!stored.chars().any(char::is_control), "{stored:?}");
        assert_eq!(stored.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(stored.starts_with("P100 said:") && stored.ends_with('…'));
        assert_eq!(bounded_error("short"), "short");
    }
}
