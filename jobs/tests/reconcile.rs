//! `reconcile` against the sandbox: a drift is found once, kept, and auto-resolved when P100
//! fixes it; the person's workflow on a discrepancy.

use std::str::FromStr;
use std::sync::Arc;

use jobs::JobContext;
use jobs::reconcile::{ReconcileArgs, reconcile};
use p100_sandbox::{RunningSandbox, Sandbox, Scenario, TxSpec};
use rust_decimal::Decimal;
use sqlx::PgPool;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn setup(pool: &PgPool) -> (RunningSandbox, JobContext) {
    let funded = Scenario {
        partner: p100_sandbox::PartnerSpec {
            transactions: vec![TxSpec {
                amount: dec("1000.00"),
                ..TxSpec::default()
            }],
            ..Default::default()
        },
        ..Scenario::default()
    };
    let sandbox = Sandbox::from_scenario(funded).spawn().await.unwrap();
    let mut config = p100::Config::new(
        sandbox.base_url().parse().unwrap(),
        p100::ApiKey::new(p100_sandbox::DEFAULT_API_KEY),
    );
    config.max_rps = std::num::NonZeroU32::new(1000).unwrap();
    let ctx = JobContext {
        pool: pool.clone(),
        p100: Some(p100::Client::new(config).unwrap()),
        schedule: Arc::default(),
        p100_health: Arc::default(),
        report_dir: std::env::temp_dir(),
    };
    (sandbox, ctx)
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
    let found = ledger::discrepancies::unresolved(&pool, None)
        .await
        .unwrap();
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
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_failed_sync_makes_the_run_incomplete_and_says_why(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool).await;
    sandbox.sandbox().add_fault(
        p100_sandbox::Fault::new("/v1/partner/transactions", p100_sandbox::FaultKind::P501)
            .times(1),
    );
    let run = reconcile(&ctx, &partner_with_sync()).await.unwrap();
    assert!(!run.complete);
    let recorded = ledger::reconciliation::run(&pool, run.run_id)
        .await
        .unwrap()
        .unwrap();
    let reasons = recorded.incomplete_reasons.to_string();
    assert!(
        reasons.contains("sync of partner failed") && reasons.contains("P501"),
        "{reasons}"
    );
    assert!(recorded.p100_calls >= 2 && recorded.p100_budget > 0);
}
