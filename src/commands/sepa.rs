//! `p100-recon sepa track|list|show`.

use clap::{Args, Subcommand};
use std::process::ExitCode;

use jobs::kinds::Kind;
use jobs::sepa_status::SepaStatusArgs;
use ledger::Owner;
use rust_decimal::Decimal;

use crate::UsageError;

use crate::settings::Settings;

/// `sepa` subcommands.
#[derive(Debug, Subcommand)]
pub enum SepaCommand {
    /// Register an outgoing SEPA transfer to follow: places a ledger hold and queues its
    /// status checks.
    Track(SepaTrackArgs),
    /// Transfers, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        output: crate::cli::Output,
    },
    /// One transfer (transferId) with its status history.
    Show {
        /// P100's transferId.
        id: String,
        #[command(flatten)]
        output: crate::cli::Output,
    },
    /// Release the hold of a transfer P100 never showed (MISSING_AT_PROVIDER); it is no
    /// longer followed.
    Release {
        /// P100's transferId.
        id: String,
        /// Why (kept in the transfer's history).
        #[arg(long)]
        note: String,
        /// Who [default: the operator's login name].
        #[arg(long)]
        actor: Option<String>,
    },
}

/// `sepa track` arguments.
#[derive(Debug, Args)]
pub struct SepaTrackArgs {
    /// P100's transferId (as returned by Create a SEPA Transfer).
    pub transfer_id: String,
    /// Whose balance it debits.
    #[command(flatten)]
    pub owner: crate::cli::RequiredOwnerArgs,
    /// Amount sent (without P100's fee).
    #[arg(long, value_name = "DEC")]
    pub amount: String,
    /// Currency (eur).
    #[arg(long, value_name = "CUR")]
    pub currency: String,
}

pub async fn run(settings: &Settings, command: SepaCommand) -> anyhow::Result<ExitCode> {
    // Arguments are checked before anything is opened.
    let track_args = match &command {
        SepaCommand::Track(args) => Some(validate(args)?),
        _ => None,
    };
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    if let Some(v) = track_args {
        return track(&pool, v).await;
    }
    match command {
        SepaCommand::Track(_) => Ok(ExitCode::SUCCESS),
        SepaCommand::Release { id, note, actor } => {
            if note.trim().is_empty() {
                return Err(UsageError("--note must say why the hold is released".into()).into());
            }
            let actor = actor.unwrap_or_else(crate::settings::operator_name);
            let mut tx = pool.begin().await?;
            match ledger::sepa::release_by_hand(&mut tx, &id, &actor, note.trim()).await {
                Ok(t) => {
                    tx.commit().await?;
                    println!("released the hold of {id} ({} {})", t.amount, t.currency);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ ledger::sepa::ReleaseError::NotFound(_)) => {
                    Err(UsageError(format!("{e}; see `sepa list`")).into())
                }
                Err(e @ ledger::sepa::ReleaseError::WrongStatus { .. }) => {
                    Err(UsageError(e.to_string()).into())
                }
                Err(ledger::sepa::ReleaseError::Ledger(e)) => Err(e.into()),
            }
        }
        SepaCommand::List { limit, output } => {
            let rows = ledger::sepa::list(&pool, None, limit).await?;
            if output.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                use crate::table::Align::{Left, Right};
                let mut table = crate::table::new(&[
                    ("transferId", Left),
                    ("status", Left),
                    ("amount", Right),
                    ("cur", Left),
                    ("hold", Left),
                    ("owner", Left),
                ]);
                for t in &rows {
                    table.row([
                        t.transfer_id.clone(),
                        t.status.clone(),
                        recon::money::shown(t.amount, &t.currency),
                        t.currency.clone(),
                        t.hold_state.clone(),
                        t.owner().map(|o| o.to_string()).unwrap_or_default(),
                    ]);
                }
                table.print();
            }
            Ok(ExitCode::SUCCESS)
        }
        SepaCommand::Show { id, output } => {
            let Some(t) = ledger::sepa::find(&pool, &id).await? else {
                return Err(UsageError(format!(
                    "no SEPA transfer {id} is tracked; see `sepa list`"
                ))
                .into());
            };
            let events = ledger::sepa::events(&pool, t.id).await?;
            if output.json {
                let mut value = serde_json::to_value(&t)?;
                value["events"] = serde_json::json!(
                    events
                        .iter()
                        .map(|(s, n, at)| serde_json::json!({"status": s, "note": n, "at": at}))
                        .collect::<Vec<_>>()
                );
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!(
                    "SEPA transfer {} ({}): {} {} → {}, hold {}{}",
                    t.transfer_id,
                    t.owner().map(|o| o.to_string()).unwrap_or_default(),
                    t.amount,
                    t.currency,
                    t.status,
                    t.hold_state,
                    t.fee.map(|f| format!(", fee {f}")).unwrap_or_default()
                );
                if let Some(error) = &t.error {
                    println!("  P100 error: {error}");
                }
                for (status, note, at) in events {
                    println!("  {at}  {status} {}", note.unwrap_or_default());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

struct Validated {
    owner: Owner,
    amount: Decimal,
    currency: String,
    transfer_id: String,
}

fn validate(args: &SepaTrackArgs) -> Result<Validated, UsageError> {
    let owner = args.owner.owner()?;
    let transfer_id = args.transfer_id.trim().to_owned();
    if transfer_id.is_empty() || transfer_id.len() > 200 {
        return Err(UsageError(
            "the transferId must be 1–200 characters (P100's id of the transfer)".into(),
        ));
    }
    let amount = p100::amount::parse_operation_amount(&args.amount).map_err(|e| {
        UsageError(format!(
            "--amount {:?}: {e} (expected a positive decimal with at most 8 decimals)",
            args.amount
        ))
    })?;
    let currency = p100::Currency::parse(&args.currency)
        .map(|c| c.as_str().to_owned())
        .map_err(|e| UsageError(format!("--currency: {e}")))?;
    Ok(Validated {
        owner,
        amount,
        currency,
        transfer_id,
    })
}

async fn track(pool: &ledger::PgPool, v: Validated) -> anyhow::Result<ExitCode> {
    let schedule = super::daemon::load_schedule(None)?;
    let job_args = serde_json::to_value(SepaStatusArgs {
        transfer: v.transfer_id.clone(),
        ..SepaStatusArgs::default()
    })?;
    let job =
        jobs::enqueue::new_job(Kind::SepaStatus, job_args, &schedule, None).map_err(UsageError)?;
    // The transfer, its hold and its first status check commit together.
    let mut tx = pool.begin().await?;
    let t = match ledger::sepa::track(
        &mut tx,
        &v.owner,
        &v.transfer_id,
        v.amount,
        &v.currency,
        ledger::intake::FirstJob::QueuedByCaller,
    )
    .await
    {
        Ok(t) => t,
        Err(ledger::Error::Database(sqlx::Error::Database(db))) if db.is_unique_violation() => {
            return Err(UsageError(format!(
                "transfer {} is already tracked; see `sepa show {}`",
                v.transfer_id, v.transfer_id
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    queue::store::enqueue_many(&mut tx, &[job]).await?;
    tx.commit().await?;
    println!("{}", t.transfer_id);
    Ok(ExitCode::SUCCESS)
}
