//! `p100-recon exchange submit` and `exchanges list|show`.

use clap::{Args, Subcommand};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use jobs::exchange_finalize::ExchangeFinalizeArgs;
use jobs::kinds::Kind;
use ledger::intake::FirstJob;

use crate::UsageError;

use crate::settings::Settings;

/// `exchange` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExchangeCommand {
    /// Register a locked exchange; prints its local id and queues its finalization.
    Submit(ExchangeSubmitArgs),
}

/// `exchange submit` arguments.
#[derive(Debug, Args)]
pub struct ExchangeSubmitArgs {
    /// Whose balances: the partner's, or a user's (recorded as NEEDS_REVIEW: P100 documents no
    /// user-level execute path).
    #[command(flatten)]
    pub owner: crate::cli::RequiredOwnerArgs,
    /// P100's lockId.
    #[arg(long)]
    pub lock_id: String,
    /// Source currency.
    #[arg(long = "from", value_name = "CUR")]
    pub from: String,
    /// Target currency.
    #[arg(long = "to", value_name = "CUR")]
    pub to: String,
    /// Amount in the source currency.
    #[arg(long, value_name = "DEC")]
    pub amount: String,
    /// Lock expiry (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub expires_at: String,
}

/// `exchanges` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExchangesCommand {
    /// Exchanges, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        output: crate::cli::Output,
    },
    /// One exchange (local id or lockId) with its state history.
    Show {
        /// Local id or lockId.
        id: String,
        #[command(flatten)]
        output: crate::cli::Output,
    },
}

pub async fn submit(settings: &Settings, args: ExchangeSubmitArgs) -> anyhow::Result<ExitCode> {
    let owner = args.owner.owner()?;
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
        ExchangesCommand::List { limit, output } => {
            let rows = ledger::exchanges::list(&pool, None, limit).await?;
            if output.json {
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
        ExchangesCommand::Show { id, output } => {
            let Some(e) = ledger::exchanges::find(&pool, &id).await? else {
                return Err(UsageError(format!("no exchange {id}")).into());
            };
            let events = ledger::exchanges::events(&pool, e.id).await?;
            if output.json {
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
