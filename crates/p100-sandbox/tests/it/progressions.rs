//! KYC, exchange, SEPA and row progressions, and the balance invariant after them.

use std::time::Duration;

use p100_sandbox::{KycSpec, KycStep, PartnerSpec, Sandbox, Scenario, TxSpec, TxStep, UserSpec};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::helpers::{Env, completed_sum, d, dec};

fn funded_partner() -> Scenario {
    Scenario {
        partner: PartnerSpec {
            currencies: vec!["eur".into(), "eth".into()],
            transactions: vec![
                TxSpec {
                    kind: "DEPOSIT".into(),
                    currency: "eur".into(),
                    amount: d("1000.00"),
                    ..TxSpec::default()
                },
                TxSpec {
                    kind: "DEPOSIT".into(),
                    currency: "eth".into(),
                    amount: d("2.5"),
                    ..TxSpec::default()
                },
            ],
        },
        users: vec![UserSpec {
            external_user_id: "u1".into(),
            kyc: Some(KycSpec {
                steps: vec![
                    KycStep {
                        attempt_status: Some("VERIFICATION".into()),
                        after_polls: Some(2),
                        ..KycStep::default()
                    },
                    KycStep {
                        attempt_status: Some("REJECTED_BY_PROVIDER".into()),
                        rejection_reason: Some("DOCUMENT_DAMAGED".into()),
                        after_polls: Some(1),
                        ..KycStep::default()
                    },
                    KycStep {
                        status: Some("ON_HOLD".into()),
                        attempt_status: Some("PENDING".into()),
                        after_seconds: Some(30.0),
                        after_polls: Some(1000),
                        ..KycStep::default()
                    },
                ],
                ..KycSpec::default()
            }),
            transactions: vec![TxSpec {
                kind: "DEPOSIT".into(),
                amount: d("50"),
                ..TxSpec::default()
            }],
            ..UserSpec::default()
        }],
        ..Scenario::default()
    }
}

async fn env() -> Env {
    Env::start(Sandbox::from_scenario(funded_partner())).await
}

#[tokio::test]
async fn kyc_moves_after_polls_and_seconds() {
    let env = env().await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (s, b) = env.get("/v1/kyc/status/u1").await;
        assert_eq!(s, 200);
        seen.push(b);
    }
    assert_eq!(
        seen[0],
        json!({"status": "NOT_VERIFIED", "attemptStatus": "PENDING"})
    );
    assert_eq!(seen[1], seen[0]);
    assert_eq!(
        seen[2],
        json!({"status": "NOT_VERIFIED", "attemptStatus": "VERIFICATION"})
    );
    assert_eq!(
        seen[3],
        json!({"status": "NOT_VERIFIED", "attemptStatus": "REJECTED_BY_PROVIDER", "rejectionReason": "DOCUMENT_DAMAGED"})
    );
    // The next step is 30 s later: move the sandbox clock instead of sleeping.
    let r = env
        .http
        .post(env.url("/__control/clock"))
        .json(&json!({"advance_seconds": 31}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, b) = env.get("/v1/kyc/status/u1").await;
    assert_eq!(b, json!({"status": "ON_HOLD", "attemptStatus": "PENDING"}));

    // KYC can be set at run time.
    let r = env
        .http
        .post(env.url("/__control/kyc"))
        .json(&json!({"external_user_id": "u1", "kyc": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(env.get("/v1/kyc/status/u1").await.0, 404);
}

async fn lock(env: &Env, from: &str, to: &str, amount: &str) -> Value {
    let (s, b) = env
        .get(&format!(
            "/v1/partner/exchange/lock?currencyFrom={from}&currencyTo={to}&amount={amount}"
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    b
}

#[tokio::test]
async fn completed_exchange_adds_two_rows_and_moves_balances() {
    let env = env().await;
    let eth_before = env.balance("/v1/partner/balances", "eth").await;
    let eur_before = env.balance("/v1/partner/balances", "eur").await;
    let lock = lock(&env, "eth", "eur", "0.5").await;
    let lock_id = lock["lockId"].as_str().unwrap().to_string();
    assert!(lock["rate"].is_number());
    assert!(lock["expiresAt"].as_str().unwrap().ends_with('Z'));
    let rate = dec(&lock["rate"]);

    let (s, b) = env
        .post(
            "/v1/partner/exchange",
            json!({"amount": 0.5, "currencyFrom": "eth", "currencyTo": "eur", "lockId": lock_id}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let exchange_id = b["exchangeId"].as_str().unwrap().to_string();

    // No rows while processing.
    let rows = env.all_rows("/v1/partner/transactions").await;
    assert!(rows.iter().all(|r| r["type"] != "EXCHANGE"));
    // The first details read shows PROCESSING; the outcome shows from the next request on.
    let (s, first) = env
        .get(&format!("/v1/partner/exchange/{exchange_id}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(first["status"], "PROCESSING");
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "amountFrom",
            "amountTo",
            "createdAt",
            "currencyFrom",
            "currencyTo",
            "exchangeId",
            "fee",
            "status"
        ]
    );

    let (_, done) = env
        .get(&format!("/v1/partner/exchange/{exchange_id}"))
        .await;
    assert_eq!(done["status"], "COMPLETED");
    let fee = dec(&done["fee"]);
    let amount_to = dec(&done["amountTo"]);
    assert_eq!(dec(&done["amountFrom"]), d("0.5"));
    assert_eq!(fee, d("0.00745"));
    assert_eq!(amount_to, (d("0.5") * rate).round_dp(2));

    let rows = env.all_rows("/v1/partner/transactions").await;
    let legs: Vec<&Value> = rows.iter().filter(|r| r["type"] == "EXCHANGE").collect();
    assert_eq!(legs.len(), 2);
    for leg in &legs {
        assert_eq!(leg["reference"], lock_id.as_str());
        assert_eq!(leg["exchangeId"], exchange_id.as_str());
        assert_eq!(leg["status"], "COMPLETED");
    }
    let from_leg = legs.iter().find(|r| r["currency"] == "eth").unwrap();
    let to_leg = legs.iter().find(|r| r["currency"] == "eur").unwrap();
    assert_eq!(dec(&from_leg["amount"]), d("-0.5"));
    assert_eq!(dec(&from_leg["fee"]), fee);
    assert_eq!(dec(&to_leg["amount"]), amount_to);
    assert_eq!(dec(&to_leg["fee"]), Decimal::ZERO);

    assert_eq!(
        env.balance("/v1/partner/balances", "eth").await,
        eth_before - d("0.5") - fee
    );
    assert_eq!(
        env.balance("/v1/partner/balances", "eur").await,
        eur_before + amount_to
    );
}

#[tokio::test]
async fn second_finalize_with_the_same_lock_creates_a_second_exchange() {
    let env = env().await;
    let lock = lock(&env, "eth", "eur", "0.1").await;
    let lock_id = lock["lockId"].as_str().unwrap();
    let body =
        json!({"amount": "0.1", "currencyFrom": "eth", "currencyTo": "eur", "lockId": lock_id});
    let (s1, b1) = env.post("/v1/partner/exchange", body.clone()).await;
    let (s2, b2) = env.post("/v1/partner/exchange", body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_ne!(b1["exchangeId"], b2["exchangeId"]);
    let stats: Value = env
        .http
        .get(env.url("/__control/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["exchange_finalize_calls"][lock_id], 2);
    assert_eq!(stats["exchanges_per_lock"][lock_id], 2);
}

#[tokio::test]
async fn unknown_and_expired_locks_are_refused() {
    let env = env().await;
    let (s, b) = env
        .post(
            "/v1/partner/exchange",
            json!({"amount": 1, "currencyFrom": "eth", "currencyTo": "eur", "lockId": "nope"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        json!({"errorCode": "P431", "errorName": "lock-not-found", "errorMessage": "Lock not found"})
    );
    let lock = lock(&env, "eth", "eur", "1").await;
    env.sandbox().advance_clock(Duration::from_secs(61));
    let (s, b) = env
        .post(
            "/v1/partner/exchange",
            json!({"amount": 1, "currencyFrom": "eth", "currencyTo": "eur", "lockId": lock["lockId"]}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        json!({"errorCode": "P432", "errorName": "lock-expired", "errorMessage": "Lock expired"})
    );
    let (s, b) = env.get("/v1/partner/exchange/nope").await;
    assert_eq!(s, 404);
    assert_eq!(b["errorCode"], "P433");
    // Both refusals were still counted.
    let stats = env.sandbox().request_stats();
    assert_eq!(stats.exchange_finalize_calls.get("nope"), Some(&1));
}

#[tokio::test]
async fn failed_exchange_changes_nothing() {
    let env = env().await;
    env.sandbox()
        .configure_exchange(|c| c.outcomes = vec!["FAILED".into()]);
    let before = env.balance("/v1/partner/balances", "eth").await;
    let lock = lock(&env, "eth", "eur", "1").await;
    let (_, b) = env
        .post(
            "/v1/partner/exchange",
            json!({"amount": 1, "currencyFrom": "eth", "currencyTo": "eur", "lockId": lock["lockId"]}),
        )
        .await;
    let path = format!("/v1/partner/exchange/{}", b["exchangeId"].as_str().unwrap());
    env.get(&path).await;
    assert_eq!(env.get(&path).await.1["status"], "FAILED");
    assert_eq!(env.balance("/v1/partner/balances", "eth").await, before);
}

#[tokio::test]
async fn sepa_transfers_settle_or_fail() {
    let env = env().await;
    let before = env.balance("/v1/partner/balances", "eur").await;
    let (s, b) = env
        .post(
            "/v1/partner/sepa-transfer",
            json!({"amount": "500", "currency": "eur", "destinationIban": "PL06109027500000000148911547", "transferTitle": "Invoice #123"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let id = b["transferId"].as_str().unwrap().to_string();
    let rows = env.all_rows("/v1/partner/transactions").await;
    let row = rows.iter().find(|r| r["reference"] == id.as_str()).unwrap();
    assert_eq!(
        (row["type"].as_str(), row["status"].as_str()),
        (Some("SEPA_TRANSFER"), Some("PENDING"))
    );
    let pending_updated = row["updatedAt"].as_str().unwrap().to_string();
    let (_, first) = env.get(&format!("/v1/sepa-transfer/details/{id}")).await;
    assert_eq!(first["status"], "PROCESSING");
    assert_eq!(first["amount"], "500");
    assert_eq!(first["fee"].to_string(), "1");

    let (_, done) = env.get(&format!("/v1/sepa-transfer/details/{id}")).await;
    assert_eq!(done["status"], "SUCCESSFUL");
    assert!(done.get("error").is_none());
    assert_eq!(
        env.balance("/v1/partner/balances", "eur").await,
        before - d("501")
    );
    // The row turned COMPLETED and shows again in a window starting after its first sight.
    let (_, later) = env
        .get(&format!("/v1/partner/transactions?from={pending_updated}"))
        .await;
    let row = later["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reference"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["status"], "COMPLETED");
    assert_eq!(dec(&row["amount"]), d("-500"));
    assert_eq!(dec(&row["fee"]), d("1"));

    // A failing transfer (user variant) keeps the balance and carries an error object.
    env.sandbox()
        .configure_sepa(|c| c.outcomes = vec!["FAILED".into()]);
    let user_before = env.balance("/v1/user/balances/u1", "eur").await;
    let (s, b) = env
        .post(
            "/v1/sepa-transfer",
            json!({"sourceExternalUserId": "u1", "amount": 20, "currency": "EUR", "destinationIban": "PL1", "transferTitle": "t"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let id = b["transferId"].as_str().unwrap().to_string();
    env.get(&format!("/v1/sepa-transfer/details/{id}")).await;
    let (_, failed) = env.get(&format!("/v1/sepa-transfer/details/{id}")).await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["error"]["errorCode"], "P441");
    assert_eq!(failed["user"]["externalUserId"], "u1");
    assert_eq!(
        env.balance("/v1/user/balances/u1", "eur").await,
        user_before
    );
    let rows = env.all_rows("/v1/user/transactions/u1").await;
    let row = rows.iter().find(|r| r["reference"] == id.as_str()).unwrap();
    assert_eq!(row["status"], "FAILED");

    // Unknown source user.
    let (s, b) = env
        .post(
            "/v1/sepa-transfer",
            json!({"sourceExternalUserId": "ghost", "amount": 20, "currency": "eur", "destinationIban": "PL1", "transferTitle": "t"}),
        )
        .await;
    assert_eq!((s, b["errorCode"].as_str()), (400, Some("P412")));
}

#[tokio::test]
async fn balances_equal_history_plus_drift_and_hidden_rows() {
    let mut scenario = funded_partner();
    scenario.partner.transactions.extend([
        TxSpec {
            id: Some("late".into()),
            status: "PENDING".into(),
            amount: d("7.77"),
            fee: d("0.01"),
            steps: vec![TxStep {
                status: "COMPLETED".into(),
                after_seconds: Some(10.0),
                after_polls: None,
            }],
            ..TxSpec::default()
        },
        TxSpec {
            id: Some("reversed".into()),
            amount: d("-3"),
            steps: vec![TxStep {
                status: "FAILED".into(),
                after_polls: None,
                after_seconds: Some(5.0),
            }],
            ..TxSpec::default()
        },
        TxSpec {
            id: Some("ghost".into()),
            amount: d("100"),
            hidden: true,
            ..TxSpec::default()
        },
    ]);
    let env = Env::start(Sandbox::from_scenario(scenario)).await;
    let check = |rows: &[Value], bal: Decimal, extra: Decimal| {
        assert_eq!(completed_sum(rows, "eur") + extra, bal);
    };
    let rows = env.all_rows("/v1/partner/transactions").await;
    assert!(rows.iter().all(|r| r["id"] != "ghost"));
    check(
        &rows,
        env.balance("/v1/partner/balances", "eur").await,
        d("100"),
    );

    env.sandbox().advance_clock(Duration::from_secs(11));
    let r = env
        .http
        .post(env.url("/__control/drift"))
        .json(&json!({"owner": "partner", "currency": "eur", "delta": "1.23"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows = env.all_rows("/v1/partner/transactions").await;
    let late = rows.iter().find(|r| r["id"] == "late").unwrap();
    assert_eq!(late["status"], "COMPLETED");
    let reversed = rows.iter().find(|r| r["id"] == "reversed").unwrap();
    assert_eq!(reversed["status"], "FAILED");
    check(
        &rows,
        env.balance("/v1/partner/balances", "eur").await,
        d("100") + d("1.23"),
    );
    assert_eq!(
        env.sandbox().balance("partner", "eur"),
        Some(d("1000") + d("7.76") + d("100") + d("1.23"))
    );

    // Drift for an unknown owner is refused.
    let r = env
        .http
        .post(env.url("/__control/drift"))
        .json(&json!({"owner": "ghost", "currency": "eur", "delta": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn users_and_rows_can_be_added_at_run_time() {
    let env = env().await;
    let r = env
        .http
        .post(env.url("/__control/users"))
        .json(
            &json!({"users": [{"external_user_id": "late-user", "currencies": ["eur"],
            "kyc": {"status": "VERIFIED", "attempt_status": "SUCCESSFUL"}}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (s, b) = env.get("/v1/kyc/status/late-user").await;
    assert_eq!((s, b["status"].as_str()), (200, Some("VERIFIED")));
    let r = env
        .http
        .post(env.url("/__control/transactions"))
        .json(&json!({"owner": "late-user", "transactions": [
            {"type": "DEPOSIT", "currency": "eur", "amount": "12.50"},
            {"type": "CARD", "currency": "eur", "amount": 2.5, "status": "PENDING"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        env.balance("/v1/user/balances/late-user", "eur").await,
        d("12.5")
    );
    let rows = env.all_rows("/v1/user/transactions/late-user").await;
    assert_eq!(rows.len(), 2);
    let r = env
        .http
        .post(env.url("/__control/sepa"))
        .json(&json!({"transfers": [{"owner": "late-user", "amount": "2", "fee": "0", "status": "SUCCESSFUL"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ids: Value = r.json().await.unwrap();
    let id = ids["transfer_ids"][0].as_str().unwrap();
    let (s, b) = env.get(&format!("/v1/sepa-transfer/details/{id}")).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("SUCCESSFUL")));
    assert_eq!(
        env.balance("/v1/user/balances/late-user", "eur").await,
        d("10.5")
    );
}
