//! Webhooks end to end: the sandbox delivers its own progressions to a real daemon, which
//! confirms them through P100's API within seconds while its pollers wait an hour; with
//! deliveries dropped, polling still gets there; a forged claim never moves a state.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{Daemon, cli, url_of, write_schedule};
use p100_sandbox::{
    ErrorSpec, KycSpec, KycStep, RunningSandbox, Sandbox, Scenario, SepaSpec, UserSpec,
    WebhookConfig, WebhookOutcome,
};
use sqlx::PgPool;

const TOKEN: &str = "whk-test-token-93be1c";

fn schedule(name: &str, poll: &str) -> PathBuf {
    write_schedule(
        name,
        &format!(
            "[kinds.kyc_poll]\npoll_first = \"{poll}\"\npoll_max = \"{poll}\"\n\
             [kinds.sepa_status]\npoll_first = \"{poll}\"\npoll_max = \"{poll}\"\n"
        ),
    )
}

fn kyc_user(id: &str, steps: Vec<KycStep>) -> UserSpec {
    UserSpec {
        external_user_id: id.into(),
        currencies: vec!["eur".into()],
        kyc: Some(KycSpec {
            steps,
            ..KycSpec::default()
        }),
        ..UserSpec::default()
    }
}

fn step(status: Option<&str>, attempt: &str, after_seconds: f64) -> KycStep {
    KycStep {
        status: status.map(str::to_owned),
        attempt_status: Some(attempt.into()),
        after_seconds: Some(after_seconds),
        ..KycStep::default()
    }
}

fn transfer(id: &str, final_status: &str, after_seconds: f64) -> SepaSpec {
    SepaSpec {
        id: Some(id.into()),
        owner: "partner".into(),
        amount: "10".parse().unwrap(),
        currency: "eur".into(),
        final_status: Some(final_status.into()),
        error: (final_status == "FAILED").then(ErrorSpec::default),
        after_seconds: Some(after_seconds),
        ..SepaSpec::default()
    }
}

/// Starts following two users whose KYC moves on by time, one that stays PENDING, and two
/// transfers (one SUCCESSFUL, one FAILED). The sandbox's clocks start here.
fn start_progressions(p100: &RunningSandbox, db: &str) {
    let sandbox = p100.sandbox();
    sandbox
        .add_users(vec![
            kyc_user(
                "wh-kyc-1",
                vec![
                    step(None, "VERIFICATION", 4.0),
                    step(Some("VERIFIED"), "SUCCESSFUL", 3.0),
                ],
            ),
            kyc_user("wh-kyc-2", vec![step(None, "REJECTED_BY_PROVIDER", 5.0)]),
            kyc_user(
                "wh-stale",
                vec![step(Some("VERIFIED"), "SUCCESSFUL", 3600.0)],
            ),
        ])
        .unwrap();
    sandbox
        .add_sepa_transfers(vec![
            transfer("t-ok", "SUCCESSFUL", 5.0),
            transfer("t-fail", "FAILED", 6.0),
        ])
        .unwrap();
    cli(db, &["users", "track", "wh-kyc-1", "wh-kyc-2", "wh-stale"]);
    for id in ["t-ok", "t-fail"] {
        cli(
            db,
            &[
                "sepa",
                "track",
                id,
                "--partner",
                "--amount",
                "10",
                "--currency",
                "eur",
            ],
        );
    }
}

async fn kyc_seen(pool: &PgPool, user: &str, status: &str, attempt: &str) -> Option<DateTime<Utc>> {
    ledger::users::kyc_history(pool, user)
        .await
        .unwrap()
        .into_iter()
        .find(|(s, a, _, _)| s == status && a.as_deref() == Some(attempt))
        .map(|(_, _, _, at)| at)
}

async fn sepa_seen(pool: &PgPool, transfer: &str, status: &str) -> Option<DateTime<Utc>> {
    let t = ledger::sepa::find(pool, transfer).await.unwrap()?;
    ledger::sepa::events(pool, t.id)
        .await
        .unwrap()
        .into_iter()
        .find(|(s, _, _)| s == status)
        .map(|(_, _, at)| at)
}

/// Waits until every progression has reached the local state.
async fn wait_for_the_end(pool: &PgPool, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let done = kyc_seen(pool, "wh-kyc-1", "VERIFIED", "SUCCESSFUL")
            .await
            .is_some()
            && kyc_seen(pool, "wh-kyc-2", "NOT_VERIFIED", "REJECTED_BY_PROVIDER")
                .await
                .is_some()
            && sepa_seen(pool, "t-ok", "SUCCESSFUL").await.is_some()
            && sepa_seen(pool, "t-fail", "FAILED").await.is_some();
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "the local state never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn webhooks_to(daemon: &Daemon) -> WebhookConfig {
    WebhookConfig {
        retry_base: Duration::from_millis(500),
        ..WebhookConfig::new(
            format!("http://127.0.0.1:{}/webhooks/p100", daemon.port),
            TOKEN,
        )
    }
}

#[sqlx::test(migrations = false)]
async fn webhooks_confirm_changes_within_two_seconds_and_a_forged_claim_moves_nothing(
    pool: PgPool,
) {
    let db = url_of(&pool);
    let p100 = Sandbox::from_scenario(Scenario::default())
        .spawn()
        .await
        .unwrap();
    let log = std::env::temp_dir().join(format!("p100-recon-webhooks-{}.log", std::process::id()));
    // Pollers wait an hour: only a webhook can make the change show within seconds.
    let daemon = Daemon::start_with(
        &db,
        &p100,
        &schedule("webhooks-fast", "1h"),
        &[],
        &[("P100_WEBHOOK_TOKEN", TOKEN), ("RUST_LOG", "debug")],
        Some(&log),
    )
    .await;
    p100.sandbox().set_webhooks(Some(webhooks_to(&daemon)));
    start_progressions(&p100, &db);
    wait_for_the_end(&pool, Duration::from_secs(30)).await;

    // Each change the sandbox made reached the local state within 2 s of the change.
    let sent = p100.sandbox().webhook_log();
    let mut checked = 0;
    for record in sent
        .iter()
        .filter(|r| r.route == "kyc" || r.route == "sepa-transfer")
    {
        assert_eq!(record.outcome, WebhookOutcome::Delivered, "{record:?}");
        let body: serde_json::Value = serde_json::from_str(&record.body).unwrap();
        let seen = if record.route == "kyc" {
            let status = body["verificationStatus"].as_str().unwrap();
            let attempt = body["attemptStatus"].as_str().unwrap();
            kyc_seen(&pool, &record.entity_id, status, attempt).await
        } else {
            sepa_seen(&pool, &record.entity_id, body["status"].as_str().unwrap()).await
        };
        let seen = seen.unwrap_or_else(|| panic!("never recorded locally: {record:?}"));
        let lag = (seen - record.changed_at).num_milliseconds();
        assert!(
            lag <= 2_000,
            "{} {} took {lag} ms",
            record.route,
            record.body
        );
        checked += 1;
    }
    assert_eq!(
        checked, 5,
        "2 KYC steps, 1 rejection, 2 transfers: {sent:#?}"
    );

    // A forged (or stale) claim: VERIFIED, while P100's API still says PENDING.
    let forged = serde_json::json!({
        "externalUserId": "wh-stale", "verificationStatus": "VERIFIED", "attemptStatus": "SUCCESSFUL"
    });
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/webhooks/p100/kyc",
            daemon.port
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let confirmed: Option<bool> = sqlx::query_scalar(
            "SELECT confirmed_at IS NOT NULL FROM webhook_deliveries WHERE entity_id = 'wh-stale'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if confirmed == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forged delivery's poll never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let user = ledger::users::show(&pool, "wh-stale")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            user.kyc_status.as_deref(),
            user.kyc_attempt_status.as_deref()
        ),
        (Some("NOT_VERIFIED"), Some("PENDING")),
        "the state followed the webhook instead of P100's API"
    );

    // What an operator sees.
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&cli(&db, &["webhooks", "list", "--route", "kyc", "--json"])).unwrap();
    assert!(listed.iter().any(|d| d["entity_id"] == "wh-stale"
        && d["effect"].as_str().unwrap().contains("kyc_poll")
        && !d["confirmed_at"].is_null()));
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", daemon.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"webhook_deliveries_total{route="kyc",outcome="accepted"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("webhook_confirm_seconds"), "{metrics}");

    // The token is in no log line, inbox row or metric.
    drop(daemon);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("webhook"),
        "the log is empty: debug logging did not reach it"
    );
    assert!(!logged.contains(TOKEN), "the token was logged");
    assert!(!metrics.contains(TOKEN));
    let inbox: String =
        sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM webhook_deliveries t")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!inbox.contains(TOKEN));
    let _ = std::fs::remove_file(&log);

    p100.shutdown().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn with_every_delivery_dropped_polling_still_gets_there(pool: PgPool) {
    let db = url_of(&pool);
    let p100 = Sandbox::from_scenario(Scenario::default())
        .spawn()
        .await
        .unwrap();
    let daemon = Daemon::start_with(
        &db,
        &p100,
        &schedule("webhooks-dropped", "2s"),
        &[],
        &[("P100_WEBHOOK_TOKEN", TOKEN)],
        None,
    )
    .await;
    p100.sandbox().set_webhooks(Some(webhooks_to(&daemon)));
    p100.sandbox().drop_webhooks(None);
    start_progressions(&p100, &db);
    wait_for_the_end(&pool, Duration::from_secs(60)).await;
    let sent = p100.sandbox().webhook_log();
    assert!(!sent.is_empty());
    assert!(
        sent.iter().all(|r| r.outcome == WebhookOutcome::Dropped),
        "{sent:#?}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "a dropped delivery arrived");
    drop(daemon);
    p100.shutdown().await.unwrap();
}
