//! Many owners at once (issue 10): concurrent syncs, SEPA settlements, exchange postings and a
//! reconciliation over the sandbox, against one database. No deadlock, a clean self-audit,
//! and every balance equal to P100's.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use jobs::JobContext;
use ledger::Owner;
use p100_sandbox::{PartnerSpec, Scenario, SepaSpec, TxSpec, TxStep, UserSpec};
use sqlx::PgPool;

use common::dec;

const USERS: usize = 200;
const WORKERS: usize = 16;
const CURRENCIES: [&str; 3] = ["eur", "btc", "usdc"];

/// A user's history in three currencies: deposits, card payments, withdrawals with a fee,
/// internal transfers, fees; some rows still PENDING that complete or fail after a few reads,
/// so reversals and late postings happen while other owners are being written.
fn user(u: usize) -> UserSpec {
    let mut transactions = Vec::new();
    for (c, currency) in CURRENCIES.iter().enumerate() {
        let unit = if *currency == "btc" { "0.001" } else { "10.00" };
        let base = dec(unit);
        transactions.push(TxSpec {
            kind: "DEPOSIT".into(),
            currency: (*currency).into(),
            amount: base * dec("50"),
            ..TxSpec::default()
        });
        for (i, kind) in ["CARD", "WITHDRAWAL", "INTERNAL_TRANSFER", "FEE"]
            .iter()
            .enumerate()
        {
            let mut tx = TxSpec {
                kind: (*kind).into(),
                currency: (*currency).into(),
                amount: -base * rust_decimal::Decimal::from(i as i64 + 1),
                fee: if *kind == "WITHDRAWAL" {
                    base / dec("10")
                } else {
                    rust_decimal::Decimal::ZERO
                },
                ..TxSpec::default()
            };
            if (u + c + i).is_multiple_of(5) {
                tx.status = "PENDING".into();
                tx.steps = vec![TxStep {
                    status: if (u + i).is_multiple_of(2) {
                        "COMPLETED"
                    } else {
                        "FAILED"
                    }
                    .into(),
                    after_polls: Some(1),
                    after_seconds: None,
                }];
            }
            if (u + c + i).is_multiple_of(7) {
                // Completed, then failed later: a posting to reverse mid-run.
                tx.steps = vec![TxStep {
                    status: "FAILED".into(),
                    after_polls: Some(2),
                    after_seconds: None,
                }];
            }
            transactions.push(tx);
        }
    }
    UserSpec {
        external_user_id: format!("stress-{u:04}"),
        currencies: CURRENCIES.map(String::from).to_vec(),
        transactions,
        ..UserSpec::default()
    }
}

fn scenario() -> Scenario {
    let partner = PartnerSpec {
        transactions: (0..40)
            .map(|i| TxSpec {
                currency: CURRENCIES[i % 3].into(),
                amount: if i % 3 == 1 {
                    dec("1.5")
                } else {
                    dec("100000.00")
                },
                ..TxSpec::default()
            })
            .collect(),
        ..PartnerSpec::default()
    };
    Scenario {
        partner,
        users: (0..USERS).map(user).collect(),
        ..Scenario::default()
    }
}

async fn sync(ctx: &JobContext, owner: &Owner) {
    jobs::tx_sync::sync(
        ctx.p100.as_ref().unwrap(),
        &ctx.pool,
        owner,
        jobs::tx_sync::Overlap::Policy,
    )
    .await
    .unwrap_or_else(|e| panic!("sync of {owner}: {e}"));
}

async fn deadlocks(pool: &PgPool) -> i64 {
    // Cumulative statistics reach the view when a backend flushes them (at most ~1 s later).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn many_owners_written_at_once_never_deadlock_and_end_exact(pool: PgPool) {
    let (sandbox, ctx) = common::start(&pool, scenario()).await;
    let deadlocks_before = deadlocks(&pool).await;

    // Partner operations that post while the syncs run: SEPA settlements and exchanges.
    let transfers = sandbox
        .sandbox()
        .add_sepa_transfers(
            (0..6)
                .map(|i| SepaSpec {
                    amount: dec("25.00") + rust_decimal::Decimal::from(i),
                    status: Some(if i % 3 == 2 { "FAILED" } else { "SUCCESSFUL" }.into()),
                    ..SepaSpec::default()
                })
                .collect(),
        )
        .unwrap();
    for (i, id) in transfers.iter().enumerate() {
        let amount = dec("25.00") + rust_decimal::Decimal::from(i);
        let mut tx = pool.begin().await.unwrap();
        ledger::sepa::track(
            &mut tx,
            &Owner::Partner,
            id,
            amount,
            "eur",
            ledger::intake::FirstJob::QueuedByCaller,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let mut exchanges = Vec::new();
    for _ in 0..3 {
        let amount = dec("100");
        let (lock, _, expires) = sandbox.sandbox().create_lock("eur", "btc", amount);
        let expires: DateTime<Utc> = expires.parse().unwrap();
        let new = ledger::exchanges::NewExchange {
            owner: &Owner::Partner,
            lock_id: &lock,
            from: "eur",
            to: "btc",
            amount,
            expires_at: expires,
        };
        exchanges.push(
            ledger::exchanges::submit(&pool, &new, ledger::intake::FirstJob::QueuedByCaller)
                .await
                .unwrap(),
        );
    }

    // 16 workers share the users; every user is synced three times (statuses move between).
    let queue: Arc<Mutex<VecDeque<Owner>>> = Arc::new(Mutex::new(
        (0..3)
            .flat_map(|_| (0..USERS).map(|u| Owner::User(format!("stress-{u:04}"))))
            .collect(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let ctx = ctx.clone();
        let queue = queue.clone();
        tasks.spawn(async move {
            loop {
                let next = queue.lock().unwrap().pop_front();
                let Some(owner) = next else { break };
                sync(&ctx, &owner).await;
            }
        });
    }
    // The partner's own writers, at the same time.
    {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            for _ in 0..4 {
                sync(&ctx, &Owner::Partner).await;
            }
        });
    }
    for id in transfers.clone() {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            for _ in 0..10 {
                let outcome = jobs::sepa_status::run(
                    &ctx,
                    jobs::sepa_status::SepaStatusArgs {
                        v: 0,
                        transfer: id.clone(),
                        not_found_grace_seconds: None,
                    },
                )
                .await;
                match outcome {
                    queue::Outcome::Done(_) => return,
                    queue::Outcome::Dead { .. } => panic!("sepa {id}: {outcome:?}"),
                    _ => {}
                }
            }
        });
    }
    for id in exchanges.clone() {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            for _ in 0..20 {
                let outcome = jobs::exchange_finalize::run(
                    &ctx,
                    jobs::exchange_finalize::ExchangeFinalizeArgs {
                        v: 0,
                        exchange: id.to_string(),
                        safety_margin_seconds: None,
                    },
                )
                .await;
                match outcome {
                    queue::Outcome::Done(_) => return,
                    queue::Outcome::Dead { .. } => panic!("exchange {id}: {outcome:?}"),
                    _ => {}
                }
            }
        });
    }
    {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let args = jobs::reconcile::ReconcileArgs {
                partner: true,
                sync: true,
                ..Default::default()
            };
            jobs::reconcile::reconcile(&ctx, &args).await.unwrap();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    // Every status has settled at the sandbox by now: one more pass reads the last changes.
    for u in 0..USERS {
        sync(&ctx, &Owner::User(format!("stress-{u:04}"))).await;
    }
    sync(&ctx, &Owner::Partner).await;

    assert_eq!(
        deadlocks(&pool).await,
        deadlocks_before,
        "no deadlock in the ledger"
    );
    let (_, _, violations) = ledger::balances::verify(&pool).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let client = ctx.p100.as_ref().unwrap();
    common::ledger_matches_p100(&pool, client, &Owner::Partner).await;
    for u in 0..USERS {
        common::ledger_matches_p100(&pool, client, &Owner::User(format!("stress-{u:04}"))).await;
    }
}

/// Two syncs of one owner started together (as the `tx_sync` job and a reconciliation's own
/// sync can be), with a row that P100 flips COMPLETED → FAILED between their reads: whatever
/// order their pages commit in, the newest version wins and its posting ends reversed.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn two_syncs_of_one_owner_at_once_end_with_the_flip_reversed(pool: PgPool) {
    let flipping = TxSpec {
        id: Some("flip-1".into()),
        amount: dec("80.00"),
        steps: vec![TxStep {
            status: "FAILED".into(),
            after_polls: Some(1),
            after_seconds: None,
        }],
        ..TxSpec::default()
    };
    let mut transactions: Vec<TxSpec> = (0..150)
        .map(|i| TxSpec {
            amount: dec("1.00") + rust_decimal::Decimal::from(i),
            ..TxSpec::default()
        })
        .collect();
    transactions.insert(0, flipping);
    let scenario = Scenario {
        users: vec![UserSpec {
            external_user_id: "twice".into(),
            transactions,
            ..UserSpec::default()
        }],
        ..Scenario::default()
    };
    let (_sandbox, ctx) = common::start(&pool, scenario).await;
    let owner = Owner::User("twice".into());
    let (a, b) = tokio::join!(sync(&ctx, &owner), sync(&ctx, &owner));
    let ((), ()) = (a, b);

    let (status, state): (String, String) = sqlx::query_as(
        "SELECT status, ledger_state FROM provider_transactions WHERE provider_tx_id = 'flip-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), state.as_str()), ("FAILED", "reversed"));
    common::ledger_matches_p100(&pool, ctx.p100.as_ref().unwrap(), &owner).await;
    let (_, _, violations) = ledger::balances::verify(&pool).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}
