//! p100-recon: keeps a partner's local ledger in step with its P100 account.
//!
//! This package is the composition root: command line, settings, telemetry, database pool,
//! and the wiring that hands a P100 client and a pool to the jobs. Business rules live in the
//! `jobs`, `ledger` and `p100` crates (see ARCHITECTURE.md).

pub mod budget;
pub mod cli;
pub mod commands;
pub mod console;
pub mod db;
pub mod http;
pub mod settings;
pub mod table;
pub mod telemetry;
pub mod webhooks;
pub mod worker;

/// An error that is the caller's fault (bad argument or setting): exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl From<settings::SettingsError> for UsageError {
    fn from(e: settings::SettingsError) -> Self {
        UsageError(e.0)
    }
}
