//! `p100-recon migrate`.

use std::process::ExitCode;

use crate::UsageError;
use crate::settings::Settings;

pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let pool = crate::db::connect(url, 2).await?;
    crate::db::migrate(&pool).await?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}
