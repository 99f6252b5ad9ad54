//! Scenario files: the shipped example loads and behaves as its comments say; bad files
//! give errors naming the file and the line.

use std::path::PathBuf;

use p100_sandbox::{Sandbox, ScenarioError};
use serde_json::json;

use crate::helpers::{Env, d};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/example.toml")
}

#[tokio::test]
async fn the_example_scenario_loads_and_serves() {
    let sb = Sandbox::from_scenario_file(&example()).expect("example loads");
    let env = Env::start(sb).await;
    // First transactions request hits the scenario's rate_limit fault.
    let r = env
        .http
        .get(env.url("/v1/partner/transactions"))
        .header("x-api-key", "sandbox-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    let rows = env.all_rows("/v1/partner/transactions").await;
    assert!(rows.iter().any(|r| r["type"] == "CASHBACK"));
    assert!(rows.iter().all(|r| r["id"] != "ghost-0001"));
    let (_, kyc) = env.get("/v1/kyc/status/rejected-user").await;
    assert_eq!(
        kyc,
        json!({"status": "NOT_VERIFIED", "attemptStatus": "REJECTED_BY_PROVIDER", "rejectionReason": "NO_FACE_FOUND"})
    );
    let (_, kyc) = env.get("/v1/kyc/status/on-hold-user").await;
    assert_eq!(kyc["status"], "ON_HOLD");
    assert_eq!(env.get("/v1/kyc/status/no-kyc-user").await.0, 404);
    let (_, b) = env.get("/v1/user/balances/on-hold-user").await;
    assert!(b["fiatBalances"][0]["iban"].is_null());
    assert_eq!(b["fiatBalances"][0]["status"], "WAITING_TO_BE_ACTIVATED");
    // usdc drift of -0.000001 with no row behind it.
    assert_eq!(
        env.balance("/v1/partner/balances", "usdc").await,
        d("-0.000001")
    );
}

#[test]
fn a_syntax_error_names_the_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("p100-sandbox-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.toml");
    std::fs::write(
        &path,
        "api_key = \"k\"\n\n[[users]]\nexternal_user_id = 12\n",
    )
    .unwrap();
    let err = Sandbox::from_scenario_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ScenarioError::Syntax { line: 4, .. }),
        "{msg}"
    );
    assert!(msg.contains("broken.toml:4:"), "{msg}");

    std::fs::write(
        &path,
        "[[users]]\nexternal_user_id = \"a\"\nfavourite_colour = \"blue\"\n",
    )
    .unwrap();
    let msg = Sandbox::from_scenario_file(&path).unwrap_err().to_string();
    assert!(
        msg.contains("broken.toml:3:") && msg.contains("favourite_colour"),
        "{msg}"
    );

    std::fs::write(
        &path,
        "[[drift]]\nowner = \"ghost\"\ncurrency = \"eur\"\ndelta = \"1\"\n",
    )
    .unwrap();
    let msg = Sandbox::from_scenario_file(&path).unwrap_err().to_string();
    assert!(
        msg.contains("broken.toml") && msg.contains("drift[0].owner"),
        "{msg}"
    );

    std::fs::write(&path, "[[partner.transactions]]\namount = \"twelve\"\n").unwrap();
    let msg = Sandbox::from_scenario_file(&path).unwrap_err().to_string();
    assert!(
        msg.contains("broken.toml:2:") && msg.contains("twelve"),
        "{msg}"
    );

    let missing = Sandbox::from_scenario_file(&dir.join("missing.toml")).unwrap_err();
    assert!(missing.to_string().contains("missing.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_scenario_can_add_users_on_top_of_generated_ones() {
    let text = r#"
[generator]
seed = 3
users = 10
transactions = 100
partner_transactions = 5
currencies = ["eur"]

[[users]]
external_user_id = "user-000002"
[users.kyc]
status = "EXPIRED"
attempt_status = "SUCCESSFUL"
[[users.transactions]]
amount = "1.00"
"#;
    let s = p100_sandbox::Scenario::from_toml_str(text, "inline.toml".as_ref()).unwrap();
    s.validate().unwrap();
    let env = Env::start(Sandbox::from_scenario(s)).await;
    let (_, kyc) = env.get("/v1/kyc/status/user-000002").await;
    assert_eq!(kyc["status"], "EXPIRED");
    let rows = env.all_rows("/v1/user/transactions/user-000002").await;
    assert_eq!(rows.len(), 11);
    assert_eq!(
        crate::helpers::completed_sum(&rows, "eur"),
        env.balance("/v1/user/balances/user-000002", "eur").await
    );
    assert_eq!(env.all_rows("/v1/partner/transactions").await.len(), 5);
}
