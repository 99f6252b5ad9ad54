//! `p100-recon bench reconcile --accounts N`: one full reconciliation of N (owner, currency)
//! accounts, P100's balances served by the built-in sandbox without a rate limit, against a
//! raw SQL `GROUP BY` over the same entries in the same run. One JSON line.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use jobs::JobContext;
use jobs::reconcile::ReconcileArgs;
use p100_sandbox::{GeneratorConfig, Sandbox};

use super::bench::BenchReconcileArgs;
use crate::UsageError;
use crate::settings::Settings;

/// Rows per COPY message while seeding.
const SEED_CHUNK: usize = 20_000;
/// When every seeded movement happened (long before any cut-off).
const SEEDED_AT: &str = "2025-01-01 00:00:00+00";

pub async fn run(settings: &Settings, args: BenchReconcileArgs) -> anyhow::Result<ExitCode> {
    if args.accounts < 4 {
        return Err(UsageError("--accounts must be at least 4".into()).into());
    }
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let report_dir = settings.report_dir.clone();
    let line = super::bench::in_scratch_database(url, |scratch| async move {
        bench_in(&scratch, &args, report_dir).await
    })
    .await?;
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

async fn bench_in(
    url: &str,
    args: &BenchReconcileArgs,
    report_dir: std::path::PathBuf,
) -> anyhow::Result<serde_json::Value> {
    let pool = crate::db::connect(url, 8).await?;
    crate::db::migrate(&pool).await?;
    let currencies = GeneratorConfig::default().currencies;
    let users = args.accounts.div_ceil(currencies.len());
    let sandbox = Sandbox::generated(GeneratorConfig {
        seed: args.seed,
        users,
        // About one movement per account, so most balances are not zero.
        transactions: users * currencies.len(),
        partner_transactions: 0,
        currencies: currencies.clone(),
    })
    .spawn()
    .await?;
    seed_ledger(&pool, &sandbox, users, &currencies).await?;

    let ctx = JobContext {
        pool: pool.clone(),
        p100: Some(super::bench::unlimited_client(&sandbox.base_url())?),
        schedule: Arc::default(),
        p100_health: Arc::default(),
        report_dir,
        runs: Default::default(),
    };
    // Peak memory from here on: seeding is not the measured work.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let reconcile_args = ReconcileArgs {
        budget_calls: Some(users as u64 * 2 + 10),
        ..ReconcileArgs::default()
    };
    let started = Instant::now();
    let summary = jobs::reconcile::reconcile(&ctx, &reconcile_args)
        .await
        .map_err(anyhow::Error::msg)?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_mb = super::bench::peak_rss_mb();
    // Every user's accounts, and the partner's (all zero at P100, none in the ledger), all
    // matching: anything else means the run did not do the work being measured.
    let users_accounts = (users * currencies.len()) as i64;
    if summary.accounts_checked < users_accounts
        || summary.matched != summary.accounts_checked
        || !summary.complete
    {
        anyhow::bail!(
            "benchmark invalid: expected at least {users_accounts} accounts, all matching; got {summary:?}"
        );
    }

    // Baseline: the ledger's side alone, as one raw GROUP BY over the same entries.
    let started = Instant::now();
    let mut rows = sqlx::query(
        "SELECT a.owner_kind, a.external_user_id, a.currency, sum(e.amount)
           FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
          WHERE a.owner_kind IN ('partner', 'user') AND e.effective_at <= now()
          GROUP BY 1, 2, 3",
    )
    .fetch(&pool);
    let mut grouped = 0u64;
    while let Some(row) = rows.next().await {
        row?;
        grouped += 1;
    }
    drop(rows);
    let baseline_seconds = started.elapsed().as_secs_f64();

    let round = |x: f64| (x * 100.0).round() / 100.0;
    Ok(serde_json::json!({
        "accounts": summary.accounts_checked,
        "seconds": round(seconds),
        "baseline_seconds": round(baseline_seconds),
        "ratio_to_baseline": round(seconds / baseline_seconds),
        "peak_rss_mb": peak_rss_mb,
        "p100_calls": summary.p100_calls,
        "accounts_with_entries": grouped,
    }))
}

/// The ledger as a long-running partner would have it: one account per user and currency
/// holding the balance the sandbox will report, each from one deposit posting. Written by
/// COPY with the ledger's triggers off (a scratch database; balances are written with their
/// entries so the ledger stays consistent).
async fn seed_ledger(
    pool: &ledger::PgPool,
    sandbox: &p100_sandbox::RunningSandbox,
    users: usize,
    currencies: &[String],
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .context("seeding needs a superuser (the ledger's triggers are switched off)")?;
    let mut accounts = String::new();
    let mut postings = String::new();
    let mut entries = String::new();
    let mut tracked = String::new();
    // Counter-accounts first: one external account per currency.
    let mut next_account: i64 = 1;
    let mut external = Vec::new();
    for c in currencies {
        // Counter-accounts carry no maintained balance (no hot row).
        accounts.push_str(&format!("{next_account}\texternal\t\\N\t{c}\t\\N\n"));
        external.push(next_account);
        next_account += 1;
    }
    copy(
        &mut conn,
        "ledger_accounts (id, owner_kind, external_user_id, currency, balance)",
        &mut accounts,
    )
    .await?;
    let mut next_posting: i64 = 1;
    for u in 0..users {
        let id = p100_sandbox::generated_user_id(u as u64);
        tracked.push_str(&format!("{id}\tbench\t{SEEDED_AT}\n"));
        for (ci, c) in currencies.iter().enumerate() {
            let balance = sandbox.sandbox().balance(&id, c).unwrap_or_default();
            accounts.push_str(&format!("{next_account}\tuser\t{id}\t{c}\t{balance}\n"));
            if !balance.is_zero() {
                postings.push_str(&format!(
                    "{next_posting}\tbench:{id}:{c}\tp100_transaction\tseeded balance\t{SEEDED_AT}\n"
                ));
                entries.push_str(&format!(
                    "{next_posting}\t{next_account}\t{c}\t{balance}\t{SEEDED_AT}\n{next_posting}\t{}\t{c}\t{}\t{SEEDED_AT}\n",
                    external[ci],
                    -balance
                ));
                next_posting += 1;
            }
            next_account += 1;
        }
        if accounts.len() > SEED_CHUNK * 40 || u + 1 == users {
            copy(
                &mut conn,
                "ledger_accounts (id, owner_kind, external_user_id, currency, balance)",
                &mut accounts,
            )
            .await?;
            copy(
                &mut conn,
                "ledger_postings (id, idempotency_key, source, description, effective_at)",
                &mut postings,
            )
            .await?;
            copy(
                &mut conn,
                "ledger_entries (posting_id, account_id, currency, amount, effective_at)",
                &mut entries,
            )
            .await?;
            copy(
                &mut conn,
                "tracked_users (external_user_id, source, queued_at)",
                &mut tracked,
            )
            .await?;
        }
    }
    sqlx::query("SET session_replication_role = DEFAULT")
        .execute(&mut *conn)
        .await?;
    for (table, seq) in [
        ("ledger_accounts", "ledger_accounts_id_seq"),
        ("ledger_postings", "ledger_postings_id_seq"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval('{seq}', (SELECT max(id) FROM {table}))"
        )))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("ANALYZE").execute(&mut *conn).await?;
    Ok(())
}

async fn copy(
    conn: &mut sqlx::PgConnection,
    target: &str,
    rows: &mut String,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut copy = conn
        .copy_in_raw(&format!("COPY {target} FROM STDIN"))
        .await?;
    copy.send(rows.as_bytes()).await?;
    copy.finish().await?;
    rows.clear();
    Ok(())
}
