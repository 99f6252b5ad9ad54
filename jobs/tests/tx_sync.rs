//! `tx_sync` against a real Postgres: random histories (property test) and the sandbox over
//! HTTP (10k transactions over 100 pages, a P501 in the middle).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
mod common;

use common::ledger_matches_p100;
use jobs::tx_sync::{self, apply_page};
use ledger::Owner;
use ledger::accounts::AccountRef;
use ledger::provider::ObservedTx;
use p100_sandbox::{Fault, FaultKind, Sandbox, Scenario, TxSpec, TxStep, UserSpec};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use rust_decimal::Decimal;
use sqlx::PgPool;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000 + seconds, 0).unwrap()
}

fn version(
    id: usize,
    kind: &str,
    status: &str,
    currency: &str,
    amount: Decimal,
    fee: Decimal,
    step: i64,
) -> ObservedTx {
    let payload = serde_json::json!({ "id": id.to_string(), "status": status, "step": step });
    ObservedTx {
        provider_tx_id: format!("tx-{id}"),
        kind: kind.into(),
        status: status.into(),
        currency: currency.into(),
        amount,
        fee,
        reference: None,
        exchange_id: None,
        created_at: at(id as i64 * 10),
        updated_at: at(id as i64 * 10 + step),
        payload_hash: payload.to_string(),
        payload,
    }
}

/// One transaction's life: its fixed fields and the statuses it goes through.
#[derive(Debug, Clone)]
struct Life {
    kind: &'static str,
    currency: &'static str,
    amount: Decimal,
    fee: Decimal,
    statuses: Vec<&'static str>,
}

fn life() -> impl Strategy<Value = Life> {
    let kinds = prop::sample::select(vec![
        "DEPOSIT",
        "WITHDRAWAL",
        "SEPA_TRANSFER",
        "INTERNAL_TRANSFER",
        "FEE",
        "CARD",
        "EXCHANGE",
        "CASHBACK",
    ]);
    let paths = prop::sample::select(vec![
        vec!["PENDING"],
        vec!["COMPLETED"],
        vec!["FAILED"],
        vec!["PENDING", "COMPLETED"],
        vec!["PENDING", "FAILED"],
        vec!["COMPLETED", "FAILED"],
        vec!["PENDING", "COMPLETED", "FAILED"],
    ]);
    (
        kinds,
        prop::sample::select(vec!["eur", "btc"]),
        -10_000_000_000i64..10_000_000_000,
        0u32..=8,
        0i64..100_000,
        paths,
    )
        .prop_map(
            |(kind, currency, mantissa, scale, fee_units, statuses)| Life {
                kind,
                currency,
                amount: Decimal::new(mantissa, scale),
                fee: if fee_units % 3 == 0 {
                    Decimal::ZERO
                } else {
                    Decimal::new(fee_units, 8)
                },
                statuses,
            },
        )
}

/// A history and how it is delivered: every version at least once, some twice, shuffled, in
/// pages of random sizes.
fn history() -> impl Strategy<Value = (Vec<Life>, Vec<usize>, Vec<usize>)> {
    prop::collection::vec(life(), 1..25)
        .prop_flat_map(|lives| {
            let versions: usize = lives.iter().map(|l| l.statuses.len()).sum();
            let order = Just((0..versions).collect::<Vec<_>>()).prop_shuffle();
            let extra = prop::collection::vec(0..versions, 0..versions);
            let sizes = prop::collection::vec(1usize..7, 1..10);
            (
                Just(lives),
                (order, extra).prop_map(|(mut o, e)| {
                    o.extend(e);
                    o
                }),
                sizes,
            )
        })
        .prop_flat_map(|(lives, delivery, sizes)| {
            (Just(lives), Just(delivery).prop_shuffle(), Just(sizes))
        })
}

async fn balances(pool: &PgPool, owner: &Owner) -> BTreeMap<String, Decimal> {
    let mut out = BTreeMap::new();
    for currency in ["eur", "btc"] {
        let current = ledger::balances::current(pool, owner)
            .await
            .unwrap()
            .into_iter()
            .find(|b| b.currency == currency)
            .map(|b| b.amount)
            .unwrap_or_default();
        let at_end =
            ledger::balances::balance_at(pool, &AccountRef::of(owner, currency), at(1_000_000))
                .await
                .unwrap();
        assert_eq!(
            current, at_end,
            "maintained balance equals the sum of entries"
        );
        out.insert(currency.to_owned(), current);
    }
    out
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn any_delivery_of_any_history_leaves_the_ledger_equal_to_p100s_completed_amounts(
    pool: PgPool,
) {
    let mut runner = TestRunner::deterministic();
    let strategy = history();
    for case in 0..40 {
        let (lives, delivery, sizes) = strategy.new_tree(&mut runner).unwrap().current();
        let owner = Owner::User(format!("prop-{case}"));
        let versions: Vec<ObservedTx> = lives
            .iter()
            .enumerate()
            .flat_map(|(id, l)| {
                l.statuses.iter().enumerate().map(move |(step, s)| {
                    version(id, l.kind, s, l.currency, l.amount, l.fee, step as i64)
                })
            })
            .collect();
        let mut pages: Vec<Vec<ObservedTx>> = Vec::new();
        let mut rest = delivery
            .iter()
            .map(|&i| versions[i].clone())
            .collect::<Vec<_>>();
        let mut size = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*size.next().unwrap()).min(rest.len());
            pages.push(rest.drain(..n).collect());
        }

        // Each page is its own transaction: a restart between pages changes nothing.
        for page in &pages {
            apply_page(&pool, &owner, page.clone(), vec![])
                .await
                .unwrap();
        }

        let mut expected: BTreeMap<String, Decimal> = [
            ("eur".to_owned(), Decimal::ZERO),
            ("btc".to_owned(), Decimal::ZERO),
        ]
        .into();
        for l in &lives {
            if *l.statuses.last().unwrap() == "COMPLETED" && l.kind != "CASHBACK" {
                *expected.get_mut(l.currency).unwrap() += l.amount - l.fee;
            }
        }
        let got = balances(&pool, &owner).await;
        assert_eq!(got, expected, "case {case}: {lives:?}");

        let postings: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
            .fetch_one(&pool)
            .await
            .unwrap();
        for page in &pages {
            apply_page(&pool, &owner, page.clone(), vec![])
                .await
                .unwrap();
        }
        let again: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            again, postings,
            "case {case}: syncing again posted something"
        );
        assert_eq!(balances(&pool, &owner).await, expected);

        let unknown: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_transactions WHERE external_user_id = $1 AND 'unknown_type' = ANY(flags)")
            .bind(format!("prop-{case}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            unknown as usize,
            lives.iter().filter(|l| l.kind == "CASHBACK").count(),
            "unknown types are kept and flagged"
        );
    }
    let (_, _, violations) = ledger::balances::verify(&pool).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn exact_at_eight_decimals_and_point_one_plus_point_two(pool: PgPool) {
    let owner = Owner::User("exact".into());
    let d = |s: &str| Decimal::from_str(s).unwrap();
    let page = vec![
        version(1, "DEPOSIT", "COMPLETED", "eur", d("0.1"), d("0"), 0),
        version(2, "DEPOSIT", "COMPLETED", "eur", d("0.2"), d("0"), 0),
        version(3, "DEPOSIT", "COMPLETED", "btc", d("0.00000001"), d("0"), 0),
        version(
            4,
            "WITHDRAWAL",
            "COMPLETED",
            "btc",
            d("-0.00000003"),
            d("0.00000001"),
            0,
        ),
    ];
    apply_page(&pool, &owner, page, vec![]).await.unwrap();
    let b = balances(&pool, &owner).await;
    assert_eq!(b["eur"].to_string(), "0.3");
    assert_eq!(b["btc"].to_string(), "-0.00000003");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_changed_payload_with_the_same_status_is_recorded_and_flagged(pool: PgPool) {
    let owner = Owner::Partner;
    let first = version(
        1,
        "DEPOSIT",
        "COMPLETED",
        "eur",
        Decimal::ONE,
        Decimal::ZERO,
        0,
    );
    let mut changed = first.clone();
    changed.amount = Decimal::TWO;
    changed.payload = serde_json::json!({"changed": true});
    changed.payload_hash = "other".into();
    changed.updated_at = first.updated_at + chrono::Duration::seconds(1);
    apply_page(&pool, &owner, vec![first], vec![])
        .await
        .unwrap();
    apply_page(&pool, &owner, vec![changed], vec![])
        .await
        .unwrap();

    let events: Vec<(String,)> =
        sqlx::query_as("SELECT change FROM provider_transaction_events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        events,
        vec![("new".to_owned(),), ("payload_change".to_owned(),)]
    );
    let flags: Vec<String> = sqlx::query_scalar("SELECT unnest(flags) FROM provider_transactions")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(flags, vec!["payload_changed", "corrected"]);
    // The correction is a reversal of what was posted plus a posting of the new amount.
    assert_eq!(balances(&pool, &owner).await["eur"], Decimal::TWO);
    let postings: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT idempotency_key, reverses FROM ledger_postings ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(postings.len(), 3, "{postings:?}");
    let reversals: Vec<_> = postings.iter().filter(|(_, r)| r.is_some()).collect();
    assert_eq!(reversals.len(), 1, "{postings:?}");
    assert_eq!(reversals[0].0, format!("{}:reversal", postings[0].0));
}

fn sandbox_user(n: usize) -> UserSpec {
    let transactions = (0..n)
        .map(|i| TxSpec {
            id: Some(format!("h-{i:05}")),
            kind: ["DEPOSIT", "WITHDRAWAL", "CARD", "FEE"][i % 4].into(),
            status: if i % 17 == 0 {
                "PENDING".into()
            } else {
                "COMPLETED".into()
            },
            currency: if i % 5 == 0 {
                "btc".into()
            } else {
                "eur".into()
            },
            amount: if i % 4 == 0 {
                Decimal::new(10_000 + i as i64, 2)
            } else {
                Decimal::new(-(i as i64 % 900) - 1, if i % 5 == 0 { 8 } else { 2 })
            },
            fee: if i % 4 == 1 {
                Decimal::new(25, 2)
            } else {
                Decimal::ZERO
            },
            steps: if i % 170 == 0 {
                vec![TxStep {
                    status: "COMPLETED".into(),
                    after_polls: Some(1_000_000),
                    after_seconds: None,
                }]
            } else {
                vec![]
            },
            ..TxSpec::default()
        })
        .collect();
    UserSpec {
        external_user_id: "heavy".into(),
        transactions,
        ..UserSpec::default()
    }
}

fn client(base: &str) -> p100::Client {
    let mut config = p100::Config::new(
        base.parse().unwrap(),
        p100::ApiKey::new(p100_sandbox::DEFAULT_API_KEY),
    );
    config.max_rps = std::num::NonZeroU32::new(10_000).unwrap();
    p100::Client::new(config).unwrap()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn ten_thousand_transactions_over_a_hundred_pages_sync_completely_through_a_p501(
    pool: PgPool,
) {
    let sandbox = Sandbox::from_scenario(Scenario {
        users: vec![sandbox_user(10_000)],
        ..Scenario::default()
    })
    .spawn()
    .await
    .unwrap();
    let client = client(&sandbox.base_url());
    let owner = Owner::User("heavy".into());
    sandbox.sandbox().add_fault(
        Fault::new("/v1/user/transactions", FaultKind::P501)
            .skip(36)
            .times(1),
    );

    let err = tx_sync::sync(&client, &pool, &owner, tx_sync::Overlap::Policy)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("P501"), "{err}");
    let partial: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_transactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    // Keyset paging re-reads each page's last row as the next page's first: 100 + 35 × 99.
    assert_eq!(
        partial, 3_565,
        "36 pages were committed with their cursor before page 37 failed"
    );

    let summary = tx_sync::sync(&client, &pool, &owner, tx_sync::Overlap::Policy)
        .await
        .unwrap();
    // The pages not read before (the run starts a minute behind where the first stopped).
    assert!(summary.pages >= 65, "{} pages", summary.pages);
    let (stored, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT provider_tx_id) FROM provider_transactions",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (stored, distinct),
        (10_000, 10_000),
        "no gaps, no duplicates"
    );
    let posted: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
        .fetch_one(&pool)
        .await
        .unwrap();
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM provider_transactions WHERE status = 'COMPLETED'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(posted, completed, "one posting per completed transaction");
    ledger_matches_p100(&pool, &client, &owner).await;

    let again = tx_sync::sync(&client, &pool, &owner, tx_sync::Overlap::Policy)
        .await
        .unwrap();
    assert_eq!(
        (again.totals.new, again.totals.posted),
        (0, 0),
        "a second sync changes nothing"
    );
    let _ = Duration::ZERO;
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn the_sweep_spreads_one_sync_per_tracked_user_over_its_interval(pool: PgPool) {
    let users: Vec<String> = (0..4).map(|i| format!("sweep-{i}")).collect();
    ledger::users::track(
        &pool,
        &users,
        "test",
        ledger::intake::FirstJob::QueuedByCaller,
    )
    .await
    .unwrap();
    let ctx = jobs::JobContext {
        pool: pool.clone(),
        p100: None,
        schedule: std::sync::Arc::new(jobs::schedule::ScheduleFile::default()),
        p100_health: std::sync::Arc::default(),
        report_dir: std::env::temp_dir(),
        runs: Default::default(),
    };
    let args = jobs::sync_sweep::SyncSweepArgs {
        v: 0,
        max_users: 10,
        spread_seconds: 400,
    };

    let outcome = jobs::sync_sweep::run(&ctx, args.clone()).await;
    assert_eq!(outcome.label(), "done", "{outcome:?}");
    jobs::sync_sweep::run(&ctx, args).await;

    let rows: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT dedup_key, run_at FROM jobs WHERE kind = 'tx_sync' ORDER BY run_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows.len(),
        4,
        "one live tx_sync per user, even after a second sweep"
    );
    assert!(rows.iter().all(|(key, _)| key.starts_with("user:sweep-")));
    let spread = rows[3].1 - rows[0].1;
    assert!(
        spread >= chrono::Duration::seconds(299) && spread <= chrono::Duration::seconds(301),
        "{spread:?}"
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_user_without_history_counts_as_synced_so_the_sweep_moves_on(pool: PgPool) {
    let sandbox = Sandbox::from_scenario(Scenario {
        users: vec![UserSpec {
            external_user_id: "quiet".into(),
            ..UserSpec::default()
        }],
        ..Scenario::default()
    })
    .spawn()
    .await
    .unwrap();
    let users = vec!["quiet".to_owned(), "waiting".to_owned()];
    ledger::users::track(
        &pool,
        &users,
        "test",
        ledger::intake::FirstJob::QueuedByCaller,
    )
    .await
    .unwrap();

    let summary = tx_sync::sync(
        &client(&sandbox.base_url()),
        &pool,
        &Owner::User("quiet".into()),
        tx_sync::Overlap::Policy,
    )
    .await
    .unwrap();

    assert_eq!(summary.totals.rows, 0);
    assert_eq!(
        ledger::users::due_for_sync(&pool, 1).await.unwrap(),
        vec!["waiting".to_owned()]
    );
    assert_eq!(
        ledger::provider::cursor(&pool, &Owner::User("quiet".into()))
            .await
            .unwrap(),
        None,
        "no rows, no cursor"
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_row_changing_during_the_run_does_not_hide_its_neighbours(pool: PgPool) {
    // The oldest row completes after the first page is served and moves to the end of the
    // history; with plain page numbers every later row would shift and one would be skipped.
    let mut transactions: Vec<TxSpec> = (0..250)
        .map(|i| TxSpec {
            id: Some(format!("r-{i:03}")),
            amount: Decimal::new(100 + i, 2),
            ..TxSpec::default()
        })
        .collect();
    let oldest = 0;
    transactions[oldest].status = "PENDING".into();
    transactions[oldest].steps = vec![TxStep {
        status: "COMPLETED".into(),
        after_polls: Some(1),
        after_seconds: None,
    }];
    sync_one_user(&pool, "moving", transactions).await;

    let stored: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT provider_tx_id) FROM provider_transactions")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, 250, "every row seen in one run");
}

/// Serves one user's history, syncs it once, and checks the ledger against P100's balances.
async fn sync_one_user(pool: &PgPool, user: &str, transactions: Vec<TxSpec>) {
    let sandbox = Sandbox::from_scenario(Scenario {
        users: vec![UserSpec {
            external_user_id: user.into(),
            transactions,
            ..UserSpec::default()
        }],
        ..Scenario::default()
    })
    .spawn()
    .await
    .unwrap();
    let client = client(&sandbox.base_url());
    let owner = Owner::User(user.into());
    tx_sync::sync(&client, pool, &owner, tx_sync::Overlap::Policy)
        .await
        .unwrap();
    ledger_matches_p100(pool, &client, &owner).await;
}

// ---- Review findings of issue 10: each failed on the code before the fix. ----

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn with_ref(mut tx: ObservedTx, reference: Option<&str>) -> ObservedTx {
    tx.reference = reference.map(str::to_owned);
    tx
}

/// A new version of `tx` one second later, with its own payload.
fn next(tx: &ObservedTx, status: &str, amount: Decimal) -> ObservedTx {
    let mut v = tx.clone();
    v.status = status.into();
    v.amount = amount;
    v.updated_at = tx.updated_at + chrono::Duration::seconds(1);
    v.payload = serde_json::json!({ "id": v.provider_tx_id, "status": status, "amount": amount.to_string(), "at": v.updated_at });
    v.payload_hash = v.payload.to_string();
    v
}

async fn owner_balance(pool: &PgPool, owner: &Owner, currency: &str) -> Decimal {
    ledger::balances::current(pool, owner)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.currency == currency)
        .map(|b| b.amount)
        .unwrap_or_default()
}

async fn verify_clean(pool: &PgPool) {
    let (_, _, violations) = ledger::balances::verify(pool).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

/// Finding 1: two writers of one owner at once. Writer A (COMPLETED) is held inside its
/// transaction (the cursor row is locked by the test) while writer B (FAILED, newer) runs;
/// before the owner lock, B overwrote A's row after A committed its posting, and the posting
/// was never reversed.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn two_writers_of_one_owner_end_with_the_newest_version_and_its_ledger(pool: PgPool) {
    let owner = Owner::User("race".into());
    let completed = version(1, "DEPOSIT", "COMPLETED", "eur", d("50.00"), d("0"), 0);
    let failed = next(&completed, "FAILED", d("50.00"));
    // A cursor row exists; the test holds its lock so that writer A stops at its cursor step.
    apply_page(
        &pool,
        &owner,
        vec![version(9, "FEE", "PENDING", "eur", d("-1"), d("0"), 0)],
        vec![],
    )
    .await
    .unwrap();
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sync_cursors FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let a = tokio::spawn({
        let pool = pool.clone();
        let owner = owner.clone();
        async move { apply_page(&pool, &owner, vec![completed], vec![]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = tokio::spawn({
        let pool = pool.clone();
        let owner = owner.clone();
        async move { apply_page(&pool, &owner, vec![failed], vec![]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.rollback().await.unwrap();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();

    let (status, state): (String, String) = sqlx::query_as(
        "SELECT status, ledger_state FROM provider_transactions WHERE provider_tx_id = 'tx-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), state.as_str()), ("FAILED", "reversed"));
    assert_eq!(owner_balance(&pool, &owner, "eur").await, Decimal::ZERO);
    verify_clean(&pool).await;
}

/// An older version offered after a newer one is stored never replaces it.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn an_older_version_never_replaces_a_newer_one(pool: PgPool) {
    let owner = Owner::Partner;
    let completed = version(1, "DEPOSIT", "COMPLETED", "eur", d("5"), d("0"), 0);
    let failed = next(&completed, "FAILED", d("5"));
    apply_page(&pool, &owner, vec![failed], vec![])
        .await
        .unwrap();
    apply_page(&pool, &owner, vec![completed], vec![])
        .await
        .unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM provider_transactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "FAILED");
    assert_eq!(owner_balance(&pool, &owner, "eur").await, Decimal::ZERO);
}

/// Finding 2a: an exchange leg whose amount changes sign must reverse its own posting, not
/// the other leg's.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_reversal_undoes_what_was_posted_even_when_the_sign_changes(pool: PgPool) {
    let owner = Owner::Partner;
    let from = with_ref(
        version(1, "EXCHANGE", "COMPLETED", "eur", d("-100"), d("0"), 0),
        Some("lock-1"),
    );
    let to = with_ref(
        version(2, "EXCHANGE", "COMPLETED", "eur", d("90"), d("0"), 0),
        Some("lock-1"),
    );
    apply_page(&pool, &owner, vec![from.clone(), to], vec![])
        .await
        .unwrap();
    assert_eq!(owner_balance(&pool, &owner, "eur").await, d("-10"));
    // The first row now shows a positive amount and FAILED.
    let flipped = next(&from, "FAILED", d("100"));
    apply_page(&pool, &owner, vec![flipped], vec![])
        .await
        .unwrap();
    assert_eq!(
        owner_balance(&pool, &owner, "eur").await,
        d("90"),
        "only the failed leg is undone"
    );
    verify_clean(&pool).await;
}

/// Finding 2b: a row posted without a reference that later gets one (and fails) is reversed;
/// the page used to roll back and the owner's sync stopped there for good.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_reference_appearing_later_does_not_break_the_reversal(pool: PgPool) {
    let owner = Owner::User("u-ref".into());
    let row = version(
        1,
        "SEPA_TRANSFER",
        "COMPLETED",
        "eur",
        d("-20"),
        d("0.5"),
        0,
    );
    apply_page(&pool, &owner, vec![row.clone()], vec![])
        .await
        .unwrap();
    let failed = with_ref(next(&row, "FAILED", d("-20")), Some("tr-1"));
    apply_page(&pool, &owner, vec![failed], vec![])
        .await
        .unwrap();
    assert_eq!(owner_balance(&pool, &owner, "eur").await, Decimal::ZERO);
    verify_clean(&pool).await;
}

/// Finding 3: two rows with one reference (a SEPA debit and its return) are two postings.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn rows_sharing_a_reference_get_distinct_postings(pool: PgPool) {
    let owner = Owner::Partner;
    let debit = with_ref(
        version(1, "SEPA_TRANSFER", "COMPLETED", "eur", d("-300"), d("1"), 0),
        Some("tr-9"),
    );
    let ret = with_ref(
        version(2, "SEPA_TRANSFER", "COMPLETED", "eur", d("300"), d("0"), 0),
        Some("tr-9"),
    );
    let lock_a = with_ref(
        version(3, "EXCHANGE", "COMPLETED", "btc", d("0.1"), d("0"), 0),
        Some("lock-7"),
    );
    let lock_b = with_ref(
        version(4, "EXCHANGE", "COMPLETED", "btc", d("0.2"), d("0"), 0),
        Some("lock-7"),
    );
    apply_page(&pool, &owner, vec![debit, ret, lock_a, lock_b], vec![])
        .await
        .unwrap();
    assert_eq!(
        owner_balance(&pool, &owner, "eur").await,
        d("-1"),
        "the return cancels the debit, the fee stays"
    );
    assert_eq!(owner_balance(&pool, &owner, "btc").await, d("0.3"));
    let postings: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(postings, 4);
}

/// Finding 4b: an unknown status on a posted row keeps the posting and is flagged, so the
/// report can list it.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn an_unknown_status_on_a_posted_row_is_flagged(pool: PgPool) {
    let owner = Owner::Partner;
    let row = version(1, "DEPOSIT", "COMPLETED", "eur", d("7"), d("0"), 0);
    apply_page(&pool, &owner, vec![row.clone()], vec![])
        .await
        .unwrap();
    apply_page(
        &pool,
        &owner,
        vec![next(&row, "CHARGEBACK_REQUESTED", d("7"))],
        vec![],
    )
    .await
    .unwrap();
    let (state, flags): (String, Vec<String>) =
        sqlx::query_as("SELECT ledger_state, flags FROM provider_transactions")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, "posted");
    assert!(
        flags.contains(&"unknown_status_on_posted".to_owned()),
        "{flags:?}"
    );
}

/// Finding 5: a whole page of rows sharing one `updatedAt`, and one of them changing while the
/// block is read (it completes after the second history request): paging by page number
/// skipped the row that shifted across the page boundary.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn rows_sharing_one_instant_are_all_read_when_one_changes_mid_block(pool: PgPool) {
    let instant: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut transactions: Vec<TxSpec> = (0..250)
        .map(|i| TxSpec {
            id: Some(format!("s-{i:03}")),
            amount: Decimal::new(100 + i, 2),
            created_at: Some(instant),
            updated_at: Some(instant),
            ..TxSpec::default()
        })
        .collect();
    transactions[0].status = "PENDING".into();
    transactions[0].steps = vec![TxStep {
        status: "COMPLETED".into(),
        after_polls: Some(2),
        after_seconds: None,
    }];
    sync_one_user(&pool, "instant", transactions).await;

    let stored: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT provider_tx_id) FROM provider_transactions")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, 250, "every row seen in one run");
}

/// Finding 6: one row that cannot be decoded is kept raw and flagged; the rest of its page
/// and of the history are synced.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn an_undecodable_row_is_kept_and_the_history_goes_on(pool: PgPool) {
    let server = wiremock::MockServer::start().await;
    let rows = serde_json::json!([
        {"id": "ok-1", "type": "DEPOSIT", "status": "COMPLETED", "currency": "EUR", "amount": "10.00",
         "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"},
        {"id": "bad-1", "type": "DEPOSIT", "status": "COMPLETED", "currency": "EUR", "amount": "ten",
         "createdAt": "2026-01-01T00:00:01Z", "updatedAt": "2026-01-01T00:00:01Z"},
        {"id": "ok-2", "type": "DEPOSIT", "status": "COMPLETED", "currency": "EUR", "amount": 2.5,
         "createdAt": "2026-01-01T00:00:02Z", "updatedAt": "2026-01-01T00:00:02Z"}
    ]);
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/v1/partner/transactions"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"transactions": rows, "page": 1, "size": 100, "total": 3}),
        ))
        .mount(&server)
        .await;
    let client = client(&server.uri());
    let summary = tx_sync::sync(&client, &pool, &Owner::Partner, tx_sync::Overlap::Policy)
        .await
        .unwrap();
    assert_eq!(summary.totals.rows, 3);
    assert_eq!(
        owner_balance(&pool, &Owner::Partner, "eur").await,
        d("12.50")
    );
    let (id, error): (Option<String>, String) =
        sqlx::query_as("SELECT provider_tx_id, error FROM provider_transactions_undecodable")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(id.as_deref(), Some("bad-1"));
    assert!(error.contains("ten") || error.contains("amount"), "{error}");
}

/// A row reversed earlier, a local operation (sepa_status) posting the movement meanwhile, then
/// the row completing again: the row adopts the local posting; the money leaves once.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_reversed_row_completing_again_adopts_the_local_posting(pool: PgPool) {
    let owner = Owner::User("u-adopt".into());
    let row = with_ref(
        version(1, "SEPA_TRANSFER", "COMPLETED", "eur", d("-20"), d("0"), 0),
        Some("tr-5"),
    );
    apply_page(&pool, &owner, vec![row.clone()], vec![])
        .await
        .unwrap();
    let pending = next(&row, "PENDING", d("-20"));
    apply_page(&pool, &owner, vec![pending.clone()], vec![])
        .await
        .unwrap();
    assert_eq!(owner_balance(&pool, &owner, "eur").await, Decimal::ZERO);
    // sepa_status sees SUCCESSFUL and posts the movement under the transfer's key.
    let key = jobs::mapping::local_operation_key(&owner, &row).unwrap();
    let local = jobs::mapping::to_posting(&owner, &row, key)
        .unwrap()
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    ledger::postings::post(&mut conn, &[local]).await.unwrap();
    drop(conn);
    apply_page(
        &pool,
        &owner,
        vec![next(&pending, "COMPLETED", d("-20"))],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        owner_balance(&pool, &owner, "eur").await,
        d("-20"),
        "debited once"
    );
    verify_clean(&pool).await;
}

// ---- How far back a sync reads (assumption A38): each failed on the fixed 24 h overlap. ----

/// A partner history of `n` deposits one second apart ending at the sandbox's "now"; the
/// first, `pending`, is still in flight.
fn partner_rows(n: i64) -> Scenario {
    let transactions = (0..n)
        .map(|i| TxSpec {
            id: Some(format!("p-{i:04}")),
            status: if i == 0 { "PENDING" } else { "COMPLETED" }.into(),
            amount: Decimal::new(100 + i, 2),
            ..TxSpec::default()
        })
        .collect();
    Scenario {
        partner: p100_sandbox::PartnerSpec {
            transactions,
            ..Default::default()
        },
        ..Scenario::default()
    }
}

async fn partner_cursor(pool: &PgPool) -> DateTime<Utc> {
    ledger::provider::cursor(pool, &Owner::Partner)
        .await
        .unwrap()
        .expect("a cursor")
}

/// Adds one completed partner deposit stamped with the sandbox's current time.
fn one_new_row(sandbox: &Sandbox, id: &str) {
    sandbox
        .add_transactions(
            "partner",
            vec![TxSpec {
                id: Some(id.into()),
                amount: d("1"),
                ..TxSpec::default()
            }],
        )
        .unwrap();
}

/// The `from` of each partner history request since the last reset, in milliseconds.
fn partner_froms(sandbox: &Sandbox) -> Vec<Option<i64>> {
    sandbox
        .request_stats()
        .history_requests
        .iter()
        .filter(|r| r.owner == "partner")
        .map(|r| r.from_ms)
        .collect()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_sync_soon_after_the_last_reads_only_a_minute_behind_where_it_ended(pool: PgPool) {
    let running = Sandbox::from_scenario(partner_rows(250))
        .spawn()
        .await
        .unwrap();
    let sandbox = running.sandbox();
    let client = client(&running.base_url());
    let first = tx_sync::sync(&client, &pool, &Owner::Partner, tx_sync::Overlap::Policy)
        .await
        .unwrap();
    assert_eq!(first.window, tx_sync::Window::Full);
    let cursor = partner_cursor(&pool).await;

    sandbox.advance_clock(Duration::from_secs(300));
    one_new_row(sandbox, "p-new");
    sandbox.reset_stats();
    let second = tx_sync::sync(&client, &pool, &Owner::Partner, tx_sync::Overlap::Policy)
        .await
        .unwrap();

    assert_eq!(second.window, tx_sync::Window::Recent);
    assert_eq!(
        partner_froms(sandbox),
        [Some(
            (cursor - chrono::Duration::seconds(60)).timestamp_millis()
        )],
        "one request, from a minute before the cursor (not a day: 3 pages)"
    );
    assert_eq!(second.totals.new, 1);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_status_change_committed_behind_the_cursor_inside_the_margin_is_picked_up(pool: PgPool) {
    let running = Sandbox::from_scenario(partner_rows(250))
        .spawn()
        .await
        .unwrap();
    let sandbox = running.sandbox();
    let client = client(&running.base_url());
    tx_sync::sync(&client, &pool, &Owner::Partner, tx_sync::Overlap::Policy)
        .await
        .unwrap();
    let cursor = partner_cursor(&pool).await;

    // Five minutes on, P100 commits the pending deposit's completion stamped 30 s before the
    // newest row the first sync read.
    sandbox.advance_clock(Duration::from_secs(300));
    sandbox
        .commit_version(
            "partner",
            "p-0000",
            "COMPLETED",
            cursor - chrono::Duration::seconds(30),
        )
        .unwrap();
    sandbox.reset_stats();
    let second = tx_sync::sync(&client, &pool, &Owner::Partner, tx_sync::Overlap::Policy)
        .await
        .unwrap();

    assert_eq!(second.totals.changed, 1, "{second:?}");
    let status: String = sqlx::query_scalar(
        "SELECT status FROM provider_transactions WHERE provider_tx_id = 'p-0000'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "COMPLETED");
    ledger_matches_p100(&pool, &client, &Owner::Partner).await;
    assert_eq!(partner_froms(sandbox).len(), 1, "read in one request");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_day_of_p100_time_after_the_last_deep_read_one_run_reads_a_day_again(pool: PgPool) {
    let running = Sandbox::from_scenario(partner_rows(10))
        .spawn()
        .await
        .unwrap();
    let sandbox = running.sandbox();
    let client = client(&running.base_url());
    let hour = Duration::from_secs(3600);
    let sync = || tx_sync::sync(&client, &pool, &Owner::Partner, tx_sync::Overlap::Policy);
    assert_eq!(sync().await.unwrap().window, tx_sync::Window::Full);

    // Twelve hours of P100 time, then another twelve and a minute: a day has passed on the
    // wall clock of the history, but the run that sees it still starts at the cursor it had.
    sandbox.advance_clock(12 * hour);
    one_new_row(sandbox, "p-12h");
    assert_eq!(sync().await.unwrap().window, tx_sync::Window::Recent);
    sandbox.advance_clock(12 * hour + Duration::from_secs(60));
    one_new_row(sandbox, "p-24h");
    assert_eq!(sync().await.unwrap().window, tx_sync::Window::Recent);
    let cursor = partner_cursor(&pool).await;

    // The pending deposit completes, committed 12 h behind the cursor: far outside the margin.
    sandbox
        .commit_version(
            "partner",
            "p-0000",
            "COMPLETED",
            cursor - chrono::Duration::hours(12),
        )
        .unwrap();
    sandbox.reset_stats();
    let deep = sync().await.unwrap();
    assert_eq!(deep.window, tx_sync::Window::Deep);
    // The recent window as usual, then the day's count, which differs: the day is read again.
    let froms = partner_froms(sandbox);
    assert_eq!(
        froms.first().copied().flatten(),
        Some((cursor - chrono::Duration::seconds(60)).timestamp_millis())
    );
    assert_eq!(
        (deep.windows_checked, deep.windows_reread),
        (1, 1),
        "{deep:?}"
    );
    assert!(froms.contains(&Some(
        (cursor - chrono::Duration::hours(24)).timestamp_millis()
    )));
    assert_eq!(
        deep.totals.changed, 1,
        "the late completion is read: {deep:?}"
    );
    ledger_matches_p100(&pool, &client, &Owner::Partner).await;

    // Once: the next runs are recent again.
    sandbox.advance_clock(Duration::from_secs(300));
    one_new_row(sandbox, "p-24h5m");
    let cursor = partner_cursor(&pool).await;
    sandbox.reset_stats();
    let after = sync().await.unwrap();
    assert_eq!(after.window, tx_sync::Window::Recent);
    assert_eq!(
        partner_froms(sandbox),
        [Some(
            (cursor - chrono::Duration::seconds(60)).timestamp_millis()
        )]
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_busy_day_is_checked_hour_by_hour_and_only_the_hour_that_differs_is_read_again(
    pool: PgPool,
) {
    let running = Sandbox::from_scenario(partner_rows(10))
        .spawn()
        .await
        .unwrap();
    let sandbox = running.sandbox();
    let client = client(&running.base_url());
    let hour = Duration::from_secs(3600);
    let sync = || tx_sync::sync(&client, &pool, &Owner::Partner, tx_sync::Overlap::Policy);
    sync().await.unwrap();
    // A busy day: 1,200 rows an hour into it, synced as they come.
    sandbox.advance_clock(hour);
    let busy: Vec<TxSpec> = (0..1_200)
        .map(|i| TxSpec {
            id: Some(format!("busy-{i:04}")),
            amount: d("1"),
            ..TxSpec::default()
        })
        .collect();
    sandbox.add_transactions("partner", busy).unwrap();
    sync().await.unwrap();
    sandbox.advance_clock(23 * hour + Duration::from_secs(60));
    one_new_row(sandbox, "p-24h");
    sync().await.unwrap();
    let cursor = partner_cursor(&pool).await;
    // Still a recent run; the next one, a day of P100 time after the first, is the check.
    sandbox.advance_clock(hour);
    one_new_row(sandbox, "p-25h");
    // The pending deposit completes, committed 6 h behind the cursor the check will have.
    sandbox
        .commit_version(
            "partner",
            "p-0000",
            "COMPLETED",
            cursor - chrono::Duration::hours(5),
        )
        .unwrap();
    sandbox.reset_stats();

    let check = sync().await.unwrap();

    assert_eq!(check.window, tx_sync::Window::Deep, "{check:?}");
    // The day, then its 24 hours (the last one ending at the cursor); one hour read again.
    assert_eq!(
        (check.windows_checked, check.windows_reread),
        (25, 1),
        "{check:?}"
    );
    assert_eq!(check.totals.changed, 1, "{check:?}");
    // 1 recent read + 25 counts + 1 page of the hour that differed.
    assert_eq!(partner_froms(sandbox).len(), 27);
    ledger_matches_p100(&pool, &client, &Owner::Partner).await;
}
