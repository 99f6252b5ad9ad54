//! `p100-recon bench webhooks`: the receiver's throughput with nothing lost, against the same
//! HTTP server answering without storing; with `--latency`, seconds from a sandbox change to the
//! local state through a daemon, with webhooks and with polling only.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::bench::BenchWebhooksArgs;
use crate::UsageError;
use crate::settings::Settings;

const TOKEN: &str = "bench-webhook-token";

pub async fn run(settings: &Settings, args: BenchWebhooksArgs) -> anyhow::Result<ExitCode> {
    if args.deliveries == 0 || args.concurrency == 0 {
        return Err(UsageError("--deliveries and --concurrency must be at least 1".into()).into());
    }
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let latency = args.latency;
    let mut line = super::bench::in_scratch_database(url, |scratch| async move {
        throughput(&scratch, &args).await
    })
    .await?;
    // A database of its own: the throughput run leaves thousands of jobs brought forward.
    if let Some(units) = latency {
        let measured = super::bench::in_scratch_database(url, |scratch| async move {
            super::bench_webhooks_latency::measure(&scratch, units).await
        })
        .await?;
        line.as_object_mut()
            .expect("an object")
            .extend(measured.as_object().expect("an object").clone());
    }
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// The bodies sent: KYC deliveries for distinct users, every tenth a repeat of the one before.
fn bodies(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let user = if i % 10 == 9 { i - 1 } else { i };
            json!({
                "externalUserId": format!("bench-{user:07}"),
                "verificationStatus": "NOT_VERIFIED",
                "attemptStatus": "VERIFICATION",
            })
            .to_string()
        })
        .collect()
}

async fn throughput(url: &str, args: &BenchWebhooksArgs) -> anyhow::Result<serde_json::Value> {
    let pool = crate::db::connect(url, 40).await?;
    crate::db::migrate(&pool).await?;
    // Half the users are followed, so acting on the inbox queues real jobs.
    let tracked: Vec<String> = (0..args.deliveries)
        .step_by(2)
        .map(|i| format!("bench-{i:07}"))
        .collect();
    ledger::users::track(
        &pool,
        &tracked,
        "bench",
        ledger::intake::FirstJob::QueuedByCaller,
    )
    .await?;
    let bodies = bodies(args.deliveries);

    // Baseline: the same server stack answering `{}` after reading the body, storing nothing.
    let bare = axum::Router::new().route(
        "/webhooks/p100/kyc",
        axum::routing::post(|body: axum::body::Bytes| async move {
            std::hint::black_box(body.len());
            axum::Json(json!({}))
        }),
    );
    let (bare_url, bare_stop) = serve(bare).await?;
    let bare_run = send_all(&bare_url, &bodies, args.concurrency).await?;
    let _ = bare_stop.send(true);

    let receiver = crate::webhooks::Receiver {
        pool: pool.clone(),
        token: Some(Arc::new(secrecy::SecretString::from(TOKEN.to_owned()))),
        wake: Arc::new(Notify::new()),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let schedule = Arc::new(crate::commands::daemon::load_schedule(None)?);
    let inbox = tokio::spawn(crate::webhooks::run_inbox(
        pool.clone(),
        schedule,
        receiver.wake.clone(),
        stop_rx,
    ));
    let (receiver_url, receiver_stop) = serve(crate::webhooks::router(receiver)).await?;
    let run = send_all(&receiver_url, &bodies, args.concurrency).await?;
    let _ = receiver_stop.send(true);

    // Everything answered 200 must be in the inbox, and acted on.
    let drain_started = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_deliveries WHERE state = 'accepted' AND acted_at IS NULL",
        )
        .fetch_one(&pool)
        .await?;
        if left == 0 {
            break;
        }
        anyhow::ensure!(
            drain_started.elapsed().as_secs() < 300,
            "{left} deliveries were not acted on within 5 minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let act_drain_s = drain_started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = inbox.await;

    let (rows, counted, ignored, queued): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(deliveries), 0),
                count(*) FILTER (WHERE state = 'ignored'),
                count(*) FILTER (WHERE job_id IS NOT NULL)
           FROM webhook_deliveries",
    )
    .fetch_one(&pool)
    .await?;
    let distinct = bodies
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len() as i64;
    let lost = run.ok as i64 - counted;
    let per_s = run.ok as f64 / run.seconds;
    let bare_per_s = bare_run.ok as f64 / bare_run.seconds;
    pool.close().await;
    Ok(json!({
        "deliveries": args.deliveries,
        "concurrency": args.concurrency,
        "answered_200": run.ok,
        "answered_other": run.failed,
        "accepted_per_s": round(per_s),
        "baseline_http_only_per_s": round(bare_per_s),
        "ratio_to_http_only": round3(per_s / bare_per_s),
        "p99_answer_ms": round(run.p99_ms),
        "baseline_p99_answer_ms": round(bare_run.p99_ms),
        "rows": rows,
        "rows_expected": distinct,
        "deliveries_counted": counted,
        "lost": lost,
        "ignored_untracked": ignored,
        "jobs_brought_forward": queued,
        "act_drain_s": round3(act_drain_s),
    }))
}

struct Run {
    ok: usize,
    failed: usize,
    seconds: f64,
    p99_ms: f64,
}

/// Posts every body with `concurrency` in flight; counts 200s and the rest.
async fn send_all(base: &str, bodies: &[String], concurrency: usize) -> anyhow::Result<Run> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = format!("{base}/webhooks/p100/kyc");
    let started = Instant::now();
    let results: Vec<(bool, f64)> = futures::stream::iter(bodies.iter().cloned())
        .map(|body| {
            let request = client
                .post(&url)
                .header("authorization", TOKEN)
                .header("content-type", "application/json")
                .body(body);
            async move {
                let sent = Instant::now();
                let ok = matches!(request.send().await, Ok(r) if r.status() == 200);
                (ok, sent.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = results.iter().map(|r| r.1).collect();
    ms.sort_by(f64::total_cmp);
    let ok = results.iter().filter(|r| r.0).count();
    Ok(Run {
        ok,
        failed: results.len() - ok,
        seconds,
        p99_ms: ms.get(ms.len() * 99 / 100).copied().unwrap_or_default(),
    })
}

async fn serve(router: axum::Router) -> anyhow::Result<(String, watch::Sender<bool>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.changed().await;
            })
            .await;
    });
    Ok((format!("http://{addr}"), stop_tx))
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
