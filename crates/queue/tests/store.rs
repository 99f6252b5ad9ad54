//! The job store against a real Postgres (a fresh database per test).

use std::time::Duration;

use chrono::Utc;
use queue::store::{self, Completion, ListFilter, Refusal};
use queue::{JobState, NewJob};
use serde_json::json;
use sqlx::PgPool;

fn job(kind: &str, key: Option<&str>) -> NewJob {
    NewJob {
        kind: kind.into(),
        payload: json!({"v": 1, "unit": key}),
        dedup_key: key.map(str::to_owned),
        run_at: None,
        max_attempts: 3,
    }
}

async fn state(pool: &PgPool, id: i64) -> store::JobRow {
    store::show(pool, id).await.unwrap().unwrap()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_duplicate_unit_returns_the_live_job_and_brings_it_forward(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let later = NewJob {
        run_at: Some(Utc::now() + chrono::Duration::hours(1)),
        ..job("kyc_poll", Some("user:u1"))
    };
    let first = store::enqueue(&mut conn, &later).await.unwrap();
    assert!(first.created);

    let again = store::enqueue(&mut conn, &job("kyc_poll", Some("user:u1")))
        .await
        .unwrap();

    assert_eq!(
        again,
        queue::Enqueued {
            id: first.id,
            created: false,
            runs: 0,
            rerun_after: false,
        }
    );
    assert!(
        state(&pool, first.id).await.run_at <= Utc::now(),
        "brought forward to now"
    );
    let other = store::enqueue(&mut conn, &job("kyc_poll", Some("user:u2")))
        .await
        .unwrap();
    assert!(other.created && other.id != first.id);
    let jobs = store::list(
        &pool,
        &ListFilter {
            limit: 10,
            ..ListFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(jobs.len(), 2);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_finished_unit_can_be_enqueued_again(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let first = store::enqueue(&mut conn, &job("tx_sync", Some("partner")))
        .await
        .unwrap();
    let claimed = store::claim(&pool, "tx_sync", "w1", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store::complete(
        &pool,
        "w1",
        &[(first.id, Completion::Done(json!({"ok": true})))],
    )
    .await
    .unwrap();

    let second = store::enqueue(&mut conn, &job("tx_sync", Some("partner")))
        .await
        .unwrap();
    assert!(second.created);
    assert_ne!(second.id, first.id);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_paused_kind_is_not_claimed_until_it_is_resumed_and_other_kinds_run_on(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    for i in 0..3 {
        store::enqueue(&mut conn, &job("k", Some(&i.to_string())))
            .await
            .unwrap();
    }
    store::enqueue(&mut conn, &job("other", None))
        .await
        .unwrap();
    assert!(
        store::pause(&pool, "k", "ops", "P100 maintenance")
            .await
            .unwrap()
    );
    // A second pause keeps the first one's note.
    assert!(!store::pause(&pool, "k", "someone", "again").await.unwrap());
    let lease = Duration::from_secs(30);
    assert!(
        store::claim(&pool, "k", "w", 10, lease)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store::claim(&pool, "other", "w", 10, lease)
            .await
            .unwrap()
            .len(),
        1
    );
    let paused = store::paused(&pool).await.unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(
        (
            paused[0].kind.as_str(),
            paused[0].paused_by.as_str(),
            paused[0].note.as_str()
        ),
        ("k", "ops", "P100 maintenance")
    );
    // Waiting did not spend attempts.
    let jobs = store::list(
        &pool,
        &ListFilter {
            kind: Some("k".into()),
            states: Vec::new(),
            limit: 10,
        },
    )
    .await
    .unwrap();
    assert!(
        jobs.iter()
            .all(|j| j.attempts == 0 && j.state == JobState::Pending)
    );

    assert!(store::resume(&pool, "k").await.unwrap());
    assert!(!store::resume(&pool, "k").await.unwrap());
    assert_eq!(
        store::claim(&pool, "k", "w", 10, lease)
            .await
            .unwrap()
            .len(),
        3
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn claims_skip_future_jobs_and_never_hand_one_job_to_two_workers(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    for i in 0..10 {
        store::enqueue(&mut conn, &job("k", Some(&i.to_string())))
            .await
            .unwrap();
    }
    let future = NewJob {
        run_at: Some(Utc::now() + chrono::Duration::minutes(5)),
        ..job("k", Some("future"))
    };
    store::enqueue(&mut conn, &future).await.unwrap();

    let (a, b) = tokio::join!(
        store::claim(&pool, "k", "wa", 6, Duration::from_secs(30)),
        store::claim(&pool, "k", "wb", 6, Duration::from_secs(30))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ids: Vec<i64> = a.iter().chain(&b).map(|c| c.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each runnable job claimed exactly once");
    assert!(a.iter().chain(&b).all(|c| c.attempt == 1));
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn failures_retry_later_then_go_dead_with_their_history(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let id = store::enqueue(&mut conn, &job("k", None)).await.unwrap().id;
    for attempt in 1..=3 {
        sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        let claimed = store::claim(&pool, "k", "w", 1, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(claimed[0].attempt, attempt);
        let at = Utc::now() + chrono::Duration::seconds(60);
        store::complete(
            &pool,
            "w",
            &[(
                id,
                Completion::Retry {
                    error: format!("boom {attempt}"),
                    at,
                },
            )],
        )
        .await
        .unwrap();
        let row = state(&pool, id).await;
        if attempt < 3 {
            assert_eq!(row.state, JobState::Failed);
            assert!(
                row.run_at > Utc::now() + chrono::Duration::seconds(50),
                "the delay is persisted"
            );
            assert!(
                store::claim(&pool, "k", "w", 1, Duration::from_secs(30))
                    .await
                    .unwrap()
                    .is_empty()
            );
        } else {
            assert_eq!(row.state, JobState::Dead);
            assert_eq!(row.last_error.as_deref(), Some("boom 3"));
            assert_eq!(row.errors.as_array().unwrap().len(), 3);
            assert!(row.finished_at.is_some());
        }
    }
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn deferrals_do_not_spend_attempts_but_are_capped(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let id = store::enqueue(&mut conn, &job("k", None)).await.unwrap().id;
    for round in 0..3 {
        sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        store::claim(&pool, "k", "w", 1, Duration::from_secs(30))
            .await
            .unwrap();
        let defer = Completion::Defer {
            reason: "429".into(),
            at: Utc::now(),
            max_deferrals: 2,
        };
        store::complete(&pool, "w", &[(id, defer)]).await.unwrap();
        let row = state(&pool, id).await;
        assert_eq!(row.attempts, 0, "round {round}");
        if round < 2 {
            assert_eq!(row.state, JobState::Pending);
        } else {
            assert_eq!(row.state, JobState::Dead);
            assert!(
                row.last_error
                    .unwrap()
                    .starts_with("deferred more than 2 times")
            );
        }
    }
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_permanent_error_goes_dead_at_once(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let id = store::enqueue(&mut conn, &job("k", None)).await.unwrap().id;
    store::claim(&pool, "k", "w", 1, Duration::from_secs(30))
        .await
        .unwrap();
    store::complete(
        &pool,
        "w",
        &[(id, Completion::Dead("P412 invalid-user".into()))],
    )
    .await
    .unwrap();
    let row = state(&pool, id).await;
    assert_eq!((row.state, row.attempts), (JobState::Dead, 1));
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn an_expired_lease_is_rescued_and_a_late_ack_from_the_old_worker_is_ignored(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let id = store::enqueue(&mut conn, &job("k", None)).await.unwrap().id;
    store::claim(&pool, "k", "crashed", 1, Duration::from_secs(0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    assert_eq!(
        store::rescue_expired(&pool, Duration::from_secs(30))
            .await
            .unwrap(),
        1
    );
    let row = state(&pool, id).await;
    assert_eq!(row.state, JobState::Failed);
    assert!(row.last_error.unwrap().contains("crashed"));

    let claimed = store::claim(&pool, "k", "survivor", 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed[0].attempt, 2);
    let late = store::complete(&pool, "crashed", &[(id, Completion::Done(json!(null)))])
        .await
        .unwrap();
    assert_eq!(late, 0, "the crashed worker no longer owns the job");
    store::complete(&pool, "survivor", &[(id, Completion::Done(json!("ok")))])
        .await
        .unwrap();
    assert_eq!(state(&pool, id).await.state, JobState::Done);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn released_jobs_get_their_attempt_back(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let id = store::enqueue(&mut conn, &job("k", None)).await.unwrap().id;
    store::claim(&pool, "k", "w", 1, Duration::from_secs(30))
        .await
        .unwrap();
    store::release(&pool, "w", &[id]).await.unwrap();
    let row = state(&pool, id).await;
    assert_eq!((row.state, row.attempts), (JobState::Pending, 0));
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn operators_retry_dead_jobs_and_cancel_pending_ones(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let id = store::enqueue(&mut conn, &job("k", Some("unit")))
        .await
        .unwrap()
        .id;
    assert_eq!(
        store::retry(&mut conn, id, 3).await.unwrap(),
        Err(Refusal::WrongState(JobState::Pending))
    );
    store::claim(&pool, "k", "w", 1, Duration::from_secs(30))
        .await
        .unwrap();
    store::complete(&pool, "w", &[(id, Completion::Dead("nope".into()))])
        .await
        .unwrap();

    assert_eq!(store::retry(&mut conn, id, 3).await.unwrap(), Ok(()));
    let row = state(&pool, id).await;
    assert_eq!((row.state, row.max_attempts), (JobState::Pending, 4));
    assert_eq!(row.errors.as_array().unwrap().len(), 1, "history kept");

    assert_eq!(store::cancel(&mut conn, id).await.unwrap(), Ok(()));
    assert_eq!(state(&pool, id).await.state, JobState::Cancelled);
    assert_eq!(
        store::cancel(&mut conn, id).await.unwrap(),
        Err(Refusal::WrongState(JobState::Cancelled))
    );
    assert_eq!(
        store::cancel(&mut conn, 999_999).await.unwrap(),
        Err(Refusal::NotFound)
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_schedule_tick_is_enqueued_once_whoever_asks(pool: PgPool) {
    let tick = Utc::now();
    let mut a = pool.acquire().await.unwrap();
    let mut b = pool.acquire().await.unwrap();
    let first = store::enqueue_tick(
        &mut a,
        "nightly",
        tick,
        &job("report", Some("report:today")),
    )
    .await
    .unwrap();
    let second = store::enqueue_tick(
        &mut b,
        "nightly",
        tick,
        &job("report", Some("report:today")),
    )
    .await
    .unwrap();
    assert!(first.is_some());
    assert!(second.is_none());
    assert_eq!(
        store::last_tick(&pool, "nightly").await.unwrap(),
        Some(tick).map(|t| t.with_nanosecond_trunc())
    );
}

trait TruncMicros {
    fn with_nanosecond_trunc(self) -> Self;
}

impl TruncMicros for chrono::DateTime<Utc> {
    // Postgres keeps microseconds.
    fn with_nanosecond_trunc(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(self.nanosecond() / 1000 * 1000)
            .unwrap()
    }
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn pruning_removes_old_finished_jobs_only(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let old = store::enqueue(&mut conn, &job("k", None)).await.unwrap().id;
    let live = store::enqueue(&mut conn, &job("k", Some("live")))
        .await
        .unwrap()
        .id;
    store::claim(&pool, "k", "w", 1, Duration::from_secs(30))
        .await
        .unwrap();
    store::complete(&pool, "w", &[(old, Completion::Done(json!(1)))])
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '8 days' WHERE id = $1")
        .bind(old)
        .execute(&pool)
        .await
        .unwrap();

    let pruned = store::prune(
        &pool,
        Duration::from_secs(7 * 86400),
        Duration::from_secs(30 * 86400),
        1000,
    )
    .await
    .unwrap();

    assert_eq!(pruned, 1);
    assert!(store::show(&pool, old).await.unwrap().is_none());
    assert!(store::show(&pool, live).await.unwrap().is_some());
}

/// Issue 11: after an outage longer than the lease, the first keeper back rescued every
/// in-flight job of every replica, and they ran twice. A lapsed lease whose worker still
/// heartbeats is left alone; one whose worker is silent is rescued.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_lapsed_lease_of_a_live_worker_is_not_rescued(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let id = store::enqueue(&mut conn, &job("k", None)).await.unwrap().id;
    store::register_worker(&pool, "alive", "h", 1, &["k".to_owned()])
        .await
        .unwrap();
    store::claim(&pool, "k", "alive", 1, Duration::from_secs(0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store::heartbeat(&mut conn, "alive", Duration::from_secs(0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store::rescue_expired(&pool, Duration::from_secs(30))
            .await
            .unwrap(),
        0,
        "its worker heartbeats: it is still running the job"
    );
    assert_eq!(state(&pool, id).await.state, JobState::Running);
    sqlx::query("UPDATE job_workers SET last_seen = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        store::rescue_expired(&pool, Duration::from_secs(30))
            .await
            .unwrap(),
        1
    );
}

/// Issue 11: a job deferred 2,000 times carried 314 KB of history rewritten on every update.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_jobs_error_history_keeps_its_last_twenty_entries(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let id = store::enqueue(&mut conn, &job("k", None)).await.unwrap().id;
    for n in 0..25 {
        store::claim(&pool, "k", "w", 1, Duration::from_secs(30))
            .await
            .unwrap();
        store::complete(
            &pool,
            "w",
            &[(
                id,
                Completion::Defer {
                    reason: format!("429 number {n}"),
                    at: Utc::now() - chrono::Duration::seconds(1),
                    max_deferrals: 1000,
                },
            )],
        )
        .await
        .unwrap();
    }
    let row = state(&pool, id).await;
    assert_eq!(row.deferrals, 25);
    let errors: serde_json::Value = sqlx::query_scalar("SELECT errors FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), 20);
    assert_eq!(errors[0]["error"], "429 number 5");
    assert_eq!(errors[19]["error"], "429 number 24");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn old_schedule_ticks_are_pruned_but_each_schedules_latest_stays(pool: PgPool) {
    sqlx::query(
        "INSERT INTO schedule_ticks (schedule, tick_at, enqueued_at) VALUES
           ('nightly', now() - interval '40 days', now() - interval '40 days'),
           ('nightly', now() - interval '39 days', now() - interval '39 days'),
           ('nightly', now() - interval '1 day', now() - interval '1 day'),
           ('monthly', now() - interval '60 days', now() - interval '60 days')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let pruned = store::prune_ticks(&pool, Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    let left: Vec<(String,)> =
        sqlx::query_as("SELECT schedule FROM schedule_ticks ORDER BY schedule")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(left, vec![("monthly".into(),), ("nightly".into(),)]);
}

/// Issue 11: an enqueue for a unit whose job was running was folded into that run and lost
/// (a manual reconcile without sync swallowed the nightly tick). Now exactly one more run
/// follows, with the newest arguments asked for, however many times it was asked.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn an_enqueue_for_a_running_unit_is_followed_by_exactly_one_rerun(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let first = store::enqueue(&mut conn, &job("tx_sync", Some("user:u1")))
        .await
        .unwrap();
    store::claim(&pool, "tx_sync", "w", 1, Duration::from_secs(30))
        .await
        .unwrap();
    // Asked for again while it runs: by hand, then by a sweep (enqueue_many).
    let mut again = job("tx_sync", Some("user:u1"));
    again.payload = json!({"v": 1, "unit": "user:u1", "asked": "by hand"});
    let folded = store::enqueue(&mut conn, &again).await.unwrap();
    assert_eq!((folded.id, folded.created), (first.id, false));
    let mut swept = job("tx_sync", Some("user:u1"));
    swept.payload = json!({"v": 1, "unit": "user:u1", "asked": "by the sweep"});
    assert_eq!(store::enqueue_many(&mut conn, &[swept]).await.unwrap(), 0);

    store::complete(&pool, "w", &[(first.id, Completion::Done(json!(null)))])
        .await
        .unwrap();
    let live: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "SELECT id, payload FROM jobs WHERE kind = 'tx_sync' AND state IN ('pending', 'failed', 'running')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(live.len(), 1, "exactly one rerun: {live:?}");
    assert_ne!(live[0].0, first.id);
    assert_eq!(live[0].1["asked"], "by the sweep");

    // The rerun itself ends with nothing asked: nothing follows it.
    store::claim(&pool, "tx_sync", "w", 1, Duration::from_secs(30))
        .await
        .unwrap();
    store::complete(&pool, "w", &[(live[0].0, Completion::Done(json!(null)))])
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE state IN ('pending', 'failed', 'running')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0);

    // A pending (not running) job is only brought forward, as before: no rerun.
    let pending = store::enqueue(&mut conn, &job("tx_sync", Some("user:u2")))
        .await
        .unwrap();
    store::enqueue(&mut conn, &job("tx_sync", Some("user:u2")))
        .await
        .unwrap();
    let rerun: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT rerun_payload FROM jobs WHERE id = $1")
            .bind(pending.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rerun, None);
}

/// Review: a rerun asked for while a polling job ran must shape its next run, not wait for
/// its final end (a snoozed job stays live).
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_rerun_asked_of_a_job_that_stays_live_becomes_its_next_run(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let first = store::enqueue(&mut conn, &job("kyc_poll", Some("user:u1")))
        .await
        .unwrap();
    store::claim(&pool, "kyc_poll", "w", 1, Duration::from_secs(30))
        .await
        .unwrap();
    let mut again = job("kyc_poll", Some("user:u1"));
    again.payload = json!({"v": 1, "unit": "user:u1", "asked": "now"});
    store::enqueue(&mut conn, &again).await.unwrap();
    store::complete(
        &pool,
        "w",
        &[(
            first.id,
            Completion::Snooze {
                result: json!(null),
                at: Utc::now() + chrono::Duration::hours(1),
            },
        )],
    )
    .await
    .unwrap();
    let row = state(&pool, first.id).await;
    assert_eq!(row.state, JobState::Pending);
    assert_eq!(row.payload["asked"], "now");
    assert!(
        row.run_at <= Utc::now() + chrono::Duration::seconds(5),
        "{row:?}"
    );
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE state IN ('pending', 'failed', 'running')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(live, 1, "no second job: the live one carries the request");
}

/// Review: a job rescued to `dead` dropped the rerun asked of it while it ran.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_job_rescued_to_dead_is_still_followed_by_the_rerun_asked_of_it(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let mut last_try = job("k", Some("unit"));
    last_try.max_attempts = 1;
    let first = store::enqueue(&mut conn, &last_try).await.unwrap();
    store::claim(&pool, "k", "crashed", 1, Duration::from_secs(0))
        .await
        .unwrap();
    let mut again = job("k", Some("unit"));
    again.payload = json!({"v": 1, "unit": "unit", "asked": "again"});
    assert!(store::enqueue(&mut conn, &again).await.unwrap().rerun_after);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store::rescue_expired(&pool, Duration::from_secs(30))
            .await
            .unwrap(),
        1
    );
    assert_eq!(state(&pool, first.id).await.state, JobState::Dead);
    let follow: Vec<(serde_json::Value,)> =
        sqlx::query_as("SELECT payload FROM jobs WHERE state = 'pending'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(follow.len(), 1);
    assert_eq!(follow[0].0["asked"], "again");
}

/// A dead job with a unit, as an operator finds it.
async fn dead_job(pool: &PgPool, kind: &str, unit: &str) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    let id = store::enqueue(&mut conn, &job(kind, Some(unit)))
        .await
        .unwrap()
        .id;
    store::claim(pool, kind, "w", 1, Duration::from_secs(30))
        .await
        .unwrap();
    store::complete(pool, "w", &[(id, Completion::Dead("nope".into()))])
        .await
        .unwrap();
    id
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn operators_retrying_the_same_job_at_once_are_told_the_truth(pool: PgPool) {
    let id = dead_job(&pool, "k", "unit").await;

    let answers = futures::future::join_all((0..8).map(|_| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            store::retry(&mut conn, id, 3).await.unwrap()
        }
    }))
    .await;

    let retried = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(
        retried, 1,
        "one retry happened, one is reported: {answers:?}"
    );
    for a in answers.iter().filter(|a| a.is_err()) {
        assert_eq!(*a, Err(Refusal::WrongState(JobState::Pending)));
    }
    let row = state(&pool, id).await;
    assert_eq!((row.state, row.max_attempts), (JobState::Pending, 4));
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_retry_racing_a_new_job_of_its_unit_leaves_one_live_job_and_says_which(pool: PgPool) {
    for round in 0..10 {
        // A kind per round: each round's claim must take its own job.
        let (kind, unit) = (format!("k{round}"), format!("unit-{round}"));
        let id = dead_job(&pool, &kind, &unit).await;
        let (retry, enqueued) = tokio::join!(
            async {
                let mut conn = pool.acquire().await.unwrap();
                store::retry(&mut conn, id, 1).await.unwrap()
            },
            async {
                let mut conn = pool.acquire().await.unwrap();
                store::enqueue(&mut conn, &job(&kind, Some(&unit)))
                    .await
                    .unwrap()
            }
        );
        let live: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE dedup_key = $1 AND state IN ('pending', 'failed', 'running')",
        )
        .bind(&unit)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(live.len(), 1, "round {round}: {live:?}");
        match retry {
            // The retried job is the live one and the enqueue was folded into it.
            Ok(()) => assert_eq!((live[0], enqueued.id, enqueued.created), (id, id, false)),
            // The new job won: the retry names it and changed nothing.
            Err(Refusal::Duplicate(other)) => {
                assert_eq!(
                    (live[0], other, enqueued.id),
                    (enqueued.id, enqueued.id, other)
                );
                assert_eq!(state(&pool, id).await.state, JobState::Dead);
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}
