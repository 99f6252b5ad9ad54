//! `reconcile` against the sandbox: a drift is found once, kept, and auto-resolved when P100
//! fixes it; the person's workflow on a discrepancy.

mod common;

use jobs::JobContext;
use jobs::reconcile::{ReconcileArgs, reconcile};
use p100_sandbox::{RunningSandbox, Scenario, TxSpec};
use sqlx::PgPool;

use common::dec;

async fn setup(pool: &PgPool) -> (RunningSandbox, JobContext) {
    common::start(pool, common::funded_partner("1000.00")).await
}

fn partner_with_sync() -> ReconcileArgs {
    ReconcileArgs {
        partner: true,
        sync: true,
        ..ReconcileArgs::default()
    }
}

async fn events(pool: &PgPool, id: i64) -> Vec<String> {
    ledger::discrepancies::events(pool, id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_drift_is_flagged_once_kept_and_auto_resolved_when_p100_fixes_it(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    let clean = reconcile(&ctx, &partner_with_sync()).await.unwrap();
    assert_eq!(clean.discrepancies, 0, "{clean:?}");
    assert!(clean.accounts_checked >= 1 && clean.matched == clean.accounts_checked);

    sandbox
        .sandbox()
        .add_drift("partner", "eur", dec("7.25"))
        .unwrap();
    let first = reconcile(&ctx, &partner_with_sync()).await.unwrap();
    assert_eq!(first.discrepancies, 1);
    let found = ledger::discrepancies::unresolved(&pool).await.unwrap();
    assert_eq!(found.len(), 1);
    let d = &found[0];
    assert_eq!(
        (
            d.class.as_str(),
            d.currency.as_deref(),
            d.delta,
            d.provider_balance,
            d.ledger_balance
        ),
        (
            "balance_mismatch",
            Some("eur"),
            Some(dec("7.25")),
            Some(dec("1007.25")),
            Some(dec("1000.00"))
        )
    );

    // A second run finds the same thing: the same row, nothing new in its log.
    let second = reconcile(&ctx, &partner_with_sync()).await.unwrap();
    assert_eq!(second.discrepancies, 1);
    assert_eq!(events(&pool, d.id).await, vec!["opened"]);

    // A person acknowledges it; P100 corrects the balance; the next run resolves it.
    let mut tx = pool.begin().await.unwrap();
    ledger::discrepancies::step(&mut tx, d.id, "acknowledged", "ops-anna", "asked P100")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sandbox
        .sandbox()
        .add_drift("partner", "eur", dec("-7.25"))
        .unwrap();
    let third = reconcile(&ctx, &partner_with_sync()).await.unwrap();
    assert_eq!((third.discrepancies, third.auto_resolved), (0, 1));
    let d = ledger::discrepancies::show(&pool, d.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.state, "resolved");
    let log = ledger::discrepancies::events(&pool, d.id).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|e| (e.event.as_str(), e.actor.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("opened", "reconcile"),
            ("acknowledged", "ops-anna"),
            ("auto_resolved", "reconcile")
        ]
    );
    assert!(log[2].note.as_deref().unwrap().contains("matching again"));
    // A resolved discrepancy cannot be acknowledged; the log refuses edits.
    let mut tx = pool.begin().await.unwrap();
    let refused = ledger::discrepancies::step(&mut tx, d.id, "acknowledged", "x", "late").await;
    assert!(refused.is_err());
    drop(tx);
    let edit = sqlx::query("UPDATE discrepancy_events SET note = 'x'")
        .execute(&pool)
        .await;
    assert!(edit.is_err(), "the event log is append-only");

    // The same account drifting again reopens the same discrepancy, with the new figures;
    // a different delta next time is an update.
    sandbox
        .sandbox()
        .add_drift("partner", "eur", dec("1.00"))
        .unwrap();
    reconcile(&ctx, &partner_with_sync()).await.unwrap();
    sandbox
        .sandbox()
        .add_drift("partner", "eur", dec("1.00"))
        .unwrap();
    reconcile(&ctx, &partner_with_sync()).await.unwrap();
    let again = ledger::discrepancies::show(&pool, d.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.state.as_str(), again.delta),
        ("open", Some(dec("2.00")))
    );
    assert_eq!(
        events(&pool, d.id).await,
        vec![
            "opened",
            "acknowledged",
            "auto_resolved",
            "reopened",
            "updated"
        ]
    );
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM discrepancies")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(all, 1, "stored once per (owner, currency, class)");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_sync_that_keeps_failing_leaves_its_owner_unchecked_and_queues_a_follow_up(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    // Unavailable for the whole run: more failures than a run retries.
    sandbox.sandbox().add_fault(p100_sandbox::Fault::new(
        "/v1/partner/transactions",
        p100_sandbox::FaultKind::P501,
    ));
    let run = reconcile(&ctx, &partner_with_sync()).await.unwrap();
    assert!(!run.complete);
    // Its balance was not compared with a ledger that could not be brought up to date.
    assert_eq!((run.accounts_checked, run.discrepancies), (0, 0), "{run:?}");
    let recorded = ledger::reconciliation::run(&pool, run.run_id)
        .await
        .unwrap()
        .unwrap();
    let reasons = recorded.incomplete_reasons.to_string();
    assert!(
        reasons.contains("partner left unchecked") && reasons.contains("P501"),
        "{reasons}"
    );
    assert!(recorded.p100_calls >= 5 && recorded.p100_budget > 0);
    // A follow-up for exactly that owner, a few minutes later.
    let queued = queue::store::list(
        &pool,
        &queue::store::ListFilter {
            kind: Some("reconcile".into()),
            states: Vec::new(),
            limit: 10,
        },
    )
    .await
    .unwrap();
    let follow_up = queued
        .iter()
        .find(|j| j.dedup_key.as_deref() == Some(format!("follow-up:{}", run.run_id).as_str()))
        .expect("a follow-up run is queued");
    assert_eq!(follow_up.payload["partner"], true);
    assert_eq!(follow_up.payload["report"], false);
    assert!(follow_up.run_at > chrono::Utc::now() + chrono::Duration::minutes(4));

    // P100 is back: the follow-up covers the partner and completes.
    sandbox.sandbox().clear_faults();
    let args: ReconcileArgs = serde_json::from_value(follow_up.payload.clone()).unwrap();
    let again = reconcile(&ctx, &args).await.unwrap();
    assert!(again.complete && again.accounts_checked >= 1, "{again:?}");
}

/// Issue 11: one P501 on one read made the nightly report incomplete. Transient failures on
/// every endpoint (P501, and a 503 with an HTML body, 10 % each, never twice in a row) are
/// retried within the run: the report is complete and holds exactly the designed drift.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_fault_storm_still_gives_a_complete_run_with_exactly_the_designed_discrepancy(
    pool: PgPool,
) {
    let users: Vec<p100_sandbox::UserSpec> = (1..=30)
        .map(|i| p100_sandbox::UserSpec {
            external_user_id: format!("storm-{i:02}"),
            transactions: (0..i % 4)
                .map(|k| TxSpec {
                    amount: dec(&format!("{}.25", 10 + k)),
                    ..TxSpec::default()
                })
                .collect(),
            ..p100_sandbox::UserSpec::default()
        })
        .collect();
    let scenario = Scenario {
        users,
        ..common::funded_partner("1000.00")
    };
    let (sandbox, ctx) = common::start(&pool, scenario).await;
    let ids: Vec<String> = (1..=30).map(|i| format!("storm-{i:02}")).collect();
    ledger::users::track(&pool, &ids, "test", ledger::intake::FirstJob::LeftToSweep)
        .await
        .unwrap();
    let all = ReconcileArgs {
        sync: true,
        ..ReconcileArgs::default()
    };
    let clean = reconcile(&ctx, &all).await.unwrap();
    assert!(clean.complete && clean.discrepancies == 0, "{clean:?}");

    sandbox
        .sandbox()
        .add_drift("storm-07", "eur", dec("3.50"))
        .unwrap();
    sandbox.sandbox().add_faults([
        p100_sandbox::Fault::new("*", p100_sandbox::FaultKind::P501)
            .method("GET")
            .every(10),
        p100_sandbox::Fault::new("*", p100_sandbox::FaultKind::HttpStatus { status: 503 })
            .method("GET")
            .skip(5)
            .every(10),
    ]);
    let stormy = reconcile(&ctx, &all).await.unwrap();
    let fired: u64 = sandbox.sandbox().faults().iter().map(|f| f.fired).sum();
    assert!(fired >= 8, "the storm happened: {fired} faults fired");
    assert!(stormy.complete, "{stormy:?}");
    let found: Vec<(String, Option<String>)> = ledger::discrepancies::unresolved(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.class, d.external_user_id))
        .collect();
    assert_eq!(
        found,
        vec![("balance_mismatch".to_owned(), Some("storm-07".to_owned()))]
    );
}

/// Issue 11: a user that once answered P412 was never asked again. It is asked on every run;
/// once P100 knows it, it is reconciled and its `unknown_user` resolves itself.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_user_p100_did_not_know_is_asked_again_and_resolved_once_known(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    let late = vec!["late-1".to_owned()];
    ledger::users::track(&pool, &late, "test", ledger::intake::FirstJob::LeftToSweep)
        .await
        .unwrap();
    sqlx::query("UPDATE tracked_users SET unknown_at_p100 = true")
        .execute(&pool)
        .await
        .unwrap();
    let all = ReconcileArgs {
        sync: true,
        ..ReconcileArgs::default()
    };
    reconcile(&ctx, &all).await.unwrap();
    let classes = |pool: PgPool| async move {
        ledger::discrepancies::unresolved(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.class, d.external_user_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        classes(pool.clone()).await,
        vec![("unknown_user".to_owned(), Some("late-1".to_owned()))]
    );

    sandbox
        .sandbox()
        .add_users(vec![p100_sandbox::UserSpec {
            external_user_id: "late-1".into(),
            transactions: vec![TxSpec {
                amount: dec("5.00"),
                ..TxSpec::default()
            }],
            ..p100_sandbox::UserSpec::default()
        }])
        .unwrap();
    let second = reconcile(&ctx, &all).await.unwrap();
    assert!(second.complete, "{second:?}");
    assert_eq!(classes(pool.clone()).await, vec![], "{second:?}");
    let known: bool = sqlx::query_scalar(
        "SELECT NOT unknown_at_p100 FROM tracked_users WHERE external_user_id = 'late-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(known);
    let balance: Option<rust_decimal::Decimal> = sqlx::query_scalar(
        "SELECT balance FROM ledger_accounts WHERE external_user_id = 'late-1' AND currency = 'eur'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap()
    .flatten();
    assert_eq!(balance, Some(dec("5.00")), "its history was synced");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_stale_pending_row_is_resolved_once_p100_completes_it(pool: PgPool) {
    let scenario = Scenario {
        partner: p100_sandbox::PartnerSpec {
            transactions: vec![TxSpec {
                id: Some("slow-deposit".into()),
                status: "PENDING".into(),
                amount: dec("30.00"),
                steps: vec![p100_sandbox::TxStep {
                    status: "COMPLETED".into(),
                    after_polls: Some(1),
                    after_seconds: None,
                }],
                ..TxSpec::default()
            }],
            ..Default::default()
        },
        ..Scenario::default()
    };
    let (_sandbox, ctx) = common::start(&pool, scenario).await;
    // Pending for "too long" at once (no wait in a test).
    let args = ReconcileArgs {
        stale_after_seconds: Some(0),
        ..partner_with_sync()
    };
    let first = reconcile(&ctx, &args).await.unwrap();
    let found = ledger::discrepancies::unresolved(&pool).await.unwrap();
    assert_eq!(
        found
            .iter()
            .map(|d| (d.class.as_str(), d.subject.as_deref()))
            .collect::<Vec<_>>(),
        vec![("stale_pending", Some("slow-deposit"))],
        "{first:?}"
    );

    // P100 completes it (the history shows it COMPLETED from its next read on); the sync
    // posts it; the run finds nothing about it and resolves it.
    let second = reconcile(&ctx, &args).await.unwrap();
    assert_eq!(
        (second.discrepancies, second.auto_resolved),
        (0, 1),
        "{second:?}"
    );
    assert!(
        ledger::discrepancies::unresolved(&pool)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A history row P100 sent in a form that cannot be read is a movement the ledger may lack: it
/// is reported (with P100's id and the reason) until a readable version of it arrives.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn an_unreadable_history_row_is_reported_until_it_reads(pool: PgPool) {
    let (_sandbox, ctx) = setup(&pool).await;
    let owner = ledger::Owner::Partner;
    let raw = serde_json::json!({"id": "bad-1", "type": "DEPOSIT", "status": "COMPLETED",
        "currency": "EUR", "amount": "ten", "updatedAt": "2026-01-01T00:00:01Z"});
    let mut conn = pool.acquire().await.unwrap();
    ledger::provider::store_undecodable(
        &mut conn,
        &owner,
        &[ledger::provider::UndecodableRow {
            provider_tx_id: Some("bad-1".into()),
            payload_hash: raw.to_string(),
            payload: raw,
            error: "amount: expected a decimal, got \"ten\"".into(),
        }],
    )
    .await
    .unwrap();
    drop(conn);

    let first = reconcile(&ctx, &partner_with_sync()).await.unwrap();
    let found = ledger::discrepancies::unresolved(&pool).await.unwrap();
    assert_eq!(
        found
            .iter()
            .map(|d| (
                d.class.as_str(),
                d.subject.as_deref(),
                d.currency.as_deref()
            ))
            .collect::<Vec<_>>(),
        vec![("missing_locally", Some("bad-1"), Some("eur"))],
        "{first:?}"
    );
    let detail = serde_json::to_string(&found[0]).unwrap();
    assert!(
        detail.contains("cannot be read") && detail.contains("ten"),
        "{detail}"
    );

    // P100 serves a readable version later: stored, posted, and the finding resolves itself.
    let readable = ledger::provider::ObservedTx {
        provider_tx_id: "bad-1".into(),
        kind: "DEPOSIT".into(),
        status: "COMPLETED".into(),
        currency: "eur".into(),
        amount: dec("10.00"),
        fee: dec("0"),
        reference: None,
        exchange_id: None,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        payload: serde_json::json!({"id": "bad-1", "amount": "10.00"}),
        payload_hash: "readable".into(),
    };
    jobs::tx_sync::apply_page(&pool, &owner, vec![readable], vec![])
        .await
        .unwrap();
    let second = reconcile(
        &ctx,
        &ReconcileArgs {
            partner: true,
            ..ReconcileArgs::default()
        },
    )
    .await
    .unwrap();
    let still: Vec<_> = ledger::discrepancies::unresolved(&pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.subject.as_deref() == Some("bad-1"))
        .collect();
    assert!(still.is_empty(), "{still:?} after {second:?}");
}

/// Issue 11 / SPEC §5.1: a movement P100 completes between an owner's sync and its balance
/// read showed as a false `balance_mismatch`. The read is at T; an owner that differs is
/// synced again (to at least T) and compared at the same T.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_movement_between_the_sync_and_the_balance_read_is_not_a_mismatch(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    reconcile(&ctx, &partner_with_sync()).await.unwrap();
    // The next balance read is held for a moment; while it is held, P100 settles a deposit.
    sandbox.sandbox().add_fault(
        p100_sandbox::Fault::new(
            "/v1/partner/balances",
            p100_sandbox::FaultKind::Latency { ms: 1500 },
        )
        .times(1),
    );
    let run = {
        let ctx = ctx.clone();
        tokio::spawn(async move { reconcile(&ctx, &partner_with_sync()).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sandbox.sandbox().faults()[0].seen == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the balance read never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sandbox
        .sandbox()
        .add_transactions(
            "partner",
            vec![TxSpec {
                id: Some("late-deposit".into()),
                amount: dec("12.00"),
                ..TxSpec::default()
            }],
        )
        .unwrap();
    let run = run.await.unwrap().unwrap();
    assert!(run.complete, "{run:?}");
    assert_eq!(run.discrepancies, 0, "{run:?}");
    assert!(
        ledger::discrepancies::unresolved(&pool)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Issue 11: rewriting a past day's report showed today's figures (discrepancies acknowledged
/// or resolved since). A past day's report is rewritten as that day's report said.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn rewriting_a_past_days_report_reproduces_that_day(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    sandbox
        .sandbox()
        .add_drift("partner", "eur", dec("7.25"))
        .unwrap();
    let run = reconcile(&ctx, &partner_with_sync()).await.unwrap();
    // That run happened yesterday.
    sqlx::query(
        "UPDATE reconciliation_runs SET started_at = started_at - interval '1 day',
                finished_at = finished_at - interval '1 day' WHERE id = $1",
    )
    .bind(run.run_id)
    .execute(&pool)
    .await
    .unwrap();
    let day = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    let dir = std::env::temp_dir().join(format!("past-day-{}", run.run_id));
    let (first, _) = jobs::report::write_day(&pool, &dir, day).await.unwrap();
    let file = dir.join(day.to_string()).join("reconciliation.json");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(first.discrepancies.len(), 1);
    assert_eq!(first.discrepancies[0].state, "open");

    // Since then a person resolved it.
    let id: i64 = first.discrepancies[0].id.parse().unwrap();
    sqlx::query("UPDATE discrepancies SET state = 'resolved', resolved_at = now() WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let (again, _) = jobs::report::write_day(&pool, &dir, day).await.unwrap();
    assert_eq!(again.discrepancies[0].state, "open", "as it was that day");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    let _ = std::fs::remove_dir_all(&dir);
}
