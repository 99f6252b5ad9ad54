//! `bench webhooks --latency N`: seconds from a sandbox state change to the local state, through
//! a daemon process, with webhooks (the pollers waiting an hour) and with polling only (the
//! pollers' default delays). N users whose KYC becomes VERIFIED and N partner SEPA transfers
//! that succeed, each at its own moment in the first 15 s.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use p100_sandbox::{KycSpec, KycStep, Sandbox, Scenario, SepaSpec, UserSpec, WebhookConfig};
use serde_json::json;

use super::bench_cycle::{DaemonSpec, ScratchDir, start_daemon};

const TOKEN: &str = "bench-webhook-latency-token";

pub async fn measure(url: &str, units: usize) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(units > 0, "--latency must be at least 1");
    let pool = crate::db::connect(url, 8).await?;
    let with = phase(&pool, url, units, true).await?;
    let without = phase(&pool, url, units, false).await?;
    pool.close().await;
    let all = |lags: &[(&str, f64)]| lags.iter().map(|l| l.1).collect::<Vec<_>>();
    let of = |lags: &[(&str, f64)], route: &str| {
        lags.iter()
            .filter(|l| l.0 == route)
            .map(|l| l.1)
            .collect::<Vec<_>>()
    };
    let (w50, w99, wmax) = percentiles(all(&with));
    let (p50, p99, pmax) = percentiles(all(&without));
    Ok(json!({
        "latency_units": units * 2,
        "webhook_lag_ms_p50": w50, "webhook_lag_ms_p99": w99, "webhook_lag_ms_max": wmax,
        "webhook_lag_ms_p99_kyc": percentiles(of(&with, "kyc")).1,
        "webhook_lag_ms_p99_sepa": percentiles(of(&with, "sepa-transfer")).1,
        "polling_lag_ms_p50": p50, "polling_lag_ms_p99": p99, "polling_lag_ms_max": pmax,
        "p99_ratio_polling_to_webhooks": if w99 > 0.0 { (p99 / w99 * 10.0).round() / 10.0 } else { 0.0 },
    }))
}

/// One run; the route and lag in ms of every change.
async fn phase(
    pool: &ledger::PgPool,
    url: &str,
    units: usize,
    webhooks: bool,
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let tag = if webhooks { "wh" } else { "poll" };
    let p100 = Sandbox::from_scenario(Scenario::default()).spawn().await?;
    let dir = ScratchDir::new()?;
    // With webhooks the pollers wait an hour: what shows sooner came through a webhook.
    let schedule = if webhooks {
        "[kinds.kyc_poll]\npoll_first = \"1h\"\npoll_max = \"1h\"\n\
         [kinds.sepa_status]\npoll_first = \"1h\"\npoll_max = \"1h\"\n"
    } else {
        ""
    };
    std::fs::write(dir.path().join("schedule.toml"), schedule)?;
    let env: &[(&str, &str)] = if webhooks {
        &[("P100_WEBHOOK_TOKEN", TOKEN)]
    } else {
        &[]
    };
    let spec = DaemonSpec {
        kinds: "kyc_poll,sepa_status",
        budget_rps: 1_000,
        max_connections: 20,
        env,
    };
    let (daemon, port) = start_daemon(url, &p100.base_url(), &spec, dir.path()).await?;
    // Polling only: the sandbox still logs each change's time, but delivers nothing.
    p100.sandbox().set_webhooks(Some(WebhookConfig::new(
        format!("http://127.0.0.1:{port}/webhooks/p100"),
        TOKEN,
    )));
    if !webhooks {
        p100.sandbox().drop_webhooks(None);
    }
    let users: Vec<String> = (0..units).map(|i| format!("lat-{tag}-{i}")).collect();
    let transfers: Vec<String> = (0..units).map(|i| format!("lat-{tag}-t{i}")).collect();
    // From 5 s on, once every unit's first read is done: the lag of a change, not of a backlog.
    let at = |i: usize| 5.0 + (i % 27) as f64 * 0.5;
    p100.sandbox()
        .add_users(
            users
                .iter()
                .enumerate()
                .map(|(i, id)| UserSpec {
                    external_user_id: id.clone(),
                    currencies: vec!["eur".into()],
                    kyc: Some(KycSpec {
                        steps: vec![KycStep {
                            status: Some("VERIFIED".into()),
                            attempt_status: Some("SUCCESSFUL".into()),
                            after_seconds: Some(at(i)),
                            ..KycStep::default()
                        }],
                        ..KycSpec::default()
                    }),
                    ..UserSpec::default()
                })
                .collect(),
        )
        .map_err(|e| anyhow::anyhow!("sandbox users: {e}"))?;
    p100.sandbox()
        .add_sepa_transfers(
            transfers
                .iter()
                .enumerate()
                .map(|(i, id)| SepaSpec {
                    id: Some(id.clone()),
                    owner: "partner".into(),
                    amount: "10".parse().expect("a decimal"),
                    currency: "eur".into(),
                    after_seconds: Some(at(i + 13)),
                    ..SepaSpec::default()
                })
                .collect(),
        )
        .map_err(|e| anyhow::anyhow!("sandbox transfers: {e}"))?;
    follow(pool, &users, &transfers).await?;

    let started = Instant::now();
    let mut lags = Vec::new();
    loop {
        let log = p100.sandbox().webhook_log();
        let changes: Vec<_> = log
            .iter()
            .filter(|r| {
                (r.route == "kyc" && r.body.contains("\"VERIFIED\""))
                    || (r.route == "sepa-transfer" && r.body.contains("SUCCESSFUL"))
            })
            .collect();
        lags.clear();
        for change in &changes {
            let seen = if change.route == "kyc" {
                seen_kyc(pool, &change.entity_id).await?
            } else {
                seen_sepa(pool, &change.entity_id).await?
            };
            if let Some(seen) = seen {
                let route = if change.route == "kyc" {
                    "kyc"
                } else {
                    "sepa-transfer"
                };
                lags.push((
                    route,
                    (seen - change.changed_at).num_milliseconds().max(0) as f64,
                ));
            }
        }
        if lags.len() == units * 2 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "{} of {} changes reached the local state in 10 minutes",
            lags.len(),
            units * 2
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(daemon);
    p100.shutdown().await?;
    Ok(lags)
}

/// Follows the users and transfers as `users track` and `sepa track` do.
async fn follow(
    pool: &ledger::PgPool,
    users: &[String],
    transfers: &[String],
) -> anyhow::Result<()> {
    let schedule = jobs::schedule::ScheduleFile::default();
    let mut tx = pool.begin().await?;
    ledger::users::track(
        &mut *tx,
        users,
        "bench",
        ledger::intake::FirstJob::QueuedByCaller,
    )
    .await?;
    let mut new_jobs = Vec::new();
    for user in users {
        new_jobs.push(
            jobs::enqueue::new_job(
                jobs::Kind::KycPoll,
                json!({ "user": user }),
                &schedule,
                None,
            )
            .map_err(anyhow::Error::msg)?,
        );
    }
    for id in transfers {
        let amount = "10".parse().expect("a decimal");
        let first = ledger::intake::FirstJob::QueuedByCaller;
        ledger::sepa::track(&mut tx, &ledger::Owner::Partner, id, amount, "eur", first).await?;
        new_jobs.push(
            jobs::enqueue::new_job(
                jobs::Kind::SepaStatus,
                json!({ "transfer": id }),
                &schedule,
                None,
            )
            .map_err(anyhow::Error::msg)?,
        );
    }
    queue::store::enqueue_many(&mut tx, &new_jobs).await?;
    tx.commit().await?;
    Ok(())
}

async fn seen_kyc(pool: &ledger::PgPool, user: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    Ok(ledger::users::kyc_history(pool, user)
        .await?
        .into_iter()
        .find(|(status, _, _, _)| status == "VERIFIED")
        .map(|(_, _, _, at)| at))
}

async fn seen_sepa(pool: &ledger::PgPool, transfer: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    let Some(t) = ledger::sepa::find(pool, transfer).await? else {
        return Ok(None);
    };
    Ok(ledger::sepa::events(pool, t.id)
        .await?
        .into_iter()
        .find(|(status, _, _)| status == "SUCCESSFUL")
        .map(|(_, _, at)| at))
}

/// p50, p99 and max, in ms.
fn percentiles(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: usize| {
        ms.get((ms.len() * q / 100).min(ms.len().saturating_sub(1)))
            .copied()
    };
    (
        at(50).unwrap_or_default(),
        at(99).unwrap_or_default(),
        ms.last().copied().unwrap_or_default(),
    )
}
