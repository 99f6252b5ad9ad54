//! `p100-recon demo`: the README's main command.
//!
//! Starts the built-in P100 sandbox when no P100 credentials are configured, migrates the
//! database, reads every owner's balances through the real client into the ledger's
//! provider snapshots, and prints a summary per currency.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use ledger::Owner;
use ledger::snapshots::ProviderBalance;
use p100_sandbox::Sandbox;
use rust_decimal::Decimal;

use crate::UsageError;
use crate::cli::DemoArgs;
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let scenario = super::sandbox::demo_scenario();
    let owners: Vec<Owner> = std::iter::once(Owner::Partner)
        .chain(
            scenario
                .users
                .iter()
                .map(|u| Owner::User(u.external_user_id.clone())),
        )
        .collect();

    // No credentials: serve the built-in sandbox on a free local port for this run.
    let (client, target, _sandbox) = match &settings.p100_api_key {
        Some(_) => (
            settings.p100_client().map_err(UsageError::from)?,
            settings.p100_base_url.to_string(),
            None,
        ),
        None => {
            let running = Sandbox::from_scenario(scenario)
                .spawn()
                .await
                .context("cannot start the built-in P100 sandbox")?;
            let base = running.base_url();
            let config = settings.p100_config(
                base.parse().context("sandbox URL")?,
                p100::ApiKey::new(p100_sandbox::DEFAULT_API_KEY),
            );
            let client = p100::Client::new(config)?;
            (
                client,
                format!("{base} (built-in sandbox; no P100 credentials set)"),
                Some(running),
            )
        }
    };

    let pool = crate::db::connect(url, 4).await?;
    crate::db::migrate(&pool).await?;

    let mut rows: Vec<ProviderBalance> = Vec::new();
    for owner in &owners {
        let read = jobs::balances::snapshot_balances(&client, &pool, owner)
            .await
            .with_context(|| format!("reading balances of {owner}"))?;
        rows.extend(read);
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&super::balances::to_json(&rows))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("P100: {target}");
    println!("Database: {}", crate::settings::redact_url(url));
    println!();
    print!("{}", super::balances::table(&rows));
    println!();
    let mut totals: BTreeMap<&str, Decimal> = BTreeMap::new();
    for b in &rows {
        *totals.entry(b.currency.as_str()).or_default() += b.amount;
    }
    println!("{:<8} {:>24}", "currency", "total at P100");
    for (currency, total) in &totals {
        println!("{currency:<8} {total:>24}");
    }
    println!();
    println!(
        "Read {} balances of {} owners through the P100 client; stored as provider snapshots.",
        rows.len(),
        owners.len()
    );
    Ok(ExitCode::SUCCESS)
}
