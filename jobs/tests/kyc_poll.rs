//! `kyc_poll` against the sandbox over HTTP and a real Postgres.

use std::sync::Arc;
use std::time::Duration;

use jobs::JobContext;
use jobs::context::P100Health;
use jobs::kyc_poll::{self, KycPollArgs};
use p100_sandbox::{KycSpec, KycStep, RunningSandbox, Sandbox, Scenario, UserSpec};
use queue::Outcome;
use sqlx::PgPool;

fn user(id: &str, kyc: Option<KycSpec>) -> UserSpec {
    UserSpec {
        external_user_id: id.into(),
        kyc,
        ..UserSpec::default()
    }
}

fn step(status: Option<&str>, attempt: &str, reason: Option<&str>) -> KycStep {
    KycStep {
        status: status.map(str::to_owned),
        attempt_status: Some(attempt.into()),
        rejection_reason: reason.map(str::to_owned),
        after_polls: Some(1),
        after_seconds: None,
    }
}

async fn setup(pool: &PgPool, key: &str) -> (RunningSandbox, JobContext) {
    let scenario = Scenario {
        users: vec![
            user(
                "walks",
                Some(KycSpec {
                    steps: vec![
                        step(None, "VERIFICATION", None),
                        step(Some("VERIFIED"), "SUCCESSFUL", None),
                    ],
                    ..KycSpec::default()
                }),
            ),
            user(
                "rejected",
                Some(KycSpec {
                    steps: vec![step(None, "REJECTED_BY_PROVIDER", Some("NO_FACE_FOUND"))],
                    ..KycSpec::default()
                }),
            ),
            user("no-kyc", None),
        ],
        ..Scenario::default()
    };
    let sandbox = Sandbox::from_scenario(scenario).spawn().await.unwrap();
    let mut config = p100::Config::new(sandbox.base_url().parse().unwrap(), p100::ApiKey::new(key));
    config.max_rps = std::num::NonZeroU32::new(1000).unwrap();
    let ctx = JobContext {
        pool: pool.clone(),
        p100: Some(p100::Client::new(config).unwrap()),
        schedule: Arc::default(),
        p100_health: Arc::default(),
        report_dir: std::env::temp_dir(),
        runs: Default::default(),
    };
    let ids: Vec<String> = ["walks", "rejected", "no-kyc", "ghost"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    ledger::users::track(pool, &ids, "test", ledger::intake::FirstJob::QueuedByCaller)
        .await
        .unwrap();
    (sandbox, ctx)
}

async fn poll(ctx: &JobContext, user: &str) -> Outcome {
    kyc_poll::run(
        ctx,
        KycPollArgs {
            v: 0,
            user: user.into(),
        },
    )
    .await
}

fn snooze(outcome: &Outcome) -> Duration {
    match outcome {
        Outcome::Snooze { after, .. } => *after,
        other => panic!("expected a snooze, got {other:?}"),
    }
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_user_is_followed_to_verified_with_growing_delays_and_every_change_recorded(
    pool: PgPool,
) {
    let (_sandbox, ctx) = setup(&pool, p100_sandbox::DEFAULT_API_KEY).await;

    assert_eq!(
        snooze(&poll(&ctx, "walks").await),
        Duration::from_secs(60),
        "PENDING: again in a minute"
    );
    assert_eq!(
        snooze(&poll(&ctx, "walks").await),
        Duration::from_secs(120),
        "VERIFICATION: the delay doubles"
    );
    assert_eq!(
        snooze(&poll(&ctx, "walks").await),
        kyc_poll::VERIFIED_RECHECK,
        "VERIFIED: slow re-check for EXPIRED"
    );
    assert_eq!(
        snooze(&poll(&ctx, "walks").await),
        kyc_poll::VERIFIED_RECHECK
    );

    let history = ledger::users::kyc_history(&pool, "walks").await.unwrap();
    let seen: Vec<(String, Option<String>)> =
        history.into_iter().map(|(s, a, _, _)| (s, a)).collect();
    assert_eq!(
        seen,
        vec![
            ("NOT_VERIFIED".to_owned(), Some("PENDING".to_owned())),
            ("NOT_VERIFIED".to_owned(), Some("VERIFICATION".to_owned())),
            ("VERIFIED".to_owned(), Some("SUCCESSFUL".to_owned())),
        ],
        "one row per change, none for the unchanged fourth poll"
    );
    let user = ledger::users::show(&pool, "walks").await.unwrap().unwrap();
    assert_eq!(
        (user.kyc_status.as_deref(), user.kyc_pending_polls),
        (Some("VERIFIED"), 0)
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn rejection_ends_polling_keeping_the_reason_and_missing_users_are_flagged(pool: PgPool) {
    let (_sandbox, ctx) = setup(&pool, p100_sandbox::DEFAULT_API_KEY).await;

    poll(&ctx, "rejected").await;
    let outcome = poll(&ctx, "rejected").await;
    assert_eq!(outcome.label(), "done", "{outcome:?}");
    let user = ledger::users::show(&pool, "rejected")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        user.kyc_attempt_status.as_deref(),
        Some("REJECTED_BY_PROVIDER")
    );
    assert_eq!(user.kyc_rejection_reason.as_deref(), Some("NO_FACE_FOUND"));

    assert_eq!(
        snooze(&poll(&ctx, "no-kyc").await),
        kyc_poll::NO_VERIFICATION_RECHECK,
        "P445: re-checked slowly"
    );
    let outcome = poll(&ctx, "ghost").await;
    assert_eq!(outcome.label(), "done", "P412 ends the job: {outcome:?}");
    let ghost = ledger::users::show(&pool, "ghost").await.unwrap().unwrap();
    assert!(ghost.unknown_at_p100);
    assert_eq!(ghost.kyc_status.as_deref(), Some("UNKNOWN_USER"));
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_rejected_key_pauses_every_poll_without_spending_attempts(pool: PgPool) {
    let (sandbox, ctx) = setup(&pool, "revoked-key").await;

    let outcome = poll(&ctx, "walks").await;
    assert_eq!(outcome.label(), "defer", "{outcome:?}");
    assert_eq!(ctx.p100_health(), P100Health::AuthFailed);
    let asked = sandbox.sandbox().request_stats().total;

    let outcome = poll(&ctx, "rejected").await;
    assert_eq!(outcome.label(), "defer");
    assert_eq!(
        sandbox.sandbox().request_stats().total,
        asked,
        "paused: P100 is not called again"
    );
    assert!(
        ledger::users::kyc_history(&pool, "walks")
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_thousand_concurrent_polls_stay_under_the_rate_limit_and_use_it(pool: PgPool) {
    const RPS: u32 = 100;
    let users: Vec<UserSpec> = (0..1000)
        .map(|i| user(&format!("many-{i:04}"), Some(KycSpec::default())))
        .collect();
    let ids: Vec<String> = users.iter().map(|u| u.external_user_id.clone()).collect();
    let sandbox = Sandbox::from_scenario(Scenario {
        users,
        ..Scenario::default()
    })
    .spawn()
    .await
    .unwrap();
    let mut config = p100::Config::new(
        sandbox.base_url().parse().unwrap(),
        p100::ApiKey::new(p100_sandbox::DEFAULT_API_KEY),
    );
    config.max_rps = std::num::NonZeroU32::new(RPS).unwrap();
    let ctx = JobContext {
        pool: pool.clone(),
        p100: Some(p100::Client::new(config).unwrap()),
        schedule: Arc::default(),
        p100_health: Arc::default(),
        report_dir: std::env::temp_dir(),
        runs: Default::default(),
    };
    ledger::users::track(
        &pool,
        &ids,
        "test",
        ledger::intake::FirstJob::QueuedByCaller,
    )
    .await
    .unwrap();

    let mut polls = tokio::task::JoinSet::new();
    for id in ids {
        let ctx = ctx.clone();
        polls.spawn(async move { poll(&ctx, &id).await });
    }
    while let Some(outcome) = polls.join_next().await {
        assert_eq!(snooze(&outcome.unwrap()), Duration::from_secs(60));
    }

    let per_second: Vec<u64> = sandbox
        .sandbox()
        .request_stats()
        .per_second
        .values()
        .copied()
        .collect();
    assert_eq!(per_second.iter().sum::<u64>(), 1000);
    assert!(
        per_second.iter().all(|n| *n <= u64::from(RPS)),
        "a second exceeded {RPS}: {per_second:?}"
    );
    // The first and last seconds are partial; every full second in between uses the limit.
    let full = &per_second[1..per_second.len() - 1];
    assert!(
        full.iter().all(|n| *n >= u64::from(RPS) * 9 / 10),
        "under 90% of {RPS}/s: {per_second:?}"
    );
}
