//! Fidelity: responses equal the reference's examples field for field (names, JSON types,
//! values where deterministic), and errors have the documented bodies and statuses.

use p100_sandbox::{
    Fault, FaultKind, KycSpec, PartnerSpec, Sandbox, Scenario, SepaSpec, TxSpec, UserSpec,
};
use serde_json::{Value, json};

use crate::helpers::{Env, KEY, d, shape};

const SEPA_ID: &str = "123f6603-5a71-45c3-a222-1de369bb1c4d";
const USER: &str = "1d3c8a13-a2bf-4f0a-9631-723dfe892675";

/// The state of the reference's examples.
fn docs_scenario() -> Scenario {
    Scenario {
        partner: PartnerSpec {
            currencies: vec!["eur".into(), "usdc".into()],
            // Funds the documented SEPA transfer so the eur balance is the documented "0.00".
            transactions: vec![TxSpec {
                kind: "DEPOSIT".into(),
                amount: d("3.80"),
                created_at: chrono::DateTime::from_timestamp_millis(1_754_300_000_000),
                ..TxSpec::default()
            }],
        },
        users: vec![
            UserSpec {
                external_user_id: USER.into(),
                kyc: Some(KycSpec::default()),
                ..UserSpec::default()
            },
            UserSpec {
                external_user_id: "no-kyc".into(),
                ..UserSpec::default()
            },
            UserSpec {
                external_user_id: "8bdd8c8a-e9b7-475e-9690-8a34e8b78dab".into(),
                first_name: Some("Will".into()),
                last_name: Some("Hahn".into()),
                email: Some("Giovani34@yahoo.com".into()),
                ..UserSpec::default()
            },
        ],
        sepa_transfers: vec![
            SepaSpec {
                id: Some(SEPA_ID.into()),
                owner: "partner".into(),
                amount: d("3.8"),
                fee: Some(d("0")),
                status: Some("SUCCESSFUL".into()),
                transfer_title: Some("Partner SEPA Transfer".into()),
                destination_iban: Some("PL49109024028743516259813188".into()),
                created_at: chrono::DateTime::parse_from_rfc3339("2025-08-05T10:33:54.730Z")
                    .ok()
                    .map(|t| t.to_utc()),
                ..SepaSpec::default()
            },
            SepaSpec {
                id: Some("7fb02323-969a-4936-94ea-86b8773ff1a2".into()),
                owner: "8bdd8c8a-e9b7-475e-9690-8a34e8b78dab".into(),
                amount: d("100"),
                fee: Some(d("10")),
                status: Some("SUCCESSFUL".into()),
                transfer_title: Some("Bank transfer".into()),
                destination_iban: Some("LT601010012345678901".into()),
                ..SepaSpec::default()
            },
        ],
        ..Scenario::default()
    }
}

async fn env() -> Env {
    Env::start(Sandbox::from_scenario(docs_scenario())).await
}

#[tokio::test]
async fn kyc_status_equals_the_published_example() {
    let env = env().await;
    let (status, body) = env.get(&format!("/v1/kyc/status/{USER}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "NOT_VERIFIED", "attemptStatus": "PENDING"})
    );
}

#[tokio::test]
async fn partner_balances_equal_the_legacy_example() {
    let env = env().await;
    let (status, body) = env.get("/v1/partner/balances").await;
    assert_eq!(status, 200);
    // operations.md §5.1, first fiat and first crypto element.
    let expected: Value = serde_json::from_str(
        r#"{
      "fiatBalances": [
        {"id": "02ee1b09-9934-4dcc-8dec-91bf34b8f543", "amount": "0.00", "name": "eur", "rate": 1,
         "iban": "LT683130019950000568", "status": "ACTIVE"}
      ],
      "cryptoBalances": [
        {"id": "f2de1f4b-916f-417e-9410-8bf4a70693ee", "amount": "0.000000", "name": "usdc",
         "wallet": "0x2e90ca5bbe46d5ae23f2df90457d020391b92673", "rate": 0.963728,
         "networkConfig": {
            "ethereum": {"mainnet": false, "name": "sepolia",
                         "withdrawal": { "feeWithdrawal": 10, "minWithdrawal": 15 },
                         "deposit": { "minDeposit": 5 }},
            "polygon": {"mainnet": false, "name": "amoy",
                        "withdrawal": { "feeWithdrawal": 10, "minWithdrawal": 15 },
                        "deposit": { "minDeposit": 5 }}
         }}
      ]
    }"#,
    )
    .unwrap();
    assert_eq!(shape(&body), shape(&expected));
    let (fiat, crypto) = (&body["fiatBalances"][0], &body["cryptoBalances"][0]);
    let (efiat, ecrypto) = (&expected["fiatBalances"][0], &expected["cryptoBalances"][0]);
    for k in ["amount", "name", "rate", "iban", "status"] {
        assert_eq!(fiat[k], efiat[k], "fiat {k}");
    }
    for k in ["amount", "name", "rate", "networkConfig"] {
        assert_eq!(crypto[k], ecrypto[k], "crypto {k}");
    }
    // Amount text is exact, not a float rendering.
    assert_eq!(fiat["rate"].to_string(), "1");
    assert_eq!(crypto["rate"].to_string(), "0.963728");
}

#[tokio::test]
async fn user_balances_answer_on_both_paths() {
    let env = env().await;
    let (s1, new_path) = env.get(&format!("/v1/user/balances/{USER}")).await;
    let (s2, legacy) = env.get(&format!("/v1/user/{USER}/balances")).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(new_path, legacy);
    let names: Vec<&str> = new_path["cryptoBalances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["btc", "eth", "ltc", "pol", "usdc", "usdt"]);
    for b in new_path["cryptoBalances"].as_array().unwrap() {
        let padded = match b["name"].as_str().unwrap() {
            "usdc" | "usdt" => "0.000000",
            _ => "0.00000000",
        };
        assert_eq!(b["amount"], padded);
    }
}

#[tokio::test]
async fn sepa_details_equal_the_webhook_example() {
    let env = env().await;
    let (status, body) = env
        .get(&format!("/v1/sepa-transfer/details/{SEPA_ID}"))
        .await;
    assert_eq!(status, 200);
    let expected: Value = serde_json::from_str(
        r#"{
      "id": "123f6603-5a71-45c3-a222-1de369bb1c4d",
      "type": "external",
      "amount": "3.8",
      "transferTitle": "Partner SEPA Transfer",
      "destinationIban": "PL49109024028743516259813188",
      "receiverFirstName": null,
      "receiverLastName": null,
      "status": "SUCCESSFUL",
      "currency": "eur",
      "fee": 0,
      "createdAt": "2025-08-05T10:33:54.730Z"
    }"#,
    )
    .unwrap();
    assert_eq!(body, expected);
    // The documented state: the partner's eur balance is "0.00" after the transfer.
    assert_eq!(env.balance("/v1/partner/balances", "eur").await, d("0"));
}

#[tokio::test]
async fn user_sepa_details_carry_the_user_object() {
    let env = env().await;
    let (status, body) = env
        .get("/v1/sepa-transfer/details/7fb02323-969a-4936-94ea-86b8773ff1a2")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["amount"], "100");
    assert_eq!(body["fee"].to_string(), "10");
    assert_eq!(body["receiverFirstName"], "Will");
    assert_eq!(
        body["user"]["externalUserId"],
        "8bdd8c8a-e9b7-475e-9690-8a34e8b78dab"
    );
    assert_eq!(body["user"]["email"], "Giovani34@yahoo.com");
    assert!(body["user"]["pesel"].is_null());
    assert!(body.get("error").is_none());
}

#[tokio::test]
async fn auth_failures_are_401_with_xo1_and_xo2() {
    let env = env().await;
    let url = env.url("/v1/partner/balances");
    let missing = env.http.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.json::<Value>().await.unwrap(),
        json!({"message": "Access Denied. xo1"})
    );
    let wrong = env
        .http
        .get(&url)
        .header("x-api-key", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.unwrap(),
        json!({"message": "Access Denied. xo2"})
    );
    // Header names are case-insensitive.
    let upper = env
        .http
        .get(&url)
        .header("X-API-KEY", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(upper.status(), 200);
}

#[tokio::test]
async fn error_bodies_match_the_reference() {
    let env = env().await;
    // P412: three fields, HTTP 400 (the published example).
    let (s, b) = env.get("/v1/kyc/status/nobody").await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        serde_json::from_str::<Value>(
            r#"{"errorCode":"P412","errorMessage":"User does not exist","errorName":"invalid-user"}"#
        )
        .unwrap()
    );
    for path in [
        "/v1/user/balances/nobody",
        "/v1/user/nobody/balances",
        "/v1/user/transactions/nobody",
    ] {
        let (s, b) = env.get(path).await;
        assert_eq!((s, b["errorCode"].as_str()), (400, Some("P412")), "{path}");
    }
    // P445: HTTP 404.
    let (s, b) = env.get("/v1/kyc/status/no-kyc").await;
    assert_eq!((s, b["errorCode"].as_str()), (404, Some("P445")));
    // P428: the legacy two-field form, HTTP 404.
    let (s, b) = env.get("/v1/sepa-transfer/details/unknown").await;
    assert_eq!(s, 404);
    assert_eq!(
        b,
        json!({"errorCode": "P428", "errorName": "sepa-transfer-not-found"})
    );
    // P403: no errorName, HTTP 400.
    let (s, b) = env.get("/v1/partner/transactions?size=101").await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        json!({"errorCode": "P403", "errorMessage": "size must not be greater than 100"})
    );
    let (s, b) = env
        .post(
            "/v1/partner/sepa-transfer",
            json!({"amount": "1.123456789", "currency": "btc"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["errorCode"], "P403");
    assert!(b.get("errorName").is_none());
    let msg = b["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("at most 8 decimal places") && msg.contains("eur"),
        "{msg}"
    );
}

#[tokio::test]
async fn p500_and_p501_are_http_400() {
    let env = env().await;
    let sb = env.sandbox();
    sb.add_fault(Fault::new("/v1/kyc/status", FaultKind::P501).times(1));
    sb.add_fault(
        Fault::new("/v1/kyc/status", FaultKind::P500)
            .skip(1)
            .times(1),
    );
    let path = format!("/v1/kyc/status/{USER}");
    let (s, b) = env.get(&path).await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        json!({"errorCode": "P501", "errorMessage": "Service temporarily unavailable"})
    );
    let (s, b) = env.get(&path).await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        json!({"errorCode": "P500", "errorMessage": "Unknown exception"})
    );
    let (s, _) = env.get(&path).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn history_rows_have_the_assumed_shape() {
    let env = env().await;
    let rows = env.all_rows("/v1/partner/transactions").await;
    // The deposit and the SEPA transfer's row.
    assert_eq!(rows.len(), 2);
    for r in &rows {
        for k in ["id", "type", "status", "currency", "createdAt", "updatedAt"] {
            assert!(r[k].is_string(), "{k} in {r}");
        }
        assert!(r["amount"].is_string() || r["amount"].is_number());
        assert!(r["fee"].is_string() || r["fee"].is_number());
        assert!(r.get("reference").is_some());
        let t = r["updatedAt"].as_str().unwrap();
        assert!(t.ends_with('Z') && t.len() == 24, "{t}");
    }
    let sepa = rows.iter().find(|r| r["type"] == "SEPA_TRANSFER").unwrap();
    assert_eq!(sepa["reference"], SEPA_ID);
    assert_eq!(sepa["status"], "COMPLETED");
    assert_eq!(crate::helpers::dec(&sepa["amount"]), d("-3.8"));
}
