//! `p100-recon exchange submit` and `exchanges list|show`.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use jobs::exchange_finalize::ExchangeFinalizeArgs;
use jobs::kinds::Kind;
use ledger::Owner;
use ledger::intake::FirstJob;

use crate::UsageError;
use crate::cli::{ExchangeSubmitArgs, ExchangesCommand};
use crate::settings::Settings;

pub async fn submit(settings: &Settings, args: ExchangeSubmitArgs) -> anyhow::Result<ExitCode> {
    let owner = match &args.user {
        Some(id) => Owner::user(id).map_err(|e| UsageError(format!("--user: {e}")))?,
        None => Owner::Partner,
    };
    let currency = |flag: &str, text: &str| {
        p100::Currency::parse(text)
            .map(|c| c.as_str().to_owned())
            .map_err(|e| UsageError(format!("--{flag}: {e}")))
    };
    let (from, to) = (currency("from", &args.from)?, currency("to", &args.to)?);
    if from == to {
        return Err(UsageError("--from and --to must differ".into()).into());
    }
    let amount = p100::amount::parse_operation_amount(&args.amount).map_err(|e| {
        UsageError(format!(
            "--amount {:?}: {e} (expected a positive decimal with at most 8 decimals)",
            args.amount
        ))
    })?;
    let expires_at = DateTime::parse_from_rfc3339(&args.expires_at)
        .map_err(|e| {
            UsageError(format!(
                "--expires-at {:?}: {e} (expected RFC 3339, e.g. 2026-11-26T10:00:30Z)",
                args.expires_at
            ))
        })?
        .to_utc();
    if expires_at <= Utc::now() {
        return Err(UsageError(format!(
            "--expires-at {}: the lock has already expired; lock the exchange again at P100",
            args.expires_at
        ))
        .into());
    }
    if args.lock_id.trim().is_empty() {
        return Err(UsageError("--lock-id must not be empty".into()).into());
    }
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    let schedule = super::daemon::load_schedule(None)?;
    // The exchange and its finalization job commit together.
    let mut tx = pool.begin().await?;
    let new = ledger::exchanges::NewExchange {
        owner: &owner,
        lock_id: args.lock_id.trim(),
        from: &from,
        to: &to,
        amount,
        expires_at,
    };
    let id = match ledger::exchanges::submit(&mut *tx, &new, FirstJob::QueuedByCaller).await {
        Ok(id) => id,
        Err(ledger::Error::Database(sqlx::Error::Database(db))) if db.is_unique_violation() => {
            return Err(UsageError(format!(
                "lock {} is already registered; see `exchanges show {}`",
                args.lock_id, args.lock_id
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let job_args = serde_json::to_value(ExchangeFinalizeArgs {
        v: 0,
        exchange: id.to_string(),
        safety_margin_seconds: None,
    })?;
    let job = jobs::enqueue::new_job(Kind::ExchangeFinalize, job_args, &schedule, None)
        .map_err(UsageError)?;
    queue::store::enqueue_many(&mut tx, &[job]).await?;
    tx.commit().await?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

pub async fn inspect(settings: &Settings, command: ExchangesCommand) -> anyhow::Result<ExitCode> {
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    match command {
        ExchangesCommand::List { limit, json } => {
            let rows = ledger::exchanges::list(&pool, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                use crate::table::Align::{Left, Right};
                let mut t = crate::table::new(&[
                    ("id", Right),
                    ("lockId", Left),
                    ("state", Left),
                    ("amount", Right),
                    ("from", Left),
                    ("to", Left),
                    ("exchangeId", Left),
                ]);
                for e in &rows {
                    t.row([
                        e.id.to_string(),
                        e.lock_id.clone(),
                        e.state.clone(),
                        recon::money::shown(e.amount, &e.currency_from),
                        e.currency_from.clone(),
                        e.currency_to.clone(),
                        e.exchange_id.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                t.print();
            }
        }
        ExchangesCommand::Show { id, json } => {
            let Some(e) = ledger::exchanges::find(&pool, &id).await? else {
                return Err(UsageError(format!("no exchange {id}")).into());
            };
            let events = ledger::exchanges::events(&pool, e.id).await?;
            if json {
                let mut value = serde_json::to_value(&e)?;
                value["events"] = serde_json::json!(
                    events
                        .iter()
                        .map(|(s, n, t)| serde_json::json!({"state": s, "note": n, "at": t}))
                        .collect::<Vec<_>>()
                );
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!(
                    "exchange {} (lock {}): {} {} {} → {}, {}",
                    e.id,
                    e.lock_id,
                    e.amount,
                    e.currency_from,
                    e.currency_to,
                    e.state,
                    e.reason.as_deref().unwrap_or("")
                );
                for (s, n, t) in events {
                    println!("  {t}  {s} {}", n.unwrap_or_default());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
