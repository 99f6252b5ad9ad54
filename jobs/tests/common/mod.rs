//! Set-up shared by the job tests: the built-in sandbox over real HTTP and a job context that
//! talks to it and to the test's own database.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::Arc;

use jobs::JobContext;
use ledger::Owner;
use p100_sandbox::{RunningSandbox, Sandbox, Scenario, TxSpec};
use rust_decimal::Decimal;
use sqlx::PgPool;

/// An exact decimal from its text.
pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// A partner whose eur balance holds `amount` (one completed deposit).
pub fn funded_partner(amount: &str) -> Scenario {
    Scenario {
        partner: p100_sandbox::PartnerSpec {
            transactions: vec![TxSpec {
                amount: dec(amount),
                ..TxSpec::default()
            }],
            ..Default::default()
        },
        ..Scenario::default()
    }
}

/// Serves `scenario` and builds a job context against it (no client-side rate limit to
/// speak of).
pub async fn start(pool: &PgPool, scenario: Scenario) -> (RunningSandbox, JobContext) {
    let sandbox = Sandbox::from_scenario(scenario).spawn().await.unwrap();
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
        runs: Default::default(),
    };
    (sandbox, ctx)
}

/// Every P100 balance of `owner` equals the ledger's maintained balance.
pub async fn ledger_matches_p100(pool: &PgPool, client: &p100::Client, owner: &Owner) {
    let p100_balances = client
        .balances(&jobs::balances::scope_of(owner))
        .await
        .unwrap();
    let ledger = ledger::balances::current(pool, owner).await.unwrap();
    for b in p100_balances.all() {
        let ours = ledger
            .iter()
            .find(|l| l.currency == b.name.as_str())
            .map(|l| l.amount)
            .unwrap_or_default();
        assert_eq!(ours, b.amount, "{owner} {}", b.name);
    }
}
