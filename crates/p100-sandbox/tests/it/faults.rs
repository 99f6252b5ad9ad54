//! Every fault kind is observable by a plain HTTP client.

use std::time::{Duration, Instant};

use p100_sandbox::{Fault, FaultKind, KycSpec, Sandbox, Scenario, UserSpec};
use serde_json::{Value, json};

use crate::helpers::{Env, KEY, d};

fn scenario() -> Scenario {
    Scenario {
        users: vec![UserSpec {
            external_user_id: "u1".into(),
            kyc: Some(KycSpec::default()),
            ..UserSpec::default()
        }],
        ..Scenario::default()
    }
}

async fn env() -> Env {
    Env::start(Sandbox::from_scenario(scenario())).await
}

async fn raw_get(env: &Env, path: &str) -> reqwest::Result<reqwest::Response> {
    env.http
        .get(env.url(path))
        .header("x-api-key", KEY)
        .send()
        .await
}

async fn control_faults(env: &Env, faults: Value) {
    let r = env
        .http
        .post(env.url("/__control/faults"))
        .json(&json!({ "faults": faults }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn latency_delays_the_normal_answer() {
    let env = env().await;
    control_faults(
        &env,
        json!([{"route": "/v1/kyc/status", "kind": "latency", "ms": 300}]),
    )
    .await;
    let start = Instant::now();
    let (s, _) = env.get("/v1/kyc/status/u1").await;
    assert_eq!(s, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn http_status_and_rate_limit_faults() {
    let env = env().await;
    control_faults(
        &env,
        json!([
            {"route": "/v1/partner/balances", "method": "GET", "kind": "http_status", "status": 503, "times": 1},
            {"route": "/v1/partner/balances", "kind": "rate_limit", "retry_after_seconds": 7, "skip": 1, "times": 1}
        ]),
    )
    .await;
    let r = raw_get(&env, "/v1/partner/balances").await.unwrap();
    assert_eq!(r.status(), 503);
    let r = raw_get(&env, "/v1/partner/balances").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Too Many Requests"})
    );
    let r = raw_get(&env, "/v1/partner/balances").await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn drop_closes_the_connection_without_an_answer() {
    let env = env().await;
    env.sandbox()
        .add_fault(Fault::new("/v1/partner/balances", FaultKind::Drop).times(1));
    let err = raw_get(&env, "/v1/partner/balances")
        .await
        .expect_err("no response");
    assert!(
        err.is_request() || err.is_connect() || err.is_body(),
        "{err:?}"
    );
    // The next request is served normally.
    assert_eq!(
        raw_get(&env, "/v1/partner/balances")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        env.sandbox().request_stats().responses.get("drop"),
        Some(&1)
    );
}

#[tokio::test]
async fn malformed_and_truncated_bodies_are_invalid_json() {
    let env = env().await;
    let good = raw_get(&env, "/v1/partner/balances")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    env.sandbox().add_faults([
        Fault::new("/v1/partner/balances", FaultKind::Malformed).times(1),
        Fault::new("/v1/partner/balances", FaultKind::Truncated)
            .skip(1)
            .times(1),
    ]);
    let r = raw_get(&env, "/v1/partner/balances").await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    let r = raw_get(&env, "/v1/partner/balances").await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());
    assert_eq!(text, good[..good.len() / 2]);
}

#[tokio::test]
async fn unknown_enum_replaces_status_values() {
    let env = env().await;
    env.sandbox()
        .add_fault(Fault::new("/v1/kyc/status", FaultKind::UnknownEnum).times(1));
    let (s, b) = env.get("/v1/kyc/status/u1").await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({"status": "SOMETHING_NEW", "attemptStatus": "SOMETHING_NEW"})
    );
}

#[tokio::test]
async fn faults_count_skip_and_times_and_can_be_cleared() {
    let env = env().await;
    control_faults(
        &env,
        json!([{"route": "*", "kind": "p501", "skip": 1, "times": 2}]),
    )
    .await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        let (s, b) = env.get("/v1/kyc/status/u1").await;
        codes.push((s, b.get("errorCode").cloned()));
    }
    assert_eq!(codes[0].0, 200);
    assert_eq!(codes[1], (400, Some(json!("P501"))));
    assert_eq!(codes[2], (400, Some(json!("P501"))));
    assert_eq!(codes[3].0, 200);

    let listed: Value = env
        .http
        .get(env.url("/__control/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["faults"][0]["fired"], 2);
    assert_eq!(listed["faults"][0]["seen"], 4);

    control_faults(&env, json!([{"kind": "p500"}])).await;
    assert_eq!(env.get("/v1/kyc/status/u1").await.0, 400);
    let r = env
        .http
        .delete(env.url("/__control/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(env.get("/v1/kyc/status/u1").await.0, 200);

    // A bad fault is refused with a reason.
    let r = env
        .http
        .post(env.url("/__control/faults"))
        .json(&json!({"faults": [{"kind": "explode"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("explode"));
}

#[tokio::test]
async fn slow_finalize_still_creates_the_exchange() {
    let env = env().await;
    let (lock_id, _, _) = env.sandbox().create_lock("eth", "eur", d("1"));
    env.sandbox().add_fault(
        Fault::new("/v1/partner/exchange", FaultKind::Latency { ms: 3_000 }).method("POST"),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client
        .post(env.url("/v1/partner/exchange"))
        .header("x-api-key", KEY)
        .json(&json!({"amount": 1, "currencyFrom": "eth", "currencyTo": "eur", "lockId": lock_id}))
        .send()
        .await
        .expect_err("client times out");
    assert!(err.is_timeout(), "{err:?}");
    // P100 received it: the exchange exists although the client never saw the answer.
    let exchanges = env.sandbox().exchanges();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].lock_id, lock_id);
    let stats = env.sandbox().request_stats();
    assert_eq!(stats.exchange_finalize_calls.get(&lock_id), Some(&1));
}

#[tokio::test]
async fn stats_count_every_request_by_route() {
    let env = env().await;
    env.get("/v1/kyc/status/u1").await;
    env.get("/v1/kyc/status/nobody").await;
    env.http
        .get(env.url("/v1/partner/balances"))
        .send()
        .await
        .unwrap();
    let stats: Value = env
        .http
        .get(env.url("/__control/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["by_route"]["GET /v1/kyc/status"], 2);
    assert_eq!(stats["by_route"]["GET /v1/partner/balances"], 1);
    assert_eq!(stats["responses"]["401"], 1);
    let per_second: u64 = stats["per_second"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_second, 3);
    env.http
        .post(env.url("/__control/reset_stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(env.sandbox().request_stats().total, 0);
}

#[tokio::test]
async fn after_handler_faults_hide_an_outcome_that_happened() {
    let env = env().await;
    let sb = env.sandbox();
    sb.add_faults([
        Fault::new("/v1/partner/exchange", FaultKind::P500)
            .method("POST")
            .after_handler(true)
            .times(1),
        Fault::new("/v1/partner/exchange", FaultKind::Drop)
            .method("POST")
            .after_handler(true)
            .skip(1)
            .times(1),
    ]);
    let (lock_id, _, _) = sb.create_lock("btc", "eur", d("0.01"));
    let body =
        json!({"amount": "0.01", "currencyFrom": "btc", "currencyTo": "eur", "lockId": lock_id});
    let (s, b) = env.post("/v1/partner/exchange", body.clone()).await;
    assert_eq!((s, b["errorCode"].as_str()), (400, Some("P500")));
    let err = env
        .http
        .post(env.url("/v1/partner/exchange"))
        .header("x-api-key", KEY)
        .json(&body)
        .send()
        .await
        .expect_err("dropped");
    assert!(!err.is_timeout(), "{err:?}");
    // Both calls reached P100: two exchanges exist for the lock.
    assert_eq!(
        sb.request_stats().exchanges_per_lock.get(&lock_id),
        Some(&2)
    );
}

#[tokio::test]
async fn the_rate_limit_admits_r_requests_a_second_and_answers_429_above_it() {
    let sandbox = Sandbox::from_scenario(scenario());
    sandbox.set_rate_limit(Some(20));
    let env = Env::start(sandbox).await;
    // 60 requests as fast as possible: each wall-clock second the server sees admits at most
    // 20, so over the seconds this spans no more than 20 per second touched got through.
    let started = Instant::now();
    let (mut admitted, mut rejected) = (0u64, 0u64);
    for _ in 0..60 {
        let r = raw_get(&env, "/v1/partner/balances").await.unwrap();
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => {
                assert_eq!(r.headers()["retry-after"], "1");
                rejected += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // A run of e whole seconds touches at most e + 2 wall-clock seconds.
    let elapsed = started.elapsed();
    let seconds_touched = elapsed.as_secs() + 2;
    assert!(
        admitted <= 20 * seconds_touched,
        "{admitted} admitted in {elapsed:?}"
    );
    if elapsed < Duration::from_secs(1) {
        assert!(
            rejected >= 20,
            "only {rejected} of 60 rejected in {elapsed:?}"
        );
    }
    env.running.sandbox().set_rate_limit(None);
    let r = raw_get(&env, "/v1/partner/balances").await.unwrap();
    assert_eq!(r.status(), 200, "lifting the limit admits again");
}

/// Security review: `{"advance_seconds": 1e300}` panicked the handler.
#[tokio::test]
async fn a_clock_step_beyond_a_century_is_refused_and_the_sandbox_keeps_serving() {
    let env = env().await;
    for step in [json!(1e300), json!(-1), json!(4e9)] {
        let r = env
            .http
            .post(env.url("/__control/clock"))
            .json(&json!({ "advance_seconds": step }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{step}");
    }
    for _ in 0..20 {
        let r = env
            .http
            .post(env.url("/__control/clock"))
            .json(&json!({ "advance_seconds": 3.0e9 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(env.get("/v1/kyc/status/u1").await.0, 200);
}
