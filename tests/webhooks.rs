//! The webhook receiver over real HTTP on a fresh database: the token, bodies good and bad,
//! repeats, and what an accepted delivery leads to (a brought-forward polling job, never a
//! ledger write).

use std::sync::Arc;

use jobs::schedule::ScheduleFile;
use p100_recon::webhooks::{Receiver, router};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

const TOKEN: &str = "wh-secret-7f3a9c";

/// Serves the receiver on a free port; returns its base URL.
async fn serve(pool: &PgPool, token: Option<&str>) -> String {
    let receiver = Receiver {
        pool: pool.clone(),
        token: token.map(|t| Arc::new(secrecy::SecretString::from(t.to_owned()))),
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(receiver)).await });
    format!("http://{addr}")
}

async fn post(
    url: &str,
    auth: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

async fn rows(pool: &PgPool) -> Vec<(String, String, Option<String>, Option<String>, i32)> {
    sqlx::query_as(
        "SELECT route, state, entity_id, reason, deliveries FROM webhook_deliveries ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn kyc(user: &str, status: &str, attempt: &str) -> String {
    json!({ "externalUserId": user, "verificationStatus": status, "attemptStatus": attempt })
        .to_string()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn the_token_is_checked_before_anything_is_stored(pool: PgPool) {
    let base = serve(&pool, Some(TOKEN)).await;
    let url = format!("{base}/webhooks/p100/kyc");
    let body = kyc("u-1", "NOT_VERIFIED", "PENDING");
    let wrong = [
        None,
        Some(""),
        Some("wrong"),
        Some("Bearer wrong"),
        Some("wh-secret-7f3a9"),
        Some("wh-secret-7f3a9cX"),
        Some("Basic wh-secret-7f3a9c"),
    ];
    for auth in wrong {
        let (status, text) = post(&url, auth, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(!text.contains(TOKEN));
    }
    assert!(
        rows(&pool).await.is_empty(),
        "a refused delivery stored something"
    );

    let accepted = [
        (TOKEN.to_owned(), "PENDING"),
        (format!("Bearer {TOKEN}"), "VERIFICATION"),
        (format!("bearer {TOKEN}"), "SUCCESSFUL"),
    ];
    for (auth, attempt) in accepted {
        let (status, text) = post(&url, Some(&auth), kyc("u-1", "NOT_VERIFIED", attempt)).await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, "{}"), "{auth}");
    }
    let stored = rows(&pool).await;
    assert_eq!(stored.len(), 3);
    assert!(
        stored
            .iter()
            .all(|r| r.1 == "accepted" && r.2.as_deref() == Some("u-1"))
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn without_a_token_the_routes_answer_503_and_store_nothing(pool: PgPool) {
    let base = serve(&pool, None).await;
    for route in [
        "webhooks/p100/kyc",
        "webhooks/p100/sepa-transfer",
        "webhook/user/status",
    ] {
        let (status, text) = post(&format!("{base}/{route}"), Some(TOKEN), "{}").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{route}");
        assert!(text.contains("P100_WEBHOOK_TOKEN is not set"), "{text}");
    }
    assert!(rows(&pool).await.is_empty());
    // Health is not a webhook: it answers whatever the configuration.
    let health = reqwest::get(format!("{base}/webhook/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn bad_bodies_are_answered_400_and_kept_as_rejected_with_the_reason(pool: PgPool) {
    let base = serve(&pool, Some(TOKEN)).await;
    let url = format!("{base}/webhooks/p100/kyc");
    let oversize = format!(
        r#"{{"externalUserId":"u-1","pad":"{}"}}"#,
        "x".repeat(65 * 1024)
    );
    let cases: [(Vec<u8>, &str); 5] = [
        (oversize.clone().into_bytes(), "exceeds the 64 KiB limit"),
        (
            b"{\"externalUserId\": \"u-1\",".to_vec(),
            "body is not JSON",
        ),
        (b"\xff\xfe\x00garbage".to_vec(), "body is not JSON"),
        (b"[\"u-1\"]".to_vec(), "not an object"),
        (
            br#"{"verificationStatus":"VERIFIED"}"#.to_vec(),
            "lacks the entity id (externalUserId)",
        ),
    ];
    for (body, reason) in &cases {
        let (status, text) = post(&url, Some(TOKEN), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
        assert!(text.contains(reason), "{text}");
    }
    let stored = rows(&pool).await;
    assert_eq!(stored.len(), cases.len());
    for (row, (_, reason)) in stored.iter().zip(&cases) {
        assert_eq!(row.1, "rejected");
        assert!(row.3.as_deref().unwrap().contains(reason), "{row:?}");
    }
    let (bytes, kept): (i32, i32) = sqlx::query_as(
        "SELECT body_bytes, length(body) FROM webhook_deliveries WHERE reason LIKE '%64 KiB%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(bytes > 64 * 1024, "{bytes}");
    assert_eq!(kept, 4096, "of an oversize body only its start is kept");
    // A body that is not UTF-8 is kept readable (NUL replaced; Postgres text holds none).
    let garbled: String =
        sqlx::query_scalar("SELECT body FROM webhook_deliveries WHERE body LIKE '%garbage'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(garbled.ends_with("garbage"));
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_repeated_delivery_is_recorded_once(pool: PgPool) {
    let base = serve(&pool, Some(TOKEN)).await;
    let url = format!("{base}/webhooks/p100/sepa-transfer");
    let first = r#"{"id":"t-1","status":"SUCCESSFUL","amount":"3.8","fee":0}"#;
    // P100's retry of the same event, reformatted: still the same delivery.
    let again = r#"{ "fee": 0, "amount": "3.8", "status": "SUCCESSFUL", "id": "t-1" }"#;
    for body in [first, again, first] {
        assert_eq!(post(&url, Some(TOKEN), body).await.0, StatusCode::OK);
    }
    // Another status of the same transfer is another event; the same body on another route
    // is another event too.
    let failed = r#"{"id":"t-1","status":"FAILED","error":{"errorCode":"P441"}}"#;
    assert_eq!(post(&url, Some(TOKEN), failed).await.0, StatusCode::OK);
    let deposit = format!("{base}/webhooks/p100/sepa-deposit");
    assert_eq!(post(&deposit, Some(TOKEN), first).await.0, StatusCode::OK);
    let stored = rows(&pool).await;
    assert_eq!(
        stored,
        vec![
            (
                "sepa-transfer".into(),
                "accepted".into(),
                Some("t-1".into()),
                None,
                3
            ),
            (
                "sepa-transfer".into(),
                "accepted".into(),
                Some("t-1".into()),
                None,
                1
            ),
            (
                "sepa-deposit".into(),
                "accepted".into(),
                Some("t-1".into()),
                None,
                1
            ),
        ]
    );
    // The same body again after another status of the same entity is a new event (PENDING,
    // REJECTED, PENDING again: the user resubmitted), even within the repeat window.
    let kyc_url = format!("{base}/webhooks/p100/kyc");
    for (status, attempt) in [
        ("NOT_VERIFIED", "PENDING"),
        ("NOT_VERIFIED", "REJECTED_BY_PROVIDER"),
        ("NOT_VERIFIED", "PENDING"),
    ] {
        let (code, _) = post(&kyc_url, Some(TOKEN), kyc("u-again", status, attempt)).await;
        assert_eq!(code, StatusCode::OK);
    }
    let rows_of_user: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE entity_id = 'u-again'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows_of_user, 3);
    // Eight concurrent copies of one new delivery still make one row.
    let body = r#"{"id":"t-2","status":"SUCCESSFUL"}"#;
    let copies = (0..8).map(|_| post(&url, Some(TOKEN), body));
    for (status, _) in futures::future::join_all(copies).await {
        assert_eq!(status, StatusCode::OK);
    }
    let n: (i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(deliveries) FROM webhook_deliveries WHERE entity_id = 't-2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(n, (1, 8));
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn flat_and_enveloped_bodies_and_p100s_own_paths_are_read(pool: PgPool) {
    let base = serve(&pool, Some(TOKEN)).await;
    let enveloped = r#"{"event_type":"crypto_deposit.status_changed","data":{"cryptoDepositId":"dep_123","status":"WAITING_FOR_TR_DATA","amount":"0.05","currency":"btc"}}"#;
    let flat = r#"{"externalUserId":"u-9","cryptoDepositId":"dep_124","amount":0.001,"currency":"eth","status":"SUCCESSFUL"}"#;
    let cases = [
        ("webhooks/p100/crypto-deposit", enveloped),
        ("webhooks/p100/crypto-deposit", flat),
        (
            "webhook/user/status",
            r#"{"externalUserId":"u-9","status":"ACTIVE"}"#,
        ),
        (
            "webhook/poa-verification/status",
            r#"{"externalUserId":"u-9","status":"APPROVED"}"#,
        ),
        (
            "webhooks/p100/exchange",
            r#"{"exchangeId":"ex-1","status":"COMPLETED"}"#,
        ),
    ];
    for (route, body) in cases {
        let (status, text) = post(&format!("{base}/{route}"), Some(TOKEN), body).await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, "{}"), "{route}");
    }
    type Named = (String, Option<String>, Option<String>, Option<String>);
    let stored: Vec<Named> = sqlx::query_as(
        "SELECT route, entity_id, external_user_id, status FROM webhook_deliveries ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        stored,
        vec![
            (
                "crypto-deposit".into(),
                some("dep_123"),
                None,
                some("WAITING_FOR_TR_DATA")
            ),
            (
                "crypto-deposit".into(),
                some("dep_124"),
                some("u-9"),
                some("SUCCESSFUL")
            ),
            ("user".into(), some("u-9"), some("u-9"), some("ACTIVE")),
            (
                "poa-verification".into(),
                some("u-9"),
                some("u-9"),
                some("APPROVED")
            ),
            ("exchange".into(), some("ex-1"), None, some("COMPLETED")),
        ]
    );
    let (status, _) = post(&format!("{base}/webhooks/p100/nonsense"), Some(TOKEN), "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let health = reqwest::Client::new()
            .request(method.clone(), format!("{base}/webhook/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK, "{method}");
    }
}

// ---- what a delivery leads to -------------------------------------------------------------

async fn track_user(pool: &PgPool, user: &str) {
    ledger::users::track(
        pool,
        &[user.to_owned()],
        "test",
        ledger::intake::FirstJob::LeftToSweep,
    )
    .await
    .unwrap();
}

async fn live_job(pool: &PgPool, kind: &str, key: &str) -> Option<(i64, f64)> {
    sqlx::query_as(
        "SELECT id, extract(epoch from run_at - now())::float8 FROM jobs
          WHERE kind = $1 AND dedup_key = $2 AND state IN ('pending', 'failed', 'running')",
    )
    .bind(kind)
    .bind(key)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn effects(pool: &PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT route, state, coalesce(effect, '') FROM webhook_deliveries ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_delivery_brings_its_units_polling_job_forward_and_writes_no_ledger(pool: PgPool) {
    let schedule = ScheduleFile::default();
    let base = serve(&pool, Some(TOKEN)).await;
    track_user(&pool, "alice").await;
    track_user(&pool, "bob").await;
    let mut tx = pool.begin().await.unwrap();
    ledger::sepa::track(
        &mut tx,
        &ledger::Owner::User("bob".into()),
        "t-77",
        "12.50".parse().unwrap(),
        "eur",
        ledger::intake::FirstJob::LeftToSweep,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // alice's KYC poll is snoozed for an hour, as after a few reads in progress.
    let an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    let job = jobs::enqueue::new_job(
        jobs::Kind::KycPoll,
        json!({ "user": "alice" }),
        &schedule,
        Some(an_hour),
    )
    .unwrap();
    let snoozed = jobs::enqueue::enqueue(&pool, &job).await.unwrap().id;
    let postings_before: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
        .fetch_one(&pool)
        .await
        .unwrap();

    let deliveries = [
        ("kyc", kyc("alice", "VERIFIED", "SUCCESSFUL")),
        ("kyc", kyc("mallory", "VERIFIED", "SUCCESSFUL")),
        ("sepa-transfer", json!({"id": "t-77", "status": "SUCCESSFUL", "amount": "12.5"}).to_string()),
        ("sepa-transfer", json!({"id": "t-unknown", "status": "SUCCESSFUL"}).to_string()),
        ("crypto-deposit", json!({"externalUserId": "bob", "cryptoDepositId": "d-1", "status": "SUCCESSFUL", "amount": 0.5}).to_string()),
        ("crypto-deposit", json!({"cryptoDepositId": "d-2", "status": "SUCCESSFUL"}).to_string()),
        ("user", json!({"externalUserId": "bob", "status": "ACTIVE"}).to_string()),
        ("poa-verification", json!({"externalUserId": "bob", "status": "APPROVED"}).to_string()),
        ("exchange", json!({"exchangeId": "ex-unknown", "status": "COMPLETED"}).to_string()),
    ];
    for (route, body) in &deliveries {
        let (status, _) = post(
            &format!("{base}/webhooks/p100/{route}"),
            Some(TOKEN),
            body.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{route}");
    }
    assert_eq!(
        jobs::webhooks::act(&pool, &schedule).await.unwrap(),
        deliveries.len()
    );
    assert_eq!(
        jobs::webhooks::act(&pool, &schedule).await.unwrap(),
        0,
        "acted on twice"
    );

    // alice's poll runs now (the same job, brought forward), not in an hour.
    let (id, due_in) = live_job(&pool, "kyc_poll", "user:alice").await.unwrap();
    assert_eq!(id, snoozed);
    assert!(due_in <= 0.5, "still due in {due_in} s");
    assert!(
        live_job(&pool, "sepa_status", "transfer:t-77")
            .await
            .is_some()
    );
    assert!(live_job(&pool, "tx_sync", "user:bob").await.is_some());
    assert!(live_job(&pool, "reconcile", "user:bob").await.is_some());
    assert!(live_job(&pool, "kyc_poll", "user:mallory").await.is_none());

    let got = effects(&pool).await;
    let expect = [
        ("kyc", "accepted", "brought forward kyc_poll job"),
        ("kyc", "ignored", "user mallory is not tracked"),
        ("sepa-transfer", "accepted", "queued sepa_status job"),
        (
            "sepa-transfer",
            "ignored",
            "transfer t-unknown is not tracked",
        ),
        ("crypto-deposit", "accepted", "queued tx_sync job"),
        ("crypto-deposit", "ignored", "names no externalUserId"),
        ("user", "accepted", "queued reconcile job"),
        ("poa-verification", "ignored", "not followed"),
        ("exchange", "ignored", "exchange ex-unknown is not tracked"),
    ];
    assert_eq!(got.len(), expect.len());
    for (row, (route, state, effect)) in got.iter().zip(expect) {
        assert_eq!((row.0.as_str(), row.1.as_str()), (route, state), "{row:?}");
        assert!(row.2.contains(effect), "{row:?} should say {effect:?}");
    }
    let postings_after: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        postings_after, postings_before,
        "a webhook wrote the ledger"
    );
    let status: String =
        sqlx::query_scalar("SELECT status FROM sepa_transfers WHERE transfer_id = 't-77'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        status, "TRACKING",
        "a webhook set a status; only the API answer may"
    );

    // A late delivery for a transfer that has ended queues nothing: its job would only end.
    sqlx::query("UPDATE sepa_transfers SET status = 'SUCCESSFUL' WHERE transfer_id = 't-77'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET state = 'done', finished_at = now() WHERE kind = 'sepa_status'")
        .execute(&pool)
        .await
        .unwrap();
    let late = json!({"id": "t-77", "status": "FAILED"}).to_string();
    let (code, _) = post(
        &format!("{base}/webhooks/p100/sepa-transfer"),
        Some(TOKEN),
        late,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(jobs::webhooks::act(&pool, &schedule).await.unwrap(), 1);
    let last = effects(&pool).await.pop().unwrap();
    assert!(last.2.contains("nothing to do"), "{last:?}");
    assert!(
        live_job(&pool, "sepa_status", "transfer:t-77")
            .await
            .is_none()
    );
}

/// Review: acting ran a batch in one transaction, so one delivery that could never be acted on
/// (here a user id stored before today's checks, which no job accepts) rolled the batch back
/// every second and held every later delivery behind it.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_delivery_that_cannot_be_acted_on_does_not_hold_up_the_others(pool: PgPool) {
    let schedule = ScheduleFile::default();
    let base = serve(&pool, Some(TOKEN)).await;
    // As a row inserted before migration 0017's checks (they are NOT VALID for old rows).
    sqlx::raw_sql(
        "ALTER TABLE tracked_users DROP CONSTRAINT tracked_users_valid_user_id;
         INSERT INTO tracked_users (external_user_id, source) VALUES ('..', 'old');",
    )
    .execute(&pool)
    .await
    .unwrap();
    track_user(&pool, "alice").await;
    let url = format!("{base}/webhooks/p100/kyc");
    for user in ["..", "alice"] {
        let (status, _) = post(&url, Some(TOKEN), kyc(user, "VERIFIED", "SUCCESSFUL")).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(jobs::webhooks::act(&pool, &schedule).await.unwrap(), 2);
    let got = effects(&pool).await;
    assert_eq!(got[0].1, "ignored", "{got:?}");
    assert!(got[0].2.contains("could not be acted on"), "{got:?}");
    assert_eq!(got[1].1, "accepted", "{got:?}");
    assert!(live_job(&pool, "kyc_poll", "user:alice").await.is_some());
    assert_eq!(jobs::webhooks::act(&pool, &schedule).await.unwrap(), 0);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn the_token_never_reaches_the_inbox(pool: PgPool) {
    let base = serve(&pool, Some(TOKEN)).await;
    for route in ["kyc", "user", "sepa-transfer"] {
        let url = format!("{base}/webhooks/p100/{route}");
        post(
            &url,
            Some(TOKEN),
            r#"{"externalUserId":"u","id":"x","status":"S"}"#,
        )
        .await;
        post(&url, Some(&format!("Bearer {TOKEN}")), "not json").await;
        post(&url, Some("wrong"), "{}").await;
    }
    let everything: String =
        sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM webhook_deliveries t")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!everything.is_empty());
    assert!(!everything.contains(TOKEN), "the token was stored");
}

/// The inbox is pruned with the queue's retention: what is done with (acted on, ignored,
/// refused) goes once it is older than the age; a delivery not yet acted on stays, however old.
#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn old_deliveries_that_are_done_with_are_pruned_and_unacted_ones_kept(pool: PgPool) {
    let schedule = ScheduleFile::default();
    let base = serve(&pool, Some(TOKEN)).await;
    track_user(&pool, "alice").await;
    let kyc_url = format!("{base}/webhooks/p100/kyc");
    let bearer = format!("Bearer {TOKEN}");
    let (s, _) = post(
        &kyc_url,
        Some(&bearer),
        kyc("alice", "NOT_VERIFIED", "PENDING"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = post(
        &kyc_url,
        Some(&bearer),
        kyc("nobody", "NOT_VERIFIED", "PENDING"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = post(&kyc_url, Some(&bearer), "[1, 2]").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    jobs::webhooks::act(&pool, &schedule).await.unwrap();
    // One more, not acted on yet.
    let (s, _) = post(
        &kyc_url,
        Some(&bearer),
        kyc("alice", "NOT_VERIFIED", "VERIFICATION"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let states: Vec<(String, bool)> =
        sqlx::query_as("SELECT state, acted_at IS NOT NULL FROM webhook_deliveries ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        states,
        vec![
            ("accepted".into(), true),
            ("ignored".into(), true),
            ("rejected".into(), false),
            ("accepted".into(), false)
        ]
    );
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    // Recent: nothing goes.
    assert_eq!(ledger::webhooks::prune(&pool, week, 100).await.unwrap(), 0);
    sqlx::query(
        "UPDATE webhook_deliveries SET received_at = now() - interval '8 days',
                last_received_at = now() - interval '8 days'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        ledger::webhooks::prune(&pool, week, 2).await.unwrap(),
        2,
        "at most the limit"
    );
    assert_eq!(ledger::webhooks::prune(&pool, week, 100).await.unwrap(), 1);
    let left: Vec<(String, bool)> =
        sqlx::query_as("SELECT state, acted_at IS NOT NULL FROM webhook_deliveries ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        vec![("accepted".into(), false)],
        "the unacted one stays"
    );
}
