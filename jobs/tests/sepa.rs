//! `sepa_status` against the sandbox: hold, settle, release, P428 grace, shared postings.

mod common;

use jobs::JobContext;
use jobs::sepa_status::{self, SepaStatusArgs};
use ledger::Owner;
use ledger::accounts::AccountKind;
use ledger::intake::FirstJob;
use p100_sandbox::{Fault, FaultKind, RunningSandbox, SepaSpec};
use queue::Outcome;
use rust_decimal::Decimal;
use sqlx::PgPool;

use common::dec;

async fn setup(pool: &PgPool) -> (RunningSandbox, JobContext) {
    common::start(pool, common::funded_partner("1000.00")).await
}

/// Creates a transfer at the sandbox and tracks it (hold placed) as `sepa track` does.
async fn create_and_track(
    pool: &PgPool,
    sandbox: &RunningSandbox,
    spec: SepaSpec,
    tracked_amount: &str,
) -> String {
    let id = sandbox
        .sandbox()
        .add_sepa_transfers(vec![spec])
        .unwrap()
        .remove(0);
    let mut tx = pool.begin().await.unwrap();
    ledger::sepa::track(
        &mut tx,
        &Owner::Partner,
        &id,
        dec(tracked_amount),
        "eur",
        FirstJob::QueuedByCaller,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn run_once(ctx: &JobContext, transfer: &str, grace: Option<u64>) -> Outcome {
    sepa_status::run(
        ctx,
        SepaStatusArgs {
            v: 0,
            transfer: transfer.to_owned(),
            not_found_grace_seconds: grace,
        },
    )
    .await
}

/// Runs the job like the queue would until it is done.
async fn drive(ctx: &JobContext, transfer: &str, grace: Option<u64>) -> Vec<String> {
    let mut labels = Vec::new();
    for _ in 0..10 {
        let outcome = sepa_status::run(
            ctx,
            SepaStatusArgs {
                v: 0,
                transfer: transfer.to_owned(),
                not_found_grace_seconds: grace,
            },
        )
        .await;
        labels.push(outcome.label().to_owned());
        if matches!(outcome, Outcome::Done(_) | Outcome::Dead { .. }) {
            break;
        }
    }
    labels
}

async fn account(pool: &PgPool, kind: AccountKind) -> Decimal {
    sqlx::query_scalar::<_, Decimal>(
        "SELECT COALESCE(sum(balance), 0) FROM ledger_accounts WHERE owner_kind = $1 AND currency = 'eur'",
    )
    .bind(kind.as_str())
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn statuses(pool: &PgPool, transfer: &str) -> Vec<String> {
    let t = ledger::sepa::find(pool, transfer).await.unwrap().unwrap();
    ledger::sepa::events(pool, t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _, _)| s)
        .collect()
}

async fn sync_partner(ctx: &JobContext) {
    jobs::tx_sync::sync(
        ctx.p100.as_ref().unwrap(),
        &ctx.pool,
        &Owner::Partner,
        jobs::tx_sync::Overlap::Policy,
    )
    .await
    .unwrap();
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_successful_transfer_is_held_then_settled_once_and_the_ledger_equals_p100(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    sync_partner(&ctx).await;
    let id = create_and_track(
        &pool,
        &sandbox,
        SepaSpec {
            amount: dec("250.00"),
            after_polls: Some(2),
            ..SepaSpec::default()
        },
        "250.00",
    )
    .await;
    assert_eq!(
        account(&pool, AccountKind::PartnerHold).await,
        dec("-250.00")
    );
    assert_eq!(account(&pool, AccountKind::Partner).await, dec("1000.00"));

    let labels = drive(&ctx, &id, None).await;

    assert_eq!(
        labels,
        vec!["snooze", "snooze", "done"],
        "two reads in progress, then final"
    );
    assert_eq!(
        statuses(&pool, &id).await,
        vec!["TRACKING", "PROCESSING", "SUCCESSFUL"]
    );
    let t = ledger::sepa::find(&pool, &id).await.unwrap().unwrap();
    assert_eq!(
        (t.hold_state.as_str(), t.fee),
        ("settled", Some(dec("1.00")))
    );
    assert_eq!(
        account(&pool, AccountKind::PartnerHold).await,
        Decimal::ZERO
    );
    // 1000 − 250 − the 1.00 fee, as P100 has it.
    assert_eq!(account(&pool, AccountKind::Partner).await, dec("749.00"));
    assert_eq!(
        sandbox.sandbox().balance("partner", "eur"),
        Some(dec("749.00"))
    );
    // The history sync then sees the SEPA_TRANSFER row and posts nothing more.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
        .fetch_one(&pool)
        .await
        .unwrap();
    sync_partner(&ctx).await;
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, before, "the settled movement is one posting");
    assert_eq!(account(&pool, AccountKind::Partner).await, dec("749.00"));
    // A later run does nothing.
    assert_eq!(drive(&ctx, &id, None).await, vec!["done"]);
    assert!(ledger::balances::verify(&pool).await.unwrap().2.is_empty());
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn the_history_sync_settling_first_is_not_posted_twice(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    let id = create_and_track(
        &pool,
        &sandbox,
        SepaSpec {
            amount: dec("100.00"),
            status: Some("SUCCESSFUL".into()),
            ..SepaSpec::default()
        },
        "100.00",
    )
    .await;
    sync_partner(&ctx).await;
    assert_eq!(account(&pool, AccountKind::Partner).await, dec("899.00"));

    assert_eq!(drive(&ctx, &id, None).await, vec!["done"]);

    assert_eq!(account(&pool, AccountKind::Partner).await, dec("899.00"));
    assert_eq!(
        account(&pool, AccountKind::PartnerHold).await,
        Decimal::ZERO
    );
    let sepa_postings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger_postings WHERE description LIKE 'SEPA_TRANSFER%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sepa_postings, 1, "the settled movement is one posting");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_failed_transfer_releases_the_hold_and_keeps_p100s_error(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    sync_partner(&ctx).await;
    let id = create_and_track(
        &pool,
        &sandbox,
        SepaSpec {
            amount: dec("5000.00"),
            final_status: Some("FAILED".into()),
            ..SepaSpec::default()
        },
        "5000.00",
    )
    .await;

    assert_eq!(drive(&ctx, &id, None).await, vec!["snooze", "done"]);

    let t = ledger::sepa::find(&pool, &id).await.unwrap().unwrap();
    assert_eq!(
        (t.status.as_str(), t.hold_state.as_str()),
        ("FAILED", "released")
    );
    let error = t.error.expect("P100's error is kept");
    assert!(
        !error.to_string().is_empty() && error.is_object(),
        "{error}"
    );
    assert_eq!(
        account(&pool, AccountKind::PartnerHold).await,
        Decimal::ZERO
    );
    assert_eq!(account(&pool, AccountKind::Partner).await, dec("1000.00"));
    let events = ledger::sepa::events(&pool, t.id).await.unwrap();
    assert!(
        events
            .last()
            .unwrap()
            .1
            .as_deref()
            .unwrap()
            .starts_with("P100: "),
        "{events:?}"
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn p428_is_tolerated_within_the_grace_then_becomes_missing_at_provider(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    ledger::sepa::track(
        &mut tx,
        &Owner::Partner,
        "no-such-transfer",
        dec("42.00"),
        "eur",
        FirstJob::QueuedByCaller,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Within the grace period P428 means "not visible yet": the job snoozes.
    let first = sepa_status::run(
        &ctx,
        SepaStatusArgs {
            v: 0,
            transfer: "no-such-transfer".into(),
            not_found_grace_seconds: Some(3600),
        },
    )
    .await;
    assert_eq!(first.label(), "snooze");
    let t = ledger::sepa::find(&pool, "no-such-transfer")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.status, "TRACKING");

    // After it, the transfer is missing at P100: a discrepancy, and the hold stays; the job
    // keeps asking, slowly.
    let missing = run_once(&ctx, "no-such-transfer", Some(0)).await;
    match &missing {
        Outcome::Snooze { after, .. } => assert_eq!(*after, sepa_status::MISSING_RECHECK),
        other => panic!("{other:?}"),
    }
    let t = ledger::sepa::find(&pool, "no-such-transfer")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.status.as_str(), t.hold_state.as_str()),
        ("MISSING_AT_PROVIDER", "held")
    );
    assert_eq!(
        account(&pool, AccountKind::PartnerHold).await,
        dec("-42.00")
    );
    let found = ledger::discrepancies::list(
        &pool,
        &ledger::discrepancies::Filter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (
            found[0].class.as_str(),
            found[0].subject.as_deref(),
            found[0].amount,
            found[0].state.as_str()
        ),
        (
            "missing_at_provider",
            Some("no-such-transfer"),
            Some(dec("-42.00")),
            "open"
        )
    );

    // P100 shows it after all (late): the next read settles it and ends the hold; the next
    // reconciliation (with its sync) finds it matching and resolves the discrepancy.
    sandbox
        .sandbox()
        .add_sepa_transfers(vec![SepaSpec {
            id: Some("no-such-transfer".into()),
            amount: dec("42.00"),
            status: Some("SUCCESSFUL".into()),
            ..SepaSpec::default()
        }])
        .unwrap();
    assert_eq!(
        run_once(&ctx, "no-such-transfer", Some(0)).await.label(),
        "done"
    );
    let t = ledger::sepa::find(&pool, "no-such-transfer")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.status.as_str(), t.hold_state.as_str()),
        ("SUCCESSFUL", "settled")
    );
    assert_eq!(
        account(&pool, AccountKind::PartnerHold).await,
        Decimal::ZERO
    );
    let run = jobs::reconcile::reconcile(
        &ctx,
        &jobs::reconcile::ReconcileArgs {
            partner: true,
            sync: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(run.auto_resolved, 1, "{run:?}");
    let d = ledger::discrepancies::show(&pool, found[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.state, "resolved");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_person_releases_the_hold_of_a_transfer_p100_never_showed(pool: PgPool) {
    let (_sandbox, ctx) = setup(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    let t = ledger::sepa::track(
        &mut tx,
        &Owner::Partner,
        "ghost",
        dec("9.99"),
        "eur",
        FirstJob::QueuedByCaller,
    )
    .await
    .unwrap();
    // Only a transfer P100 does not know can be released by hand.
    let refused = ledger::sepa::release(&mut tx, &t, "ops-anna", "early").await;
    assert!(refused.is_err());
    tx.commit().await.unwrap();
    assert_eq!(run_once(&ctx, "ghost", Some(0)).await.label(), "snooze");

    let mut tx = pool.begin().await.unwrap();
    let t = ledger::sepa::load_for_update(&mut tx, t.id)
        .await
        .unwrap()
        .unwrap();
    ledger::sepa::release(
        &mut tx,
        &t,
        "ops-anna",
        "confirmed with P100: never created",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let t = ledger::sepa::find(&pool, "ghost").await.unwrap().unwrap();
    assert_eq!(
        (t.status.as_str(), t.hold_state.as_str()),
        ("RELEASED", "released")
    );
    assert_eq!(
        account(&pool, AccountKind::PartnerHold).await,
        Decimal::ZERO
    );
    let last = ledger::sepa::events(&pool, t.id)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(
        last.1.as_deref().unwrap().contains("ops-anna")
            && last.1.as_deref().unwrap().contains("never created"),
        "{last:?}"
    );
    assert_eq!(
        run_once(&ctx, "ghost", Some(0)).await.label(),
        "done",
        "no longer followed"
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn p100_errors_retry_or_defer_and_change_nothing(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    let id = create_and_track(
        &pool,
        &sandbox,
        SepaSpec {
            amount: dec("10.00"),
            ..SepaSpec::default()
        },
        "10.00",
    )
    .await;
    let path = format!("/v1/sepa-transfer/details/{id}");
    sandbox.sandbox().add_faults([
        Fault::new(&path, FaultKind::P501).times(1),
        Fault::new(&path, FaultKind::Malformed).skip(1).times(1),
        Fault::new(
            &path,
            FaultKind::RateLimit {
                retry_after_seconds: 3,
            },
        )
        .skip(2)
        .times(1),
    ]);
    let labels = drive(&ctx, &id, None).await;
    assert_eq!(labels, vec!["retry", "retry", "defer", "done"]);
    let t = ledger::sepa::find(&pool, &id).await.unwrap().unwrap();
    assert_eq!(
        (t.status.as_str(), t.hold_state.as_str()),
        ("SUCCESSFUL", "settled")
    );
    assert_eq!(statuses(&pool, &id).await, vec!["TRACKING", "SUCCESSFUL"]);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn an_intake_row_gets_its_hold_and_its_job_from_the_sweep(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    let id = sandbox
        .sandbox()
        .add_sepa_transfers(vec![SepaSpec {
            amount: dec("7.50"),
            ..SepaSpec::default()
        }])
        .unwrap()
        .remove(0);
    // The partner's application inserts the row itself.
    sqlx::query(
        "INSERT INTO sepa_transfers (transfer_id, owner_kind, amount, currency) VALUES ($1, 'partner', 7.50, 'eur')",
    )
    .bind(&id)
    .execute(&pool)
    .await
    .unwrap();
    let bad = sqlx::query(
        "INSERT INTO sepa_transfers (transfer_id, owner_kind, amount, currency) VALUES ('x', 'partner', -1, 'eur')",
    )
    .execute(&pool)
    .await;
    assert!(bad.is_err(), "a negative amount is refused by the table");

    let swept = jobs::intake_sweep::run(&ctx, Default::default()).await;
    let Outcome::Done(result) = swept else {
        panic!("{swept:?}")
    };
    assert_eq!(result["transfers"], 1);
    assert_eq!(result["enqueued"], 1);
    let queued: Vec<String> = sqlx::query_scalar(
        "SELECT dedup_key FROM jobs WHERE kind = 'sepa_status' AND state = 'pending'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(queued, vec![format!("transfer:{id}")]);
    // A second sweep finds nothing new.
    let Outcome::Done(again) = jobs::intake_sweep::run(&ctx, Default::default()).await else {
        panic!()
    };
    assert_eq!(again["enqueued"], 0);

    assert_eq!(drive(&ctx, &id, None).await, vec!["snooze", "done"]);
    let t = ledger::sepa::find(&pool, &id).await.unwrap().unwrap();
    assert_eq!(t.hold_state, "settled");
    let hold_postings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger_postings WHERE idempotency_key LIKE 'sepa-hold%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(hold_postings, 2, "placed once and released once");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_settled_amount_that_differs_is_flagged(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    // We registered 20.00; P100 sent 25.00.
    let id = create_and_track(
        &pool,
        &sandbox,
        SepaSpec {
            amount: dec("25.00"),
            ..SepaSpec::default()
        },
        "20.00",
    )
    .await;
    assert_eq!(drive(&ctx, &id, None).await, vec!["snooze", "done"]);
    let found = ledger::discrepancies::list(
        &pool,
        &ledger::discrepancies::Filter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].class, "amount_mismatch");
    assert_eq!(found[0].amount, Some(dec("-25.00")), "the signed movement");
    // The ledger follows P100: 1000 − 25 − 1 fee (after the funding deposit is synced).
    sync_partner(&ctx).await;
    assert_eq!(account(&pool, AccountKind::Partner).await, dec("974.00"));
}

/// The `updatedAt` of the sandbox's history row of a transfer.
async fn history_time(ctx: &JobContext, transfer: &str) -> chrono::DateTime<chrono::Utc> {
    let page = ctx
        .p100
        .as_ref()
        .unwrap()
        .transactions_page(&p100::Scope::Partner, &p100::HistoryQuery::default(), 1)
        .await
        .unwrap();
    page.transactions
        .iter()
        .find(|t| t.reference.as_deref() == Some(transfer))
        .map(|t| t.updated_at)
        .expect("the transfer's history row")
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_settlement_is_dated_by_p100s_history_row_not_by_when_it_was_seen(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    sync_partner(&ctx).await;
    let id = create_and_track(
        &pool,
        &sandbox,
        SepaSpec {
            amount: dec("100.00"),
            after_seconds: Some(30.0),
            ..SepaSpec::default()
        },
        "100.00",
    )
    .await;
    assert_eq!(run_once(&ctx, &id, None).await.label(), "snooze");
    // P100 settles the transfer 30 s after creating it; we only look an hour later.
    sandbox
        .sandbox()
        .advance_clock(std::time::Duration::from_secs(3600));

    let outcome = run_once(&ctx, &id, None).await;

    let Outcome::Done(result) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(result["effective_at_source"], "p100_history", "{result}");
    let settled_at = history_time(&ctx, &id).await;
    let posted_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT effective_at FROM ledger_postings WHERE idempotency_key LIKE 'sepa:%' AND provider_tx_id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(posted_at, settled_at);
    let seen_at = ledger::sepa::find(&pool, &id)
        .await
        .unwrap()
        .unwrap()
        .checked_at
        .unwrap();
    assert!(
        (settled_at - seen_at).num_seconds().abs() >= 25,
        "P100's time {settled_at} must not be the time we saw it, {seen_at}"
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_settlement_history_does_not_show_is_dated_when_seen(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    sync_partner(&ctx).await;
    let id = create_and_track(
        &pool,
        &sandbox,
        SepaSpec {
            amount: dec("100.00"),
            hidden: true,
            ..SepaSpec::default()
        },
        "100.00",
    )
    .await;
    let before = chrono::Utc::now();

    let labels = drive(&ctx, &id, None).await;

    assert_eq!(
        labels.last().map(String::as_str),
        Some("done"),
        "{labels:?}"
    );
    let posted_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT effective_at FROM ledger_postings WHERE idempotency_key LIKE 'sepa:%' AND provider_tx_id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(posted_at >= before && posted_at <= chrono::Utc::now());
    assert_eq!(account(&pool, AccountKind::Partner).await, dec("899.00"));
}
