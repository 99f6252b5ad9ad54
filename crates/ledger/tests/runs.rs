//! Which run a day's report describes.

use sqlx::PgPool;

/// Issue 11: the report of a day described the last run of any scope that day, so a one-user
/// run after the nightly one replaced it.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_days_report_is_its_nightly_run_not_a_later_narrower_one(pool: PgPool) {
    let nightly = ledger::reconciliation::start_run(&pool, "all", 100, true)
        .await
        .unwrap();
    // A manual run of every owner (no sync, no report) later the same day, then one user.
    sqlx::query("UPDATE reconciliation_runs SET state = 'finished'")
        .execute(&pool)
        .await
        .unwrap();
    let manual = ledger::reconciliation::start_run(&pool, "all", 100, false)
        .await
        .unwrap();
    let later = ledger::reconciliation::start_run(&pool, "user:u-1", 100, false)
        .await
        .unwrap();
    sqlx::query("UPDATE reconciliation_runs SET state = 'finished', finished_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    let today = chrono::Utc::now().date_naive();
    let run = ledger::reconciliation::last_run_on(&pool, today)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.id, nightly);
    assert_ne!(run.id, later);
    assert_ne!(run.id, manual);

    // A day without a nightly run is described by its last run.
    sqlx::query("DELETE FROM reconciliation_runs WHERE scope = 'all'")
        .execute(&pool)
        .await
        .unwrap();
    let run = ledger::reconciliation::last_run_on(&pool, today)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.id, later);
}
