//! `p100-recon ledger verify`: the ledger's self-audit.

use clap::Subcommand;
use std::process::ExitCode;

use crate::UsageError;
use crate::settings::Settings;

/// `ledger` subcommands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Self-audit: every posting balanced, every maintained balance equal to its entries.
    /// Exits 1 on any violation.
    Verify {
        #[command(flatten)]
        output: crate::cli::Output,
    },
}

pub async fn run(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    let (postings, accounts, violations) = ledger::balances::verify(&pool).await?;
    if json {
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        println!(
            "{}",
            serde_json::json!({ "postings": postings, "accounts": accounts, "violations": list })
        );
    } else {
        for v in &violations {
            println!("VIOLATION {v}");
        }
        println!(
            "checked {postings} postings and {accounts} accounts: {}",
            if violations.is_empty() {
                "the ledger is consistent".to_owned()
            } else {
                format!("{} violations", violations.len())
            }
        );
    }
    Ok(if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
