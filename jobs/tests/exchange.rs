//! `exchange_finalize` against the sandbox: the full path, a lost answer, expiry, user locks.

mod common;

use std::str::FromStr;

use chrono::{DateTime, Utc};
use jobs::JobContext;
use jobs::exchange_finalize::{self, ExchangeFinalizeArgs};
use ledger::Owner;
use p100_sandbox::{Fault, FaultKind, RunningSandbox};
use queue::Outcome;
use rust_decimal::Decimal;
use sqlx::PgPool;

async fn setup(pool: &PgPool) -> (RunningSandbox, JobContext) {
    common::start(pool, common::funded_partner("10000.00")).await
}

async fn submit(pool: &PgPool, sandbox: &RunningSandbox, owner: &Owner) -> (i64, String) {
    let amount = Decimal::from_str("100").unwrap();
    let (lock, _rate, expires) = sandbox.sandbox().create_lock("eur", "btc", amount);
    let expires: DateTime<Utc> = expires.parse().unwrap();
    let new = ledger::exchanges::NewExchange {
        owner,
        lock_id: &lock,
        from: "eur",
        to: "btc",
        amount,
        expires_at: expires,
    };
    let id = ledger::exchanges::submit(pool, &new, ledger::intake::FirstJob::QueuedByCaller)
        .await
        .unwrap();
    (id, lock)
}

/// Runs the job like the queue would until it is done (snoozes and retries run again).
async fn drive(ctx: &JobContext, id: i64) -> Vec<String> {
    let mut labels = Vec::new();
    for _ in 0..20 {
        let outcome = exchange_finalize::run(
            ctx,
            ExchangeFinalizeArgs {
                v: 0,
                exchange: id.to_string(),
                safety_margin_seconds: None,
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

async fn states(pool: &PgPool, id: i64) -> Vec<String> {
    ledger::exchanges::events(pool, id)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _, _)| s)
        .collect()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_locked_exchange_is_submitted_once_followed_to_completed_and_posted_once(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    let (id, lock) = submit(&pool, &sandbox, &Owner::Partner).await;

    let labels = drive(&ctx, id).await;

    assert_eq!(
        labels.last().map(String::as_str),
        Some("done"),
        "{labels:?}"
    );
    assert_eq!(
        states(&pool, id).await,
        vec!["SUBMITTING", "SUBMITTED", "COMPLETED"]
    );
    assert_eq!(
        sandbox
            .sandbox()
            .request_stats()
            .exchange_finalize_calls
            .get(&lock),
        Some(&1)
    );
    // The history sync sees the same legs afterwards and posts nothing new for them.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
        .fetch_one(&pool)
        .await
        .unwrap();
    jobs::tx_sync::sync(
        ctx.p100.as_ref().unwrap(),
        &pool,
        &Owner::Partner,
        jobs::tx_sync::Overlap::Policy,
    )
    .await
    .unwrap();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        after - before,
        1,
        "only the funding deposit is new: {before} → {after}"
    );
    let p100 = ctx
        .p100
        .as_ref()
        .unwrap()
        .balances(&p100::Scope::Partner)
        .await
        .unwrap();
    let ours = ledger::balances::current(&pool, &Owner::Partner)
        .await
        .unwrap();
    for b in p100.all() {
        let mine = ours
            .iter()
            .find(|o| o.currency == b.name.as_str())
            .map(|o| o.amount)
            .unwrap_or_default();
        assert_eq!(mine, b.amount, "{}", b.name);
    }
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_lost_answer_is_resolved_from_history_without_a_second_submission(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    sandbox.sandbox().configure_exchange(|c| {
        c.after_polls = None;
        c.after_seconds = Some(0.0);
    });
    // P100 executes the exchange, then the answer is lost (P500 after the handler ran).
    sandbox.sandbox().add_fault(
        Fault::new("/v1/partner/exchange", FaultKind::P500)
            .method("POST")
            .after_handler(true)
            .times(1),
    );
    let (id, lock) = submit(&pool, &sandbox, &Owner::Partner).await;

    let labels = drive(&ctx, id).await;

    assert_eq!(
        labels.first().map(String::as_str),
        Some("retry"),
        "{labels:?}"
    );
    assert_eq!(
        labels.last().map(String::as_str),
        Some("done"),
        "{labels:?}"
    );
    assert_eq!(
        states(&pool, id).await,
        vec!["SUBMITTING", "SUBMITTED", "COMPLETED"]
    );
    assert_eq!(
        sandbox
            .sandbox()
            .request_stats()
            .exchange_finalize_calls
            .get(&lock),
        Some(&1),
        "never sent twice"
    );
    let events = ledger::exchanges::events(&pool, id).await.unwrap();
    assert!(
        events[1]
            .1
            .as_deref()
            .unwrap_or("")
            .contains("found in P100's history"),
        "{events:?}"
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn an_expiring_lock_is_not_submitted_and_user_locks_go_to_review(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    let soon = Utc::now() + chrono::Duration::seconds(5);
    let new = ledger::exchanges::NewExchange {
        owner: &Owner::Partner,
        lock_id: "lock-soon",
        from: "eur",
        to: "btc",
        amount: Decimal::ONE,
        expires_at: soon,
    };
    let expiring = ledger::exchanges::submit(&pool, &new, ledger::intake::FirstJob::QueuedByCaller)
        .await
        .unwrap();
    let (users, _) = submit(&pool, &sandbox, &Owner::User("u-1".into())).await;

    drive(&ctx, expiring).await;
    drive(&ctx, users).await;

    assert_eq!(states(&pool, expiring).await, vec!["EXPIRED"]);
    assert_eq!(states(&pool, users).await, vec!["NEEDS_REVIEW"]);
    assert!(
        sandbox
            .sandbox()
            .request_stats()
            .exchange_finalize_calls
            .is_empty(),
        "nothing was sent"
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn the_legs_are_dated_by_p100s_history_rows_not_by_the_exchanges_creation(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    // P100 executes the exchange 30 s after it is created; we look again an hour later.
    sandbox.sandbox().configure_exchange(|c| {
        c.after_polls = None;
        c.after_seconds = Some(30.0);
    });
    let (id, lock) = submit(&pool, &sandbox, &Owner::Partner).await;
    let args = || ExchangeFinalizeArgs {
        v: 0,
        exchange: id.to_string(),
        safety_margin_seconds: None,
    };
    for _ in 0..3 {
        let outcome = exchange_finalize::run(&ctx, args()).await;
        assert!(matches!(outcome, Outcome::Snooze { .. }), "{outcome:?}");
    }
    assert_eq!(states(&pool, id).await, vec!["SUBMITTING", "SUBMITTED"]);
    sandbox
        .sandbox()
        .advance_clock(std::time::Duration::from_secs(3600));

    let outcome = exchange_finalize::run(&ctx, args()).await;

    let Outcome::Done(result) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        result["effective_at_source"],
        serde_json::json!(["p100_history", "p100_history"]),
        "{result}"
    );
    let page = ctx
        .p100
        .as_ref()
        .unwrap()
        .transactions_page(&p100::Scope::Partner, &p100::HistoryQuery::default(), 1)
        .await
        .unwrap();
    let legs: Vec<_> = page
        .transactions
        .iter()
        .filter(|t| t.reference.as_deref() == Some(lock.as_str()))
        .collect();
    assert_eq!(legs.len(), 2);
    let posted: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT p.idempotency_key, p.effective_at FROM ledger_postings p
         WHERE p.idempotency_key LIKE 'exchange:%' ORDER BY p.idempotency_key",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(posted.len(), 2, "{posted:?}");
    for (key, at) in &posted {
        assert_eq!(*at, legs[0].updated_at, "{key}");
    }
    let details = ctx
        .p100
        .as_ref()
        .unwrap()
        .exchange_details(
            &ledger::exchanges::find(&pool, &id.to_string())
                .await
                .unwrap()
                .unwrap()
                .exchange_id
                .unwrap(),
        )
        .await
        .unwrap();
    let created = details.created_at.unwrap();
    assert!(
        (legs[0].updated_at - created).num_seconds() >= 29,
        "executed {} vs created {created}",
        legs[0].updated_at
    );
}
