//! `p100-recon webhooks list|show`.

use clap::Subcommand;
use std::process::ExitCode;

use ledger::webhooks::{Delivery, DeliveryState, ListFilter};
use p100::webhook::Route;

use crate::UsageError;

use crate::settings::Settings;

/// `webhooks` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Deliveries, newest first.
    List {
        /// Only this route (kyc, user, poa-verification, sepa-transfer, sepa-deposit,
        /// crypto-deposit, crypto-withdrawal, exchange, p2p-transfer, card-transaction).
        #[arg(long, value_name = "ROUTE")]
        route: Option<String>,
        /// Only this state: accepted, rejected or ignored.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        output: crate::cli::Output,
    },
    /// One delivery with its body.
    Show {
        /// The delivery's id (from `webhooks list`).
        id: i64,
        #[command(flatten)]
        output: crate::cli::Output,
    },
}

pub async fn run(settings: &Settings, command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    // Arguments are checked before anything is opened.
    let filter = match &command {
        WebhooksCommand::List {
            route,
            state,
            limit,
            ..
        } => Some(filter(route.as_deref(), state.as_deref(), *limit)?),
        WebhooksCommand::Show { .. } => None,
    };
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    match command {
        WebhooksCommand::List { output, .. } => {
            let rows = ledger::webhooks::list(&pool, &filter.unwrap_or_default()).await?;
            if output.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                use crate::table::Align::{Left, Right};
                let mut t = crate::table::new(&[
                    ("id", Right),
                    ("received", Left),
                    ("route", Left),
                    ("state", Left),
                    ("n", Right),
                    ("entity", Left),
                    ("status", Left),
                    ("effect", Left),
                ]);
                for d in &rows {
                    t.row([
                        d.id.to_string(),
                        d.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        d.route.clone(),
                        d.state.clone(),
                        d.deliveries.to_string(),
                        d.entity_id.clone().unwrap_or_else(|| "-".into()),
                        d.status.clone().unwrap_or_else(|| "-".into()),
                        effect_line(d),
                    ]);
                }
                t.print();
            }
            Ok(ExitCode::SUCCESS)
        }
        WebhooksCommand::Show { id, output } => {
            let Some((d, body)) = ledger::webhooks::show(&pool, id).await? else {
                return Err(
                    UsageError(format!("no webhook delivery {id}; see `webhooks list`")).into(),
                );
            };
            if output.json {
                let mut value = serde_json::to_value(&d)?;
                value["body"] = serde_json::Value::String(body);
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                // Everything but our own words came from outside: shown with its control
                // characters replaced, so a body cannot drive the operator's terminal.
                use super::shown;
                println!("webhook delivery {} to {} ({})", d.id, d.route, d.state);
                println!(
                    "  received   {} ({}×, last {})",
                    d.received_at, d.deliveries, d.last_received_at
                );
                if let Some(entity) = &d.entity_id {
                    println!(
                        "  names      {} {}",
                        shown(entity),
                        shown(d.status.as_deref().unwrap_or(""))
                    );
                }
                if let Some(user) = &d.external_user_id {
                    println!("  user       {}", shown(user));
                }
                if let Some(reason) = &d.reason {
                    println!("  reason     {}", shown(reason));
                }
                println!("  effect     {}", shown(&effect_line(&d)));
                if let Some(at) = d.confirmed_at {
                    println!(
                        "  confirmed  {at} (by job {})",
                        d.job_id.unwrap_or_default()
                    );
                }
                println!("  body ({} bytes):", d.body_bytes);
                println!("{}", shown(&body));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn filter(route: Option<&str>, state: Option<&str>, limit: i64) -> Result<ListFilter, UsageError> {
    if let Some(route) = route
        && Route::parse(route).is_none()
    {
        let names: Vec<&str> = Route::ALL.iter().map(|r| r.name()).collect();
        return Err(UsageError(format!(
            "--route: unknown route {route:?}; use one of {}",
            names.join(", ")
        )));
    }
    let state = match state {
        None => None,
        Some(text) => Some(DeliveryState::parse(text).ok_or_else(|| {
            UsageError(format!(
                "--state: unknown state {text:?}; use accepted, rejected or ignored"
            ))
        })?),
    };
    if limit < 1 {
        return Err(UsageError("--limit must be at least 1".into()));
    }
    Ok(ListFilter {
        route: route.map(str::to_owned),
        state,
        limit,
    })
}

fn effect_line(d: &Delivery) -> String {
    match (&d.effect, d.acted_at, d.state.as_str()) {
        (Some(effect), _, _) => effect.clone(),
        (None, _, "rejected") => d.reason.clone().unwrap_or_default(),
        (None, None, _) => "not acted on yet".to_owned(),
        (None, Some(_), _) => "-".to_owned(),
    }
}
