//! The job system with real daemon processes against a fresh database and the sandbox:
//! replicas, crashes, restarts, signals, poison, pick-up latency, schedules.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use p100_sandbox::{RunningSandbox, Sandbox, Scenario};
use queue::store::{self, JobRow};
use queue::{JobState, NewJob};
use serde_json::json;
use sqlx::PgPool;

mod common;
use common::{BIN, Daemon, free_port, url_of, write_schedule};

async fn sandbox() -> RunningSandbox {
    Sandbox::from_scenario(Scenario::default())
        .spawn()
        .await
        .unwrap()
}

async fn migrate(pool: &PgPool) {
    ledger::MIGRATOR.run(pool).await.unwrap();
}

fn noop(args: serde_json::Value, max_attempts: i32) -> NewJob {
    NewJob {
        kind: "noop".into(),
        payload: args,
        dedup_key: None,
        run_at: None,
        max_attempts,
    }
}

async fn enqueue(pool: &PgPool, job: NewJob) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    store::enqueue(&mut conn, &job).await.unwrap().id
}

async fn job(pool: &PgPool, id: i64) -> JobRow {
    store::show(pool, id).await.unwrap().unwrap()
}

/// Polls until `done(job)` holds.
async fn wait_for(
    pool: &PgPool,
    id: i64,
    limit: Duration,
    what: &str,
    done: impl Fn(&JobRow) -> bool,
) -> JobRow {
    let deadline = Instant::now() + limit;
    loop {
        let row = job(pool, id).await;
        if done(&row) {
            return row;
        }
        assert!(Instant::now() < deadline, "job {id} never {what}: {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const PLAIN: &str = "[kinds.noop]\nconcurrency = 8\nmax_attempts = 3\n";

#[sqlx::test(migrations = false)]
async fn two_daemons_run_every_tick_and_every_job_exactly_once(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule(
        "two",
        &format!(
            "{PLAIN}\n[[schedules]]\nname = \"every-second\"\ncron = \"* * * * * *\"\nkind = \"noop\"\nargs = {{ label = \"tick\" }}\n"
        ),
    );
    let db = url_of(&pool);
    let jobs: Vec<NewJob> = (0..300)
        .map(|i| noop(json!({ "sleep_ms": i % 7 }), 3))
        .collect();
    store::enqueue_many(&mut pool.acquire().await.unwrap(), &jobs)
        .await
        .unwrap();

    let a = Daemon::start(&db, &p100, &schedule, &[]).await;
    let b = Daemon::start(&db, &p100, &schedule, &[]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.signal("TERM");
    b.signal("TERM");
    assert_eq!(a.wait(Duration::from_secs(30)).await, Some(0));
    assert_eq!(b.wait(Duration::from_secs(30)).await, Some(0));

    let counts: Vec<(String, i32, i32, i64)> = sqlx::query_as(
        "SELECT state, runs, attempts, count(*) FROM jobs WHERE payload->>'label' IS NULL GROUP BY 1, 2, 3",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        counts,
        vec![("done".to_owned(), 1, 1, 300)],
        "every job ran once, on one attempt"
    );

    let ticks: Vec<(DateTime<Utc>, Option<i64>)> =
        sqlx::query_as("SELECT tick_at, job_id FROM schedule_ticks WHERE schedule = 'every-second' ORDER BY tick_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(ticks.len() >= 3, "{} ticks in 5 s", ticks.len());
    assert!(
        ticks
            .windows(2)
            .all(|w| w[1].0 - w[0].0 == chrono::Duration::seconds(1)),
        "no tick skipped: {ticks:?}"
    );
    let tick_jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE payload->>'label' = 'tick'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        tick_jobs as usize,
        ticks.len(),
        "one job per tick, whatever the replicas"
    );
    assert!(ticks.iter().all(|(_, job)| job.is_some()));
}

#[sqlx::test(migrations = false)]
async fn a_job_of_a_killed_daemon_completes_once_on_the_other(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule("kill", PLAIN);
    let db = url_of(&pool);
    let fast_rescue = ["--lease", "3s", "--heartbeat", "1s"];
    let a = Daemon::start(&db, &p100, &schedule, &fast_rescue).await;
    let b = Daemon::start(&db, &p100, &schedule, &fast_rescue).await;
    let id = enqueue(&pool, noop(json!({ "sleep_ms": 2500 }), 3)).await;

    let running = wait_for(&pool, id, Duration::from_secs(10), "started", |j| {
        j.state == JobState::Running
    })
    .await;
    let holder = running.locked_by.unwrap();
    let (victim, survivor) = if holder.contains(&format!("-{}-", a.pid())) {
        (a, b)
    } else {
        (b, a)
    };
    assert!(holder.contains(&format!("-{}-", victim.pid())), "{holder}");
    victim.signal("KILL");
    let killed_at = Instant::now();

    let done = wait_for(&pool, id, Duration::from_secs(60), "finished", |j| {
        j.state.is_final()
    })
    .await;
    assert!(killed_at.elapsed() < Duration::from_secs(60));
    assert_eq!(
        (done.state, done.runs, done.attempts),
        (JobState::Done, 1, 2),
        "{done:?}"
    );
    let rescue = &done.errors.as_array().unwrap()[0];
    assert_eq!(rescue["action"], "rescue");
    assert!(rescue["error"].as_str().unwrap().contains(&holder));
    drop(survivor);
}

#[sqlx::test(migrations = false)]
async fn a_failing_job_backs_off_durably_across_a_restart_then_goes_dead(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule(
        "backoff",
        "[kinds.noop]\nmax_attempts = 3\nbackoff_base = \"2s\"\nbackoff_max = \"1m\"\n",
    );
    let db = url_of(&pool);
    let id = enqueue(&pool, noop(json!({ "fail_attempts": 10 }), 3)).await;

    // Delay after failure n is base × 2^(n−1), shortened by up to half by jitter.
    let check_delay = |row: &JobRow, n: usize| {
        let failed_at: DateTime<Utc> = row.errors[n - 1]["at"].as_str().unwrap().parse().unwrap();
        let delay = (row.run_at - failed_at).num_milliseconds();
        let full = 2000 * (1 << (n - 1));
        assert!(
            delay >= full / 2 - 50 && delay <= full + 50,
            "delay after failure {n}: {delay} ms, expected {}..={full}",
            full / 2
        );
    };

    let daemon = Daemon::start(&db, &p100, &schedule, &[]).await;
    let first = wait_for(&pool, id, Duration::from_secs(10), "failed once", |j| {
        j.state == JobState::Failed && j.attempts == 1
    })
    .await;
    check_delay(&first, 1);
    daemon.signal("TERM");
    assert_eq!(daemon.wait(Duration::from_secs(30)).await, Some(0));
    assert_eq!(
        job(&pool, id).await.run_at,
        first.run_at,
        "the delay survives the restart"
    );

    let _daemon = Daemon::start(&db, &p100, &schedule, &[]).await;
    let second = wait_for(&pool, id, Duration::from_secs(20), "failed twice", |j| {
        j.attempts == 2 && j.state != JobState::Running
    })
    .await;
    assert!(
        second.started_at.unwrap() >= first.run_at,
        "attempt 2 waited for its run_at"
    );
    check_delay(&second, 2);
    let dead = wait_for(&pool, id, Duration::from_secs(30), "died", |j| {
        j.state.is_final()
    })
    .await;
    assert_eq!((dead.state, dead.attempts), (JobState::Dead, 3));
    assert_eq!(dead.errors.as_array().unwrap().len(), 3);
    assert!(dead.last_error.unwrap().contains("attempt 3"));
}

#[sqlx::test(migrations = false)]
async fn sigterm_lets_the_job_in_flight_finish_and_exits_0(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule("term", PLAIN);
    let daemon = Daemon::start(&url_of(&pool), &p100, &schedule, &["--grace", "10s"]).await;
    let id = enqueue(&pool, noop(json!({ "sleep_ms": 2000 }), 3)).await;
    wait_for(&pool, id, Duration::from_secs(10), "started", |j| {
        j.state == JobState::Running
    })
    .await;

    let asked = Instant::now();
    daemon.signal("TERM");
    assert_eq!(daemon.wait(Duration::from_secs(10)).await, Some(0));
    assert!(asked.elapsed() < Duration::from_secs(10));
    let row = job(&pool, id).await;
    assert_eq!(
        (row.state, row.runs, row.attempts),
        (JobState::Done, 1, 1),
        "{row:?}"
    );
}

/// Issue 11: a deploy during a long job (grace 30 s against a 4 h reconciliation) abandoned it
/// to its lease and spent an attempt; three deploys a night made the nightly run dead. A job
/// still running when the grace period ends is given back unspent and runs again elsewhere.
#[sqlx::test(migrations = false)]
async fn a_job_outliving_the_grace_period_is_given_back_unspent(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule("grace", PLAIN);
    let daemon = Daemon::start(&url_of(&pool), &p100, &schedule, &["--grace", "1s"]).await;
    let id = enqueue(&pool, noop(json!({ "sleep_ms": 30000 }), 1)).await;
    wait_for(&pool, id, Duration::from_secs(10), "started", |j| {
        j.state == JobState::Running
    })
    .await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait(Duration::from_secs(15)).await, Some(0));
    let row = job(&pool, id).await;
    assert_eq!(
        (row.state, row.attempts, row.runs),
        (JobState::Pending, 0, 0),
        "released without spending its only attempt: {row:?}"
    );

    // The next daemon runs it once, with its one attempt.
    sqlx::query("UPDATE jobs SET payload = '{\"sleep_ms\": 10}' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let _next = Daemon::start(&url_of(&pool), &p100, &schedule, &[]).await;
    let row = wait_for(&pool, id, Duration::from_secs(20), "done", |j| {
        j.state == JobState::Done
    })
    .await;
    assert_eq!((row.attempts, row.runs), (1, 1));
}

/// Issue 11: a lease could be taken while its handler still ran; the job then ran twice at
/// once. A handler whose lease is taken from its process is stopped, and the job runs once,
/// under its new owner.
#[sqlx::test(migrations = false)]
async fn a_handler_whose_lease_is_taken_is_stopped(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule("lease-lost", PLAIN);
    let daemon = Daemon::start(
        &url_of(&pool),
        &p100,
        &schedule,
        &["--heartbeat", "1s", "--lease", "5s"],
    )
    .await;
    let id = enqueue(&pool, noop(json!({ "sleep_ms": 60000 }), 3)).await;
    wait_for(&pool, id, Duration::from_secs(10), "started", |j| {
        j.state == JobState::Running
    })
    .await;
    // Another replica takes it over (as a rescue after a lapsed lease would).
    sqlx::query(
        "UPDATE jobs SET locked_by = 'replica-b@elsewhere-w0-r0', attempts = attempts + 1 WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let metrics_url = format!("http://127.0.0.1:{}/metrics", daemon.port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains(r#"job_lease_lost_total{kind="noop"} 1"#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old handler was not stopped: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its stopped run recorded nothing; the new owner's run is the one that counts.
    let row = job(&pool, id).await;
    assert_eq!(
        (row.state, row.locked_by.as_deref(), row.runs),
        (JobState::Running, Some("replica-b@elsewhere-w0-r0"), 0),
        "{row:?}"
    );
    store::complete(
        &pool,
        "replica-b@elsewhere-w0-r0",
        &[(id, store::Completion::Done(json!(null)))],
    )
    .await
    .unwrap();
    let row = job(&pool, id).await;
    assert_eq!((row.state, row.runs), (JobState::Done, 1));
}

#[sqlx::test(migrations = false)]
async fn a_poisoned_payload_goes_dead_and_the_worker_carries_on(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule("poison", PLAIN);
    let poisoned = enqueue(&pool, noop(json!({ "sleep_ms": "soon" }), 3)).await;
    let good: Vec<i64> = {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(enqueue(&pool, noop(json!({}), 3)).await);
        }
        ids
    };
    let _daemon = Daemon::start(&url_of(&pool), &p100, &schedule, &[]).await;

    let dead = wait_for(&pool, poisoned, Duration::from_secs(10), "buried", |j| {
        j.state.is_final()
    })
    .await;
    assert_eq!(dead.state, JobState::Dead);
    assert!(dead.last_error.unwrap().contains("payload does not decode"));
    for id in good {
        let row = wait_for(&pool, id, Duration::from_secs(10), "done", |j| {
            j.state.is_final()
        })
        .await;
        assert_eq!(row.state, JobState::Done);
    }
    let later = enqueue(&pool, noop(json!({}), 3)).await;
    wait_for(
        &pool,
        later,
        Duration::from_secs(10),
        "done after the poison",
        |j| j.state == JobState::Done,
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn an_idle_daemon_picks_up_a_cli_job_within_a_second(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule("idle", PLAIN);
    let db = url_of(&pool);
    let _daemon = Daemon::start(&db, &p100, &schedule, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let out = Command::new(BIN)
        .args(["enqueue", "noop", "--wait", "--json"])
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("enqueued job ").map(str::to_owned));
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(row["state"], "done", "{id:?} {row}");
    let created: DateTime<Utc> = row["created_at"].as_str().unwrap().parse().unwrap();
    let started: DateTime<Utc> = row["started_at"].as_str().unwrap().parse().unwrap();
    assert!(
        started - created < chrono::Duration::seconds(1),
        "picked up after {:?}",
        started - created
    );
}

#[sqlx::test(migrations = false)]
async fn a_tick_missed_while_every_replica_was_down_runs_once_at_start(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule(
        "missed",
        &format!(
            "{PLAIN}\n[[schedules]]\nname = \"hourly\"\ncron = \"0 0 * * * *\"\nkind = \"noop\"\nargs = {{ label = \"hourly\" }}\n"
        ),
    );
    let now = Utc::now().timestamp();
    let last_hour = DateTime::from_timestamp(now - now % 3600, 0).unwrap();
    sqlx::query("INSERT INTO schedule_ticks (schedule, tick_at) VALUES ('hourly', $1)")
        .bind(last_hour - chrono::Duration::hours(5))
        .execute(&pool)
        .await
        .unwrap();
    let db = url_of(&pool);

    let _a = Daemon::start(&db, &p100, &schedule, &[]).await;
    let _b = Daemon::start(&db, &p100, &schedule, &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ticks: Vec<(DateTime<Utc>,)> = sqlx::query_as(
        "SELECT tick_at FROM schedule_ticks WHERE schedule = 'hourly' ORDER BY tick_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        ticks.len(),
        2,
        "only the latest missed tick runs: {ticks:?}"
    );
    assert_eq!(ticks[1].0, last_hour);
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE payload->>'label' = 'hourly'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(jobs, 1);
}

#[sqlx::test(migrations = false)]
async fn operators_enqueue_dedup_retry_and_cancel_from_the_cli(pool: PgPool) {
    migrate(&pool).await;
    let db = url_of(&pool);
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("DATABASE_URL", &db)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, first, _) = cli(&["enqueue", "noop", "--unit", "u-1", "--at", "1h", "--json"]);
    assert_eq!(code, 0);
    let (_, second, _) = cli(&["enqueue", "noop", "--unit", "u-1", "--json"]);
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(first["id"], second["id"], "one live job per unit");
    assert_eq!(second["created"], false);
    let id = first["id"].as_i64().unwrap();
    assert!(
        job(&pool, id).await.run_at <= Utc::now(),
        "brought forward to now"
    );

    let (code, _, err) = cli(&["jobs", "retry", &id.to_string()]);
    assert_eq!(code, 2, "a pending job cannot be retried");
    assert!(err.contains("is pending"), "{err}");
    let (code, _, _) = cli(&["jobs", "cancel", &id.to_string()]);
    assert_eq!(code, 0);
    assert_eq!(job(&pool, id).await.state, JobState::Cancelled);
    let (code, _, _) = cli(&["jobs", "retry", &id.to_string()]);
    assert_eq!(code, 0);
    assert_eq!(job(&pool, id).await.state, JobState::Pending);

    let (code, out, _) = cli(&["jobs", "list", "--json", "--state", "pending"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = &list[0];
    for field in ["id", "kind", "state", "attempts", "run_at", "last_error"] {
        assert!(
            row.get(field).is_some(),
            "jobs list --json lacks {field}: {row}"
        );
    }
    let (code, _, err) = cli(&["enqueue", "nonsense"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown job kind"), "{err}");
    let (code, _, err) = cli(&["enqueue", "noop", "--args", "{\"sleep_ms\": \"x\"}"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid arguments"), "{err}");
}

#[sqlx::test(migrations = false)]
async fn readyz_and_metrics_show_the_queue(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule("metrics", PLAIN);
    let daemon = Daemon::start(&url_of(&pool), &p100, &schedule, &[]).await;
    let id = enqueue(&pool, noop(json!({ "permanent_failure": true }), 3)).await;
    wait_for(&pool, id, Duration::from_secs(10), "dead", |j| {
        j.state == JobState::Dead
    })
    .await;

    let ready: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{}/readyz", daemon.port))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        json!({"ready": true, "database": "ok", "migrations": "ok", "p100": "reachable", "workers": "ok"})
    );
    sqlx::query(
        "INSERT INTO discrepancies (owner_kind, currency, class, severity) VALUES ('partner', 'eur', 'balance_mismatch', 'high'),
                ('partner', 'btc', 'balance_mismatch', 'high'), ('partner', 'usd', 'balance_mismatch', 'low')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", daemon.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"discrepancies_open{severity="high"} 2"#,
        r#"discrepancies_open{severity="medium"} 0"#,
        r#"discrepancies_open{severity="low"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
    assert!(
        metrics.contains(r#"jobs{kind="noop",state="dead"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"job_outcomes_total{kind="noop",outcome="dead"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("job_duration_seconds"), "{metrics}");
    assert!(metrics.contains(r#"worker_up{kind="noop"} 1"#), "{metrics}");
    assert!(
        metrics.contains("p100_request_duration_seconds"),
        "the start-up credential check is measured: {metrics}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_rejected_api_key_stops_the_daemon_with_one_line(pool: PgPool) {
    let p100 = sandbox().await;
    // tokio's Command: the sandbox answers on this test's runtime, which must not be blocked.
    let out = tokio::process::Command::new(BIN)
        .arg("daemon")
        .env("DATABASE_URL", url_of(&pool))
        .env("P100_BASE_URL", p100.base_url())
        .env("P100_API_KEY", "not-the-key-4711")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.contains("rejected the API key") && last.contains("xo2"),
        "{err}"
    );
    assert!(!err.contains("not-the-key-4711"), "the key leaked: {err}");
}

#[sqlx::test(migrations = false)]
async fn a_daemon_killed_during_finalize_never_submits_twice(pool: PgPool) {
    migrate(&pool).await;
    let funded = Scenario {
        partner: p100_sandbox::PartnerSpec {
            transactions: vec![p100_sandbox::TxSpec {
                amount: rust_decimal::Decimal::new(1_000_000, 2),
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Scenario::default()
    };
    let p100 = Sandbox::from_scenario(funded).spawn().await.unwrap();
    p100.sandbox().configure_exchange(|c| {
        c.after_polls = None;
        c.after_seconds = Some(0.0);
    });
    // P100 executes the exchange at once, then takes 30 s to answer: the daemon dies waiting.
    p100.sandbox().add_fault(
        p100_sandbox::Fault::new(
            "/v1/partner/exchange",
            p100_sandbox::FaultKind::Latency { ms: 30_000 },
        )
        .method("POST")
        .times(1),
    );
    let amount = rust_decimal::Decimal::new(100, 0);
    let (lock, _, expires) = p100.sandbox().create_lock("eur", "btc", amount);
    let expires: DateTime<Utc> = expires.parse().unwrap();
    let new = ledger::exchanges::NewExchange {
        owner: &ledger::Owner::Partner,
        lock_id: &lock,
        from: "eur",
        to: "btc",
        amount,
        expires_at: expires,
    };
    let id = ledger::exchanges::submit(&pool, &new, ledger::intake::FirstJob::QueuedByCaller)
        .await
        .unwrap();
    let schedule = write_schedule("finalize", PLAIN);
    let db = url_of(&pool);
    let fast_rescue = ["--lease", "3s", "--heartbeat", "1s"];
    let first = Daemon::start(&db, &p100, &schedule, &fast_rescue).await;
    enqueue(
        &pool,
        NewJob {
            kind: "exchange_finalize".into(),
            payload: json!({ "exchange": id.to_string() }),
            dedup_key: None,
            run_at: None,
            max_attempts: 20,
        },
    )
    .await;

    let state = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>("SELECT state FROM exchanges WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(state(pool.clone()).await == "SUBMITTING"
        && p100
            .sandbox()
            .request_stats()
            .exchange_finalize_calls
            .get(&lock)
            == Some(&1))
    {
        assert!(
            Instant::now() < deadline,
            "the finalize call never went out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.signal("KILL");
    let _second = Daemon::start(&db, &p100, &schedule, &fast_rescue).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = state(pool.clone()).await;
        if s == "COMPLETED" || s == "NEEDS_REVIEW" {
            break;
        }
        assert!(Instant::now() < deadline, "exchange stuck in {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        p100.sandbox()
            .request_stats()
            .exchange_finalize_calls
            .get(&lock),
        Some(&1),
        "P100 saw exactly one finalize"
    );
    assert_eq!(state(pool.clone()).await, "COMPLETED");
}

/// Makes the test's database refuse connections (and drops the open ones) until `restore`.
async fn database_outage(db_name: &str, on: bool) {
    let admin = PgPool::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    let quoted = format!("\"{db_name}\"");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {quoted} WITH ALLOW_CONNECTIONS {on}",
        on = if on { "false" } else { "true" }
    )))
    .execute(&admin)
    .await
    .unwrap();
    if on {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(db_name)
        .execute(&admin)
        .await
        .unwrap();
    }
    admin.close().await;
}

/// Issue 11: a database error stopped a worker and spent a restart budget that never
/// refilled; a short outage burned it and the daemon exited 0 while Postgres was still down.
/// Now the workers ride the outage out: `/readyz` says the database is unreachable, then ready
/// again, the process never exits, and a job enqueued after the outage runs once.
#[sqlx::test(migrations = false)]
async fn a_database_outage_is_ridden_out_and_the_daemon_never_dies(pool: PgPool) {
    migrate(&pool).await;
    let db_name = pool.connect_options().get_database().unwrap().to_owned();
    let p100 = sandbox().await;
    let schedule = write_schedule("outage", PLAIN);
    let mut daemon = Daemon::start(&url_of(&pool), &p100, &schedule, &[]).await;
    let readyz = |port: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(readyz(daemon.port).await, 200);
    // A job in flight when the database goes away: it finishes during the outage and its
    // outcome is recorded once the database is back, with its one attempt.
    let in_flight = enqueue(&pool, noop(json!({ "sleep_ms": 3000 }), 1)).await;
    wait_for(&pool, in_flight, Duration::from_secs(10), "started", |j| {
        j.state == JobState::Running
    })
    .await;

    database_outage(&db_name, true).await;
    pool.close().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(daemon.port).await != 503 {
        assert!(
            Instant::now() < deadline,
            "/readyz never reported the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Long enough for every worker to have polled (and failed) many times.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon exited during the outage"
    );
    database_outage(&db_name, false).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while readyz(daemon.port).await != 200 {
        assert!(Instant::now() < deadline, "/readyz never came back");
        assert!(
            daemon.child.try_wait().unwrap().is_none(),
            "the daemon exited"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pool = PgPool::connect(&url_of_name(&db_name)).await.unwrap();
    let row = wait_for(&pool, in_flight, Duration::from_secs(40), "done", |j| {
        j.state == JobState::Done
    })
    .await;
    assert_eq!((row.attempts, row.runs), (1, 1), "{row:?}");
    let id = enqueue(&pool, noop(json!({}), 3)).await;
    let row = wait_for(&pool, id, Duration::from_secs(20), "done", |j| {
        j.state == JobState::Done
    })
    .await;
    assert_eq!(row.attempts, 1);
    assert!(daemon.child.try_wait().unwrap().is_none());
}

fn url_of_name(db_name: &str) -> String {
    let base = std::env::var("DATABASE_URL").expect("tests need DATABASE_URL");
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(db_name);
    url.to_string()
}

/// What a full cycle leaves behind, for comparing runs.
#[derive(Debug, PartialEq)]
struct CycleResult {
    /// (owner, currency) → the ledger's balance.
    balances: Vec<(String, String, rust_decimal::Decimal)>,
    /// (class, owner, currency, subject) of every open discrepancy.
    discrepancies: Vec<(String, String, String, String)>,
    /// Exchanges P100 executed, per lock.
    executions: Vec<usize>,
}

/// How often a cycle's work was cut short by a kill: jobs rescued from a dead worker and
/// reconciliation runs abandoned mid-way.
async fn interruptions(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE errors::text LIKE '%rescue%'),
                (SELECT count(*) FROM reconciliation_runs WHERE state = 'failed')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

const CYCLE_SCHEDULE: &str = "[kinds.reconcile]\nmax_attempts = 100\n\n[kinds.report]\nmax_attempts = 100\n\n[kinds.exchange_finalize]\nmax_attempts = 100\n";

/// The start of a full cycle on the demo's P100: users tracked, an exchange locked and its
/// finalization queued. Returns the sandbox and the finalization job.
async fn start_cycle(pool: &PgPool) -> (RunningSandbox, i64) {
    migrate(pool).await;
    let scenario = Scenario::from_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/demo.toml"),
    )
    .unwrap();
    let p100 = Sandbox::from_scenario(scenario).spawn().await.unwrap();
    p100.sandbox().configure_exchange(|c| {
        c.after_polls = None;
        c.after_seconds = Some(0.0);
    });
    let users: Vec<String> = ["alice-0001", "bob-0002", "carol-0003"]
        .iter()
        .map(|u| (*u).to_owned())
        .collect();
    ledger::users::track(pool, &users, "test", ledger::intake::FirstJob::LeftToSweep)
        .await
        .unwrap();
    let amount = rust_decimal::Decimal::new(100, 0);
    let (lock, _, expires) = p100.sandbox().create_lock("eur", "btc", amount);
    let new = ledger::exchanges::NewExchange {
        owner: &ledger::Owner::Partner,
        lock_id: &lock,
        from: "eur",
        to: "btc",
        amount,
        // Far enough ahead for every disturbance below.
        expires_at: expires.parse::<DateTime<Utc>>().unwrap() + chrono::Duration::minutes(10),
    };
    let exchange = ledger::exchanges::submit(pool, &new, ledger::intake::FirstJob::QueuedByCaller)
        .await
        .unwrap();
    let finalize = enqueue(
        pool,
        NewJob {
            kind: "exchange_finalize".into(),
            payload: json!({ "exchange": exchange.to_string() }),
            dedup_key: Some(format!("exchange:{exchange}")),
            run_at: None,
            max_attempts: 100,
        },
    )
    .await;
    (p100, finalize)
}

/// Queues the nightly chain (sync, reconcile, report).
async fn enqueue_chain(pool: &PgPool) -> i64 {
    enqueue(
        pool,
        NewJob {
            kind: "reconcile".into(),
            payload: json!({ "sync": true, "report": true }),
            dedup_key: Some("all".into()),
            run_at: None,
            max_attempts: 100,
        },
    )
    .await
}

/// Waits for the chain's end (the run and its report), then reads what the cycle left.
async fn finish_cycle(pool: &PgPool, p100: &RunningSandbox, reconcile_id: i64) -> CycleResult {
    wait_for(pool, reconcile_id, Duration::from_secs(180), "done", |j| {
        j.state == JobState::Done
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reports: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE kind = 'report' AND state = 'done'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if reports >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the report was never written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let balances = sqlx::query_as(
        "SELECT COALESCE(external_user_id, 'partner'), currency, balance FROM ledger_accounts
          WHERE balance IS NOT NULL ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let discrepancies = sqlx::query_as(
        "SELECT class, COALESCE(external_user_id, 'partner'), COALESCE(currency, ''), COALESCE(subject, '')
           FROM discrepancies WHERE state <> 'resolved' ORDER BY 1, 2, 3, 4",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut per_lock: std::collections::BTreeMap<String, usize> = Default::default();
    for e in p100.sandbox().exchanges() {
        *per_lock.entry(e.lock_id).or_default() += 1;
    }
    CycleResult {
        balances,
        discrepancies,
        executions: per_lock.into_values().collect(),
    }
}

const CYCLE_FLAGS: [&str; 6] = ["--lease", "3s", "--heartbeat", "1s", "--grace", "1s"];

/// One full cycle (the exchange first, as the nightly run follows the day's operations, then
/// the chain), with the daemon killed with SIGKILL `kills` times at random points and
/// restarted each time.
async fn full_cycle(pool: &PgPool, kills: usize, seed: u64) -> CycleResult {
    use rand::{Rng, SeedableRng};
    let (p100, finalize) = start_cycle(pool).await;
    let schedule = write_schedule(&format!("cycle-{seed}"), CYCLE_SCHEDULE);
    let db = url_of(pool);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut reconcile_id = None;
    for _ in 0..kills {
        let daemon = Daemon::start(&db, &p100, &schedule, &CYCLE_FLAGS).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..900))).await;
        daemon.signal("KILL");
        let _ = daemon.wait(Duration::from_secs(10)).await;
        if reconcile_id.is_none() && job(pool, finalize).await.state == JobState::Done {
            reconcile_id = Some(enqueue_chain(pool).await);
        }
    }
    let _daemon = Daemon::start(&db, &p100, &schedule, &CYCLE_FLAGS).await;
    let reconcile_id = match reconcile_id {
        Some(id) => id,
        None => {
            wait_for(pool, finalize, Duration::from_secs(60), "done", |j| {
                j.state == JobState::Done
            })
            .await;
            enqueue_chain(pool).await
        }
    };
    finish_cycle(pool, &p100, reconcile_id).await
}

/// The undisturbed cycle, in a scratch database of the machine's server.
async fn undisturbed_cycle() -> CycleResult {
    let admin = PgPool::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    let name = format!(
        "p100_recon_ref_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let reference = PgPool::connect(&url_of_name(&name)).await.unwrap();
    let result = full_cycle(&reference, 0, 1).await;
    reference.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    result
}

/// Issue 11: `kill -9` of the daemon at 20 random points of a full cycle, restarted each time:
/// the ledger and the report's discrepancies equal an undisturbed run's, and the exchange was
/// executed at P100 exactly once.
#[sqlx::test(migrations = false)]
async fn a_cycle_killed_twenty_times_ends_as_an_undisturbed_one(pool: PgPool) {
    let undisturbed = undisturbed_cycle().await;
    assert_eq!(undisturbed.executions, vec![1]);
    assert!(
        !undisturbed.discrepancies.is_empty(),
        "the demo's designed drifts are found"
    );
    let killed = full_cycle(&pool, 20, 7).await;
    let (rescued, abandoned) = interruptions(&pool).await;
    assert!(
        rescued + abandoned > 0,
        "the kills cut no work short: the test proved nothing"
    );
    assert_eq!(killed, undisturbed);
}

/// A Postgres cluster of the test's own (so it can be restarted and stopped without touching
/// the machine's server), on a free port, trust auth, removed on drop.
struct LocalCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl LocalCluster {
    fn start() -> LocalCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                let mut dirs: Vec<PathBuf> = versions
                    .filter_map(|v| v.ok().map(|v| v.path().join("bin")))
                    .filter(|b| b.join("pg_ctl").exists())
                    .collect();
                dirs.sort();
                dirs.pop()
            })
            .expect("this test needs PostgreSQL's server binaries (Debian's postgresql package)");
        let dir = std::env::temp_dir().join(format!(
            "p100-recon-pg-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = LocalCluster {
            bin,
            dir,
            port: free_port(),
        };
        // initdb and postgres refuse to run as root: then as the postgres system user.
        if cluster.as_root() {
            assert!(
                Command::new("chown")
                    .args(["-R", "postgres"])
                    .arg(&cluster.dir)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data().to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
            ],
        );
        cluster.up();
        cluster
    }

    fn as_root(&self) -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let status = if self.as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        } else {
            Command::new(&program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        }
        .unwrap();
        assert!(status.success(), "{tool} {args:?} failed");
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    fn down(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new(if self.as_root() { "runuser" } else { "true" })
            .args(if self.as_root() {
                vec!["-u".to_owned(), "postgres".to_owned(), "--".to_owned()]
            } else {
                vec![]
            })
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Issue 11: Postgres restarted twice during a full cycle and stopped for 60 s once. The cycle
/// completes, every job ran to its end, `ledger verify` is clean, and the ledger and the
/// discrepancies equal an undisturbed run's.
#[tokio::test]
async fn a_cycle_through_postgres_restarts_and_a_minute_down_ends_as_an_undisturbed_one() {
    let undisturbed = undisturbed_cycle().await;
    let cluster = LocalCluster::start();
    let admin = PgPool::connect(&cluster.url("postgres")).await.unwrap();
    sqlx::query("CREATE DATABASE cycle")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let db = cluster.url("cycle");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&db)
        .await
        .unwrap();
    let (p100, finalize) = start_cycle(&pool).await;
    let schedule = write_schedule("pg-restarts", CYCLE_SCHEDULE);
    let mut daemon = Daemon::start(&db, &p100, &schedule, &CYCLE_FLAGS).await;

    // A restart while the exchange is being finalized.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.down();
    cluster.up();
    wait_for(&pool, finalize, Duration::from_secs(60), "done", |j| {
        j.state == JobState::Done
    })
    .await;
    let chain = enqueue_chain(&pool).await;
    // A restart during the chain, then a minute down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.down();
    cluster.up();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.down();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon exited while Postgres was down"
    );
    cluster.up();

    let result = finish_cycle(&pool, &p100, chain).await;
    let unfinished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind IN ('exchange_finalize', 'reconcile', 'report') AND state <> 'done'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unfinished, 0, "every job ran to its end");
    let verify = Command::new(BIN)
        .args(["ledger", "verify"])
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "ledger verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(daemon.child.try_wait().unwrap().is_none());
    assert_eq!(result, undisturbed);
}

/// Issue 11 (review): `enqueue --wait` for a unit whose job is running waited for the run
/// under way, which predates the request. It waits for the run that follows it.
#[sqlx::test(migrations = false)]
async fn enqueue_wait_for_a_running_unit_waits_for_the_run_after_it(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule("wait-rerun", PLAIN);
    let db = url_of(&pool);
    let _daemon = Daemon::start(&db, &p100, &schedule, &[]).await;
    let running = enqueue(
        &pool,
        NewJob {
            kind: "noop".into(),
            payload: json!({ "unit": "u-1", "sleep_ms": 1500, "label": "first" }),
            dedup_key: Some("u-1".into()),
            run_at: None,
            max_attempts: 3,
        },
    )
    .await;
    wait_for(&pool, running, Duration::from_secs(10), "started", |j| {
        j.state == JobState::Running
    })
    .await;
    let db_for_cli = db.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "enqueue",
                "noop",
                "--unit",
                "u-1",
                "--args",
                r#"{"label": "second"}"#,
                "--wait",
            ])
            .env("DATABASE_URL", &db_for_cli)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("one more run follows it"), "{stdout}");
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, state, payload->>'label' FROM jobs WHERE kind = 'noop' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].1.as_str(), rows[0].2.as_str()), ("done", "first"));
    assert_eq!((rows[1].1.as_str(), rows[1].2.as_str()), ("done", "second"));
    assert!(
        stdout.contains(&format!("job {} completed", rows[1].0)),
        "it reported the run after: {stdout}"
    );
}

/// Issue 11: workers claimed more than they could start (apalis fetches a new batch as soon as
/// its buffer is empty); rows sat `running`, unavailable to other replicas and re-run after a
/// crash. A worker claims only the slots it has free: with concurrency 2, never more than 2
/// rows are running at once, and both slots are used.
#[sqlx::test(migrations = false)]
async fn a_worker_claims_only_what_it_can_start(pool: PgPool) {
    migrate(&pool).await;
    let p100 = sandbox().await;
    let schedule = write_schedule("claim", "[kinds.noop]\nconcurrency = 2\nmax_attempts = 3\n");
    let _daemon = Daemon::start(&url_of(&pool), &p100, &schedule, &[]).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(enqueue(&pool, noop(json!({ "sleep_ms": 700 }), 3)).await);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let mut most = 0;
    loop {
        let (running, done): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE state = 'done') FROM jobs",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        most = most.max(running);
        assert!(
            running <= 2,
            "{running} rows running with a concurrency of 2"
        );
        if done == ids.len() as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "the jobs never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, 2, "both slots were used");
}

/// This daemon's P100 budget share, from its `/metrics`.
async fn budget_share(daemon: &Daemon) -> Option<u32> {
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", daemon.port))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("p100_budget_share_rps"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u32)
}

/// Issue 13: three daemons on one database share P100_MAX_RPS (the sandbox enforces it with
/// 429s): their shares sum to the budget, one `kill -9`'d mid-cycle leaves its share to the
/// other two within 15 s, the cycle ends as an undisturbed one, and P100 never said 429.
#[sqlx::test(migrations = false)]
async fn three_daemons_share_one_budget_and_survivors_take_a_killed_ones_share(pool: PgPool) {
    const BUDGET: u32 = 10;
    let undisturbed = undisturbed_cycle().await;
    let (p100, finalize) = start_cycle(&pool).await;
    p100.sandbox().set_rate_limit(Some(BUDGET));
    let schedule = write_schedule("budget-three", CYCLE_SCHEDULE);
    let db = url_of(&pool);
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(Daemon::start(&db, &p100, &schedule, &CYCLE_FLAGS).await);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut shares = Vec::new();
        for d in &daemons {
            shares.push(budget_share(d).await.unwrap_or(0));
        }
        if shares.iter().sum::<u32>() == BUDGET && shares.iter().all(|s| *s > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "three replicas' shares: {shares:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for(&pool, finalize, Duration::from_secs(60), "done", |j| {
        j.state == JobState::Done
    })
    .await;
    let reconcile_id = enqueue_chain(&pool).await;

    let killed = daemons.remove(0);
    killed.signal("KILL");
    let _ = killed.wait(Duration::from_secs(10)).await;
    let killed_at = Instant::now();
    loop {
        let mut shares = Vec::new();
        for d in &daemons {
            shares.push(budget_share(d).await.unwrap_or(0));
        }
        // The killed one's reserve is kept for a minute in case it is only cut off.
        let reserve = queue::budget::reserve(BUDGET, 3);
        if shares.iter().sum::<u32>() == BUDGET - reserve {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "the survivors' shares: {shares:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let result = finish_cycle(&pool, &p100, reconcile_id).await;
    assert_eq!(result, undisturbed);
    assert_eq!(
        p100.sandbox().request_stats().responses.get("429"),
        None,
        "P100 rate-limited the deployment"
    );
}
