//! `p100-recon discrepancies list|show|ack|resolve`.

use clap::{Args, Subcommand};
use std::process::ExitCode;

use ledger::discrepancies::{Discrepancy, Filter, StepError};

use crate::UsageError;

use crate::settings::Settings;

/// `discrepancies` subcommands.
#[derive(Debug, Subcommand)]
pub enum DiscrepanciesCommand {
    /// Unresolved discrepancies, most severe and oldest first.
    List {
        /// Only this state (open, acknowledged, resolved).
        #[arg(long, value_parser = ["open", "acknowledged", "resolved"])]
        state: Option<String>,
        /// Only this severity (low, medium, high).
        #[arg(long, value_parser = ["low", "medium", "high"])]
        severity: Option<String>,
        /// Include resolved ones.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        output: crate::cli::Output,
    },
    /// One discrepancy with its event log.
    Show {
        /// Its id.
        id: i64,
        #[command(flatten)]
        output: crate::cli::Output,
    },
    /// Acknowledge an open discrepancy (someone is on it).
    Ack(DiscrepancyStepArgs),
    /// Resolve an open or acknowledged discrepancy.
    Resolve(DiscrepancyStepArgs),
}

/// `discrepancies ack|resolve` arguments.
#[derive(Debug, Args)]
pub struct DiscrepancyStepArgs {
    /// The discrepancy's id.
    pub id: i64,
    /// Why (kept in the event log).
    #[arg(long)]
    pub note: String,
    /// Who [default: $USER].
    #[arg(long)]
    pub actor: Option<String>,
    #[command(flatten)]
    pub output: crate::cli::Output,
}

pub async fn run(settings: &Settings, command: DiscrepanciesCommand) -> anyhow::Result<ExitCode> {
    if let DiscrepanciesCommand::Ack(a) | DiscrepanciesCommand::Resolve(a) = &command
        && a.note.trim().is_empty()
    {
        return Err(UsageError("--note must say why (it is kept in the event log)".into()).into());
    }
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    match command {
        DiscrepanciesCommand::List {
            state,
            severity,
            all,
            limit,
            output,
        } => {
            let filter = Filter {
                state,
                severity,
                all,
                limit,
                ..Filter::default()
            };
            let rows = ledger::discrepancies::list(&pool, &filter).await?;
            if output.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                use crate::table::Align::{Left, Right};
                let mut t = crate::table::new(&[
                    ("id", Right),
                    ("severity", Left),
                    ("state", Left),
                    ("class", Left),
                    ("owner", Left),
                    ("cur", Left),
                    ("delta/amount", Right),
                    ("subject", Left),
                ]);
                for d in &rows {
                    let currency = d.currency.as_deref().unwrap_or("-");
                    t.row([
                        d.id.to_string(),
                        d.severity.to_string(),
                        d.state.to_string(),
                        d.class.to_string(),
                        owner_label(d),
                        currency.to_owned(),
                        d.delta
                            .or(d.amount)
                            .map(|a| recon::money::shown(a, currency))
                            .unwrap_or_default(),
                        d.subject.clone().unwrap_or_default(),
                    ]);
                }
                t.print();
            }
        }
        DiscrepanciesCommand::Show { id, output } => {
            let Some(d) = ledger::discrepancies::show(&pool, id).await? else {
                return Err(
                    UsageError(format!("no discrepancy {id}; see `discrepancies list`")).into(),
                );
            };
            let events = ledger::discrepancies::events(&pool, id).await?;
            if output.json {
                let mut value = serde_json::to_value(&d)?;
                value["events"] = serde_json::to_value(&events)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print_one(&d);
                for e in events {
                    println!(
                        "  {}  {:<13} by {}: {}",
                        e.at,
                        e.event,
                        super::shown(&e.actor),
                        super::shown(&e.note.unwrap_or_default())
                    );
                }
            }
        }
        DiscrepanciesCommand::Ack(args) => return step(&pool, args, "acknowledged").await,
        DiscrepanciesCommand::Resolve(args) => return step(&pool, args, "resolved").await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn step(
    pool: &ledger::PgPool,
    args: DiscrepancyStepArgs,
    to: &'static str,
) -> anyhow::Result<ExitCode> {
    let actor = args.actor.unwrap_or_else(crate::settings::operator_name);
    let mut tx = pool.begin().await?;
    match ledger::discrepancies::step(&mut tx, args.id, to, &actor, args.note.trim()).await {
        Ok(d) => {
            tx.commit().await?;
            if args.output.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print_one(&d);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (StepError::NotFound(_) | StepError::WrongState { .. })) => {
            Err(UsageError(e.to_string()).into())
        }
        Err(StepError::Ledger(e)) => Err(e.into()),
    }
}

fn owner_label(d: &Discrepancy) -> String {
    super::shown(
        &ledger::Owner::from_columns(&d.owner_kind, d.external_user_id.clone())
            .map_or_else(|e| e.to_string(), |o| o.to_string()),
    )
}

fn print_one(d: &Discrepancy) {
    println!(
        "discrepancy {} ({}, {}): {} {} {} — {}",
        d.id,
        d.severity,
        d.state,
        d.class,
        owner_label(d),
        super::shown(d.currency.as_deref().unwrap_or("")),
        super::shown(d.detail.as_deref().unwrap_or(""))
    );
}
