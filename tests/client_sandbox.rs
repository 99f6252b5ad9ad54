//! The P100 client against the built-in sandbox over real HTTP: every endpoint the jobs use,
//! the mixed amount forms, paging through several pages, and faults set at run time.

use std::str::FromStr;

use futures::TryStreamExt;
use p100::enums::{ExchangeStatus, KycAttemptStatus, KycStatus, SepaStatus, TransactionStatus};
use p100::model::CreateExchange;
use p100::{ApiKey, Client, Config, Currency, ErrorClass, HistoryQuery, Scope};
use p100_sandbox::{KycSpec, SepaSpec, TxSpec, UserSpec};
use p100_sandbox::{RunningSandbox, Sandbox, Scenario};
use rust_decimal::Decimal;
use serde_json::json;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn client(sandbox: &RunningSandbox, key: &str) -> Client {
    let mut config = Config::new(sandbox.base_url().parse().unwrap(), ApiKey::new(key));
    config.max_rps = std::num::NonZeroU32::new(1000).unwrap();
    Client::new(config).unwrap()
}

fn deposit(amount: &str, currency: &str) -> TxSpec {
    TxSpec {
        kind: "DEPOSIT".into(),
        currency: currency.into(),
        amount: dec(amount),
        ..TxSpec::default()
    }
}

fn scenario() -> Scenario {
    let mut heavy = UserSpec {
        external_user_id: "heavy".into(),
        kyc: Some(KycSpec {
            status: "VERIFIED".into(),
            attempt_status: "SUCCESSFUL".into(),
            ..KycSpec::default()
        }),
        ..UserSpec::default()
    };
    heavy.transactions = (0..250)
        .map(|i| {
            deposit(
                &format!("{}.{:02}", i, i % 100),
                if i % 3 == 0 { "btc" } else { "eur" },
            )
        })
        .collect();
    Scenario {
        users: vec![
            UserSpec {
                external_user_id: "pending-user".into(),
                kyc: Some(KycSpec::default()),
                transactions: vec![deposit("0.1", "eur"), deposit("0.2", "eur")],
                ..UserSpec::default()
            },
            UserSpec {
                external_user_id: "no-kyc-yet".into(),
                ..UserSpec::default()
            },
            heavy,
        ],
        sepa_transfers: vec![SepaSpec {
            id: Some("sepa-1".into()),
            owner: "partner".into(),
            amount: dec("3.8"),
            fee: Some(dec("0")),
            status: Some("SUCCESSFUL".into()),
            ..SepaSpec::default()
        }],
        ..Scenario::default()
    }
}

async fn start() -> RunningSandbox {
    Sandbox::from_scenario(scenario()).spawn().await.unwrap()
}

#[tokio::test]
async fn kyc_status_and_the_documented_error_classes() {
    let sandbox = start().await;
    let c = client(&sandbox, p100_sandbox::DEFAULT_API_KEY);

    let kyc = c.kyc_status("pending-user").await.unwrap();
    assert_eq!(
        (kyc.status, kyc.attempt_status),
        (KycStatus::NotVerified, KycAttemptStatus::Pending)
    );
    let e = c.kyc_status("no-kyc-yet").await.unwrap_err();
    assert_eq!((e.code(), e.class), (Some("P445"), ErrorClass::NotYet));
    let e = c.kyc_status("nobody").await.unwrap_err();
    assert_eq!(
        (e.code(), e.class, e.status.unwrap().as_u16()),
        (Some("P412"), ErrorClass::Permanent, 400)
    );

    let e = client(&sandbox, "wrong-key")
        .kyc_status("pending-user")
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.message.as_deref()),
        (ErrorClass::Auth, Some("Access Denied. xo2"))
    );
    assert!(!e.to_string().contains("wrong-key"));
}

#[tokio::test]
async fn balances_equal_the_sum_of_completed_history_in_every_amount_form() {
    let sandbox = start().await;
    let c = client(&sandbox, p100_sandbox::DEFAULT_API_KEY);
    let scope = Scope::User("heavy".into());

    let pages: Vec<_> = c
        .transaction_pages(scope.clone(), HistoryQuery::default())
        .try_collect()
        .await
        .unwrap();

    assert_eq!(pages.len(), 3, "250 rows at 100 per page");
    let rows: Vec<_> = pages.iter().flat_map(|p| p.transactions.iter()).collect();
    assert_eq!(rows.len(), 250);
    let mut ids: Vec<_> = rows.iter().map(|t| t.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 250, "no duplicates across pages");
    assert!(
        rows.windows(2)
            .all(|w| (w[0].updated_at, &w[0].id) <= (w[1].updated_at, &w[1].id))
    );

    let balances = c.balances(&scope).await.unwrap();
    for balance in balances.all() {
        let expected: Decimal = rows
            .iter()
            .filter(|t| t.currency == balance.name && t.status == TransactionStatus::Completed)
            .map(|t| t.amount - t.fee.unwrap_or_default())
            .sum();
        assert_eq!(balance.amount, expected, "{}", balance.name);
    }
    let eur = balances.all().find(|b| b.name.as_str() == "eur").unwrap();
    assert!(eur.amount > Decimal::ZERO);
}

#[tokio::test]
async fn paging_with_a_small_page_size_and_a_time_window() {
    let sandbox = start().await;
    let c = client(&sandbox, p100_sandbox::DEFAULT_API_KEY);
    let scope = Scope::User("pending-user".into());
    let all: Vec<_> = c
        .transaction_pages(
            scope.clone(),
            HistoryQuery {
                size: 1,
                ..HistoryQuery::default()
            },
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let sum: Decimal = all
        .iter()
        .flat_map(|p| &p.transactions)
        .map(|t| t.amount)
        .sum();
    assert_eq!(sum, dec("0.3"), "0.1 + 0.2 is exactly 0.3");

    let newest = all[1].transactions[0].updated_at;
    let window = c
        .transactions_page(
            &scope,
            &HistoryQuery {
                from: Some(newest),
                to: None,
                size: 20,
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(window.total, 1);
    assert_eq!(window.transactions[0].id, all[1].transactions[0].id);
}

#[tokio::test]
async fn an_exchange_goes_from_lock_to_completed_and_shows_both_legs_in_history() {
    let sandbox = start().await;
    let c = client(&sandbox, p100_sandbox::DEFAULT_API_KEY);
    let eur = Currency::parse("eur").unwrap();
    let btc = Currency::parse("btc").unwrap();

    let lock = c.exchange_lock(&eur, &btc, dec("100")).await.unwrap();
    assert!(lock.expires_at > chrono::Utc::now());
    let created = c
        .create_exchange(&CreateExchange {
            amount: dec("100"),
            currency_from: eur.clone(),
            currency_to: btc.clone(),
            lock_id: lock.lock_id.clone(),
        })
        .await
        .unwrap();
    let mut details = c.exchange_details(&created.exchange_id).await.unwrap();
    for _ in 0..5 {
        if details.status == ExchangeStatus::Completed {
            break;
        }
        details = c.exchange_details(&created.exchange_id).await.unwrap();
    }
    assert_eq!(details.status, ExchangeStatus::Completed);
    assert_eq!(details.amount_from, dec("100"));

    let history: Vec<_> = c
        .transaction_pages(Scope::Partner, HistoryQuery::default())
        .try_collect()
        .await
        .unwrap();
    let legs: Vec<_> = history
        .iter()
        .flat_map(|p| &p.transactions)
        .filter(|t| t.reference.as_deref() == Some(lock.lock_id.as_str()))
        .collect();
    assert_eq!(legs.len(), 2);
    assert!(
        legs.iter()
            .all(|t| t.exchange_id.as_deref() == Some(created.exchange_id.as_str()))
    );
    let from_leg = legs.iter().find(|t| t.currency == eur).unwrap();
    assert_eq!(from_leg.amount, dec("-100"));
    assert_eq!(from_leg.fee, details.fee);
    let to_leg = legs.iter().find(|t| t.currency == btc).unwrap();
    assert_eq!(to_leg.amount, details.amount_to);
}

#[tokio::test]
async fn sepa_details_and_an_unknown_transfer() {
    let sandbox = start().await;
    let c = client(&sandbox, p100_sandbox::DEFAULT_API_KEY);
    let t = c.sepa_transfer("sepa-1").await.unwrap();
    assert_eq!(
        (t.amount, t.fee, t.status),
        (dec("3.8"), Some(dec("0")), SepaStatus::Successful)
    );
    let e = c.sepa_transfer("missing").await.unwrap_err();
    assert_eq!(
        (e.code(), e.name.as_deref(), e.class),
        (
            Some("P428"),
            Some("sepa-transfer-not-found"),
            ErrorClass::Permanent
        )
    );
}

#[tokio::test]
async fn faults_set_at_run_time_reach_the_client_classified() {
    let sandbox = start().await;
    let c = client(&sandbox, p100_sandbox::DEFAULT_API_KEY);
    let control = reqwest::Client::new();
    let set = |faults: serde_json::Value| {
        let control = control.clone();
        let url = format!("{}/__control/faults", sandbox.base_url());
        async move {
            let r = control
                .post(url)
                .json(&json!({ "faults": faults }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };

    set(json!([{"route": "/v1/partner/balances", "kind": "p501", "times": 1}])).await;
    let e = c.balances(&Scope::Partner).await.unwrap_err();
    assert_eq!(
        (e.code(), e.class, e.status.unwrap().as_u16()),
        (Some("P501"), ErrorClass::Transient, 400)
    );
    c.balances(&Scope::Partner)
        .await
        .expect("the fault fired once only");

    set(json!([{"route": "/v1/partner/balances", "kind": "rate_limit", "retry_after_seconds": 1, "times": 1}])).await;
    let e = c.balances(&Scope::Partner).await.unwrap_err();
    assert_eq!(
        (e.class, e.retry_after),
        (
            ErrorClass::Transient,
            Some(std::time::Duration::from_secs(1))
        )
    );

    set(json!([{"route": "/v1/kyc/status", "kind": "unknown_enum", "times": 1}])).await;
    let kyc = c.kyc_status("pending-user").await.unwrap();
    assert!(
        kyc.status.is_unknown() && kyc.attempt_status.is_unknown(),
        "{kyc:?}"
    );

    set(json!([{"route": "/v1/partner/transactions", "kind": "malformed", "times": 1}])).await;
    let e = c
        .transactions_page(&Scope::Partner, &HistoryQuery::default(), 1)
        .await
        .unwrap_err();
    assert!(matches!(e.failure, p100::Failure::Decode(_)), "{e}");

    set(json!([{"route": "/v1/partner/transactions", "kind": "truncated", "times": 1}])).await;
    let e = c
        .transactions_page(&Scope::Partner, &HistoryQuery::default(), 1)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient, "{e}");

    set(json!([{"route": "/v1/partner/balances", "kind": "drop", "times": 1}])).await;
    let e = c.balances(&Scope::Partner).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient, "{e}");
}
