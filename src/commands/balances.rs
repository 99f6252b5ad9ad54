//! `p100-recon balances`: read balances through the client, store and print them.

use clap::Args;
use std::process::ExitCode;

use ledger::Owner;
use ledger::snapshots::ProviderBalance;

use crate::UsageError;

use crate::settings::Settings;

/// `balances` arguments.
#[derive(Debug, Args)]
pub struct BalancesArgs {
    /// Whose balances (the partner's when neither is given).
    #[command(flatten)]
    pub owner: crate::cli::OwnerArgs,
    #[command(flatten)]
    pub output: crate::cli::Output,
}

pub async fn run(settings: &Settings, args: BalancesArgs) -> anyhow::Result<ExitCode> {
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let client = settings.p100_client().map_err(UsageError::from)?;
    let owner = args.owner.owner()?.unwrap_or(Owner::Partner);
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    let rows = jobs::balances::snapshot_balances(&client, &pool, &owner).await?;
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&rows))?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// Balances as JSON rows with decimal strings.
pub fn to_json(rows: &[ProviderBalance]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|b| {
                serde_json::json!({
                    "owner": b.owner.kind(),
                    "external_user_id": b.owner.external_user_id(),
                    "currency": b.currency,
                    "amount": b.amount.to_string(),
                    "read_at": b.read_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                })
            })
            .collect(),
    )
}

/// A plain-text table: owner, currency, amount (in the currency's decimal places).
pub fn table(rows: &[ProviderBalance]) -> String {
    use crate::table::Align::{Left, Right};
    let mut t = crate::table::new(&[("owner", Left), ("currency", Left), ("balance", Right)]);
    for b in rows {
        t.row([
            b.owner.to_string(),
            b.currency.clone(),
            recon::money::shown(b.amount, &b.currency),
        ]);
    }
    t.render() + "\n"
}
