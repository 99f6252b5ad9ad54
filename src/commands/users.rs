//! `p100-recon users track …`.

use std::process::ExitCode;

use crate::UsageError;
use crate::cli::UsersCommand;
use crate::settings::Settings;

pub async fn run(settings: &Settings, command: UsersCommand) -> anyhow::Result<ExitCode> {
    let UsersCommand::Track { ids } = command;
    // Refuse the whole batch on one bad id: nothing else changes.
    if let Some(bad) = ids
        .iter()
        .find(|id| id.trim().is_empty() || id.len() > 200 || id.chars().any(char::is_control))
    {
        return Err(UsageError(format!(
            "invalid externalUserId {bad:?}: must be 1 to 200 printable characters"
        ))
        .into());
    }
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    let added = ledger::users::track(&pool, &ids, "cli").await?;
    println!("tracking {} users ({added} new)", ids.len());
    Ok(ExitCode::SUCCESS)
}
