//! Webhook deliveries over real HTTP: a tiny receiver records what the sandbox POSTs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use p100_sandbox::{
    ErrorSpec, KycSpec, KycStep, PartnerSpec, Sandbox, Scenario, SepaSpec, TxSpec, TxStep,
    UserSpec, WebhookConfig, WebhookOutcome, WebhookRecord,
};
use serde_json::{Value, json};

use crate::helpers::{Env, d};

const TOKEN: &str = "whsec-sandbox-test-token";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
    at: Instant,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Received>>,
    /// Requests still to answer 500.
    failures_left: AtomicUsize,
}

/// A webhook receiver on 127.0.0.1:0 that records every request and answers 500 to the
/// first `fail_first`, then 200.
struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let shared = Arc::new(Shared {
            failures_left: AtomicUsize::new(fail_first),
            ..Shared::default()
        });
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("receiver binds");
        let addr = listener.local_addr().expect("receiver address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    /// The base URL the daemon would serve: `http://addr/webhooks/p100`.
    fn url(&self) -> String {
        format!("http://{}/webhooks/p100", self.addr)
    }

    fn config(&self, retry_base: Duration) -> WebhookConfig {
        WebhookConfig {
            retry_base,
            timeout: Duration::from_secs(2),
            ..WebhookConfig::new(self.url(), TOKEN)
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) for at least `n` requests.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        wait_until(|| self.requests().len() >= n).await;
        self.requests()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    shared.seen.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    });
    let fail = shared
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// Polls `cond` every 20 ms for up to 10 s; panics when it never holds.
async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no event of the log is pending any more, and returns the log.
async fn settled_log(sb: &Sandbox, events: usize) -> Vec<WebhookRecord> {
    wait_until(|| {
        let log = sb.webhook_log();
        log.len() >= events && log.iter().all(|r| r.outcome != WebhookOutcome::Pending)
    })
    .await;
    sb.webhook_log()
}

fn user(id: &str, kyc: Option<KycSpec>) -> UserSpec {
    UserSpec {
        external_user_id: id.into(),
        kyc,
        ..UserSpec::default()
    }
}

/// A KYC that starts `PENDING` and moves on through `steps`.
fn kyc(steps: Vec<KycStep>) -> KycSpec {
    KycSpec {
        steps,
        ..KycSpec::default()
    }
}

fn timed(status: Option<&str>, attempt: &str, seconds: f64) -> KycStep {
    KycStep {
        status: status.map(String::from),
        attempt_status: Some(attempt.into()),
        after_seconds: Some(seconds),
        ..KycStep::default()
    }
}

fn on(path_suffix: &str, got: &[Received]) -> Vec<Value> {
    got.iter()
        .filter(|r| r.path == format!("/webhooks/p100/{path_suffix}"))
        .map(|r| r.body.clone())
        .collect()
}

#[tokio::test]
async fn kyc_steps_are_delivered_without_any_client_request() {
    // Arrange
    let rx = Receiver::start(0).await;
    let sb = Sandbox::from_scenario(Scenario {
        users: vec![
            user(
                "u1",
                Some(kyc(vec![
                    timed(None, "VERIFICATION", 0.2),
                    timed(Some("VERIFIED"), "SUCCESSFUL", 0.2),
                ])),
            ),
            user(
                "u2",
                Some(kyc(vec![KycStep {
                    rejection_reason: Some("DOCUMENT_DAMAGED".into()),
                    ..timed(None, "REJECTED_BY_PROVIDER", 0.1)
                }])),
            ),
        ],
        ..Scenario::default()
    })
    .with_webhooks(rx.config(Duration::from_millis(100)));

    // Act: nobody calls the sandbox.
    let env = Env::start(sb).await;
    let got = rx.wait_for(4).await;

    // Assert
    assert_eq!(env.sandbox().request_stats().total, 0);
    for r in &got {
        assert_eq!(r.authorization.as_deref(), Some(TOKEN), "bare token");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    let kyc_bodies = on("kyc", &got);
    let u1: Vec<&Value> = kyc_bodies
        .iter()
        .filter(|b| b["externalUserId"] == "u1")
        .collect();
    assert_eq!(
        u1,
        [
            &json!({"externalUserId": "u1", "verificationStatus": "NOT_VERIFIED", "attemptStatus": "VERIFICATION"}),
            &json!({"externalUserId": "u1", "verificationStatus": "VERIFIED", "attemptStatus": "SUCCESSFUL"}),
        ]
    );
    assert!(kyc_bodies.contains(&json!({
        "externalUserId": "u2",
        "verificationStatus": "NOT_VERIFIED",
        "attemptStatus": "REJECTED_BY_PROVIDER",
        "rejectionReason": "DOCUMENT_DAMAGED"
    })));
    assert_eq!(
        on("user", &got),
        [json!({"externalUserId": "u1", "status": "ACTIVE"})]
    );

    let log = settled_log(env.sandbox(), 4).await;
    assert_eq!(log.len(), 4);
    for r in &log {
        assert_eq!((r.outcome, r.attempts), (WebhookOutcome::Delivered, 1));
        assert!(r.delivered_at.is_some_and(|t| t >= r.changed_at));
    }
    let u1_routes: Vec<&str> = log
        .iter()
        .filter(|r| r.entity_id == "u1")
        .map(|r| r.route.as_str())
        .collect();
    assert_eq!(u1_routes, ["kyc", "kyc", "user"]);

    // A poll-based step fires on a status read and is delivered too.
    env.sandbox()
        .add_users(vec![user(
            "u3",
            Some(kyc(vec![KycStep {
                attempt_status: Some("VERIFICATION".into()),
                after_polls: Some(1),
                ..KycStep::default()
            }])),
        )])
        .unwrap();
    let (status, _) = env.get("/v1/kyc/status/u3").await;
    assert_eq!(status, 200);
    let got = rx.wait_for(5).await;
    assert_eq!(
        got[4].body,
        json!({"externalUserId": "u3", "verificationStatus": "NOT_VERIFIED", "attemptStatus": "VERIFICATION"})
    );
}

#[tokio::test]
async fn the_token_never_shows_in_debug_output_or_the_log() {
    let rx = Receiver::start(0).await;
    let sb = Sandbox::from_scenario(Scenario {
        users: vec![user(
            "u1",
            Some(kyc(vec![timed(None, "VERIFICATION", 0.05)])),
        )],
        ..Scenario::default()
    })
    .with_webhooks(rx.config(Duration::from_millis(100)));
    let env = Env::start(sb).await;
    rx.wait_for(1).await;
    settled_log(env.sandbox(), 1).await;

    let (status, control) = env.get("/__control/webhooks").await;
    assert_eq!(status, 200);
    assert_eq!(control["configured"], true);
    assert_eq!(control["webhooks"][0]["outcome"], "delivered");
    assert_eq!(
        control["webhooks"][0]["body"]["attemptStatus"],
        "VERIFICATION"
    );
    for text in [
        format!("{:?}", env.sandbox()),
        format!("{:?}", env.running),
        format!("{:?}", env.sandbox().webhook_log()),
        format!("{:?}", rx.config(Duration::from_secs(1))),
        control.to_string(),
    ] {
        assert!(!text.contains(TOKEN), "token leaked in {text}");
    }
}

#[tokio::test]
async fn settled_sepa_transfers_deliver_the_documented_shapes() {
    let rx = Receiver::start(0).await;
    let created = "2025-08-05T10:33:54.730Z";
    let transfer = |id: &str, amount: &str, fee: &str, final_status: &str| SepaSpec {
        id: Some(id.into()),
        amount: d(amount),
        fee: Some(d(fee)),
        final_status: Some(final_status.into()),
        after_seconds: Some(0.1),
        created_at: Some(created.parse().unwrap()),
        ..SepaSpec::default()
    };
    let sb = Sandbox::from_scenario(Scenario {
        users: vec![UserSpec {
            first_name: Some("Anna".into()),
            last_name: Some("Nowak".into()),
            ..user("u1", None)
        }],
        sepa_transfers: vec![
            transfer("sepa-ok", "3.80", "0", "SUCCESSFUL"),
            SepaSpec {
                owner: "u1".into(),
                error: Some(ErrorSpec {
                    code: "P441".into(),
                    name: Some("insufficient-funds".into()),
                    message: Some("Insufficient funds".into()),
                }),
                ..transfer("sepa-ko", "12.50", "1.00", "FAILED")
            },
        ],
        ..Scenario::default()
    })
    .with_webhooks(rx.config(Duration::from_millis(100)));
    let _env = Env::start(sb).await;

    let got = rx.wait_for(2).await;
    let bodies = on("sepa-transfer", &got);
    let by_id = |id: &str| {
        bodies
            .iter()
            .find(|b| b["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no webhook for {id}: {bodies:?}"))
    };
    assert_eq!(
        by_id("sepa-ok"),
        json!({
            "id": "sepa-ok",
            "type": "external",
            "amount": "3.8",
            "transferTitle": "Partner SEPA Transfer",
            "destinationIban": "PL49109024028743516259813188",
            "receiverFirstName": null,
            "receiverLastName": null,
            "status": "SUCCESSFUL",
            "currency": "eur",
            "fee": 0,
            "createdAt": created
        })
    );
    let failed = by_id("sepa-ko");
    assert_eq!(
        failed,
        json!({
            "id": "sepa-ko",
            "type": "external",
            "amount": "12.5",
            "transferTitle": "Partner SEPA Transfer",
            "destinationIban": "PL49109024028743516259813188",
            "receiverFirstName": "Anna",
            "receiverLastName": "Nowak",
            "status": "FAILED",
            "currency": "eur",
            "fee": 1,
            "createdAt": created,
            "error": {
                "errorCode": "P441",
                "errorName": "insufficient-funds",
                "errorMessage": "Insufficient funds"
            }
        })
    );
    assert!(failed["amount"].is_string() && failed["fee"].is_number());
}

#[tokio::test]
async fn a_finished_exchange_is_delivered() {
    let rx = Receiver::start(0).await;
    let sb = Sandbox::from_scenario(Scenario {
        partner: PartnerSpec {
            transactions: vec![TxSpec {
                amount: d("1000"),
                ..TxSpec::default()
            }],
            ..PartnerSpec::default()
        },
        ..Scenario::default()
    })
    .with_webhooks(rx.config(Duration::from_millis(100)));
    sb.configure_exchange(|c| {
        c.after_polls = None;
        c.after_seconds = Some(0.1);
    });
    let env = Env::start(sb).await;
    let (_, lock) = env
        .get("/v1/partner/exchange/lock?currencyFrom=eur&currencyTo=eth&amount=100")
        .await;
    let lock_id = lock["lockId"].as_str().unwrap().to_string();
    let (status, created) = env
        .post(
            "/v1/partner/exchange",
            json!({"amount": "100", "currencyFrom": "eur", "currencyTo": "eth", "lockId": lock_id}),
        )
        .await;
    assert_eq!(status, 200, "{created}");

    let got = rx.wait_for(1).await;
    let body = &on("exchange", &got)[0];
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "exchangeId",
        "lockId",
        "status",
        "currencyFrom",
        "currencyTo",
        "amountFrom",
        "amountTo",
        "fee",
        "createdAt",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(body["exchangeId"], created["exchangeId"]);
    assert_eq!(body["lockId"], lock_id.as_str());
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(body["amountFrom"], "100");
    assert!(body["fee"].is_number());
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_spaced_by_the_doubling_schedule() {
    let base = Duration::from_millis(100);
    let rx = Receiver::start(2).await;
    let sb = Sandbox::from_scenario(Scenario {
        users: vec![user(
            "u1",
            Some(kyc(vec![timed(None, "VERIFICATION", 0.05)])),
        )],
        ..Scenario::default()
    })
    .with_webhooks(rx.config(base));
    let env = Env::start(sb).await;

    let got = rx.wait_for(3).await;
    let log = settled_log(env.sandbox(), 1).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.body == got[0].body));
    let (gap1, gap2) = (got[1].at - got[0].at, got[2].at - got[1].at);
    assert!(
        gap1 >= base.mul_f64(0.9) && gap2 >= base.mul_f64(1.8),
        "gaps {gap1:?}, {gap2:?}"
    );
    let r = &log[0];
    assert_eq!((r.outcome, r.attempts), (WebhookOutcome::Delivered, 3));
    assert_eq!(r.last_error.as_deref(), Some("HTTP 500"));
    assert!(r.delivered_at.is_some());
}

#[tokio::test]
async fn a_receiver_that_always_fails_gets_exactly_five_attempts() {
    let base = Duration::from_millis(40);
    let rx = Receiver::start(usize::MAX).await;
    let sb = Sandbox::from_scenario(Scenario {
        users: vec![user(
            "u1",
            Some(kyc(vec![timed(None, "VERIFICATION", 0.05)])),
        )],
        ..Scenario::default()
    })
    .with_webhooks(rx.config(base));
    let env = Env::start(sb).await;

    let log = settled_log(env.sandbox(), 1).await;
    assert_eq!(
        (log[0].outcome, log[0].attempts, log[0].delivered_at),
        (WebhookOutcome::Failed, 5, None)
    );
    // A sixth attempt would come 16 × base after the fifth; wait longer than that.
    tokio::time::sleep(base * 20).await;
    assert_eq!(rx.requests().len(), 5);
}

#[tokio::test]
async fn dropped_events_are_never_sent_and_logged_as_dropped() {
    let rx = Receiver::start(0).await;
    let soon = || Some(kyc(vec![timed(None, "VERIFICATION", 0.05)]));
    let sb = Sandbox::from_scenario(Scenario {
        users: vec![user("u1", None), user("u2", None), user("u3", None)],
        ..Scenario::default()
    })
    .with_webhooks(rx.config(Duration::from_millis(100)));
    let env = Env::start(sb).await;
    let sb = env.sandbox();

    // In process: drop the next event only.
    sb.drop_webhooks(Some(1));
    sb.set_kyc("u1", soon()).unwrap();
    settled_log(sb, 1).await;
    sb.set_kyc("u2", soon()).unwrap();
    rx.wait_for(1).await;

    // Over HTTP: drop everything until cleared.
    let (status, _) = env
        .post("/__control/webhooks/drop", json!({"times": null}))
        .await;
    assert_eq!(status, 200);
    sb.set_kyc("u3", soon()).unwrap();
    settled_log(sb, 3).await;
    let (_, control) = env.get("/__control/webhooks").await;
    assert_eq!(control["dropping"], true);
    assert_eq!(control["drop_remaining"], Value::Null);
    let r = env
        .http
        .delete(env.url("/__control/webhooks/drop"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sb.set_kyc("u1", soon()).unwrap();
    settled_log(sb, 4).await;

    let log = sb.webhook_log();
    let outcomes: Vec<(&str, WebhookOutcome, u32)> = log
        .iter()
        .map(|r| (r.entity_id.as_str(), r.outcome, r.attempts))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("u1", WebhookOutcome::Dropped, 0),
            ("u2", WebhookOutcome::Delivered, 1),
            ("u3", WebhookOutcome::Dropped, 0),
            ("u1", WebhookOutcome::Delivered, 1),
        ]
    );
    let sent: Vec<Value> = rx
        .requests()
        .iter()
        .map(|r| r.body["externalUserId"].clone())
        .collect();
    assert_eq!(sent, [json!("u2"), json!("u1")]);
}

#[tokio::test]
async fn crypto_deposits_come_flat_and_enveloped_with_both_amount_encodings() {
    let rx = Receiver::start(0).await;
    let row = |id: &str, kind: &str, amount: &str, to: &str| TxSpec {
        id: Some(id.into()),
        kind: kind.into(),
        status: "PENDING".into(),
        currency: "eth".into(),
        amount: d(amount),
        created_at: Some("2025-03-20T11:34:37.646Z".parse().unwrap()),
        steps: vec![TxStep {
            status: to.into(),
            after_polls: None,
            after_seconds: Some(0.1),
        }],
        ..TxSpec::default()
    };
    let sb = Sandbox::from_scenario(Scenario {
        users: vec![UserSpec {
            transactions: vec![
                row("dep-1", "DEPOSIT", "0.001", "COMPLETED"),
                row("dep-2", "DEPOSIT", "0.05", "FAILED"),
                row("card-1", "CARD", "-2", "COMPLETED"),
                row("dep-3", "DEPOSIT", "1.5", "COMPLETED"),
                row("dep-4", "DEPOSIT", "2", "COMPLETED"),
            ],
            ..user("w1", None)
        }],
        ..Scenario::default()
    })
    .with_webhooks(rx.config(Duration::from_millis(100)));
    let env = Env::start(sb).await;

    let log = settled_log(env.sandbox(), 4).await;
    assert_eq!(log.len(), 4, "no webhook for the CARD row");
    let got = rx.wait_for(4).await;
    let bodies = on("crypto-deposit", &got);
    assert_eq!(bodies.len(), 4);
    let mut enveloped = 0;
    let (mut numbers, mut strings) = (0, 0);
    for b in &bodies {
        let data = if b.get("event_type").is_some() {
            enveloped += 1;
            assert_eq!(b["event_type"], "crypto_deposit.status_changed");
            assert_eq!(b.as_object().unwrap().len(), 2);
            &b["data"]
        } else {
            b
        };
        let keys: Vec<&str> = data
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "amount",
                "createdAt",
                "cryptoDepositId",
                "currency",
                "externalUserId",
                "status",
                "transactionHash"
            ]
        );
        if data["amount"].is_number() {
            numbers += 1;
        } else {
            assert!(data["amount"].is_string());
            strings += 1;
        }
        let expected_status = if data["cryptoDepositId"] == "dep-2" {
            "UNSUCCESSFUL"
        } else {
            "SUCCESSFUL"
        };
        assert_eq!(data["status"], expected_status);
        assert_eq!(data["externalUserId"], "w1");
        assert_eq!(data["currency"], "eth");
        assert_eq!(data["createdAt"], "2025-03-20T11:34:37.646Z");
        let hash = data["transactionHash"].as_str().unwrap();
        assert!(hash.starts_with("0x") && hash.len() == 66, "{hash}");
    }
    assert_eq!((enveloped, numbers, strings), (2, 2, 2));
    // The alternation is deterministic: flat/number, envelope/number, flat/string, …
    let first = log[0].json();
    assert_eq!(first["cryptoDepositId"], "dep-1");
    assert_eq!(first["amount"].to_string(), "0.001");
    assert_eq!(log[1].json()["data"]["amount"].to_string(), "0.05");
    assert_eq!(log[2].json()["amount"], "1.5");
    assert_eq!(log[3].json()["data"]["amount"], "2");
}

#[tokio::test]
async fn shutdown_stops_the_ticker_and_deliveries() {
    let rx = Receiver::start(usize::MAX).await;
    let sb = Sandbox::from_scenario(Scenario {
        users: vec![user(
            "u1",
            Some(kyc(vec![timed(None, "VERIFICATION", 0.05)])),
        )],
        ..Scenario::default()
    })
    .with_webhooks(rx.config(Duration::from_millis(200)));
    let running = sb.clone().spawn().await.unwrap();
    rx.wait_for(1).await;
    running.shutdown().await.unwrap();
    let after = rx.requests().len();
    // Retries would come 200 ms and 400 ms later; none may arrive after shutdown, and no
    // new change is ticked either.
    sb.set_kyc("u1", Some(kyc(vec![timed(None, "VERIFICATION", 0.0)])))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.requests().len(), after);
    assert_eq!(sb.webhook_log().len(), 1);
}
