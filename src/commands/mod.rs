//! One module per command; `run` loads settings, sets up logging and dispatches.

use std::process::ExitCode;

use crate::UsageError;
use crate::cli::Cli;
use crate::cli::Command;
use crate::settings::Settings;

pub mod balances;
pub mod bench;
pub mod bench_cycle;
pub mod bench_reconcile;
pub mod bench_steady;
pub mod bench_webhooks;
pub mod bench_webhooks_latency;
pub mod daemon;
pub mod demo;
pub mod discrepancies;
pub mod enqueue;
pub mod exchanges;
pub mod jobs;
pub mod ledger_verify;
pub mod migrate;
pub mod reconcile;
pub mod sandbox;
pub mod sepa;
pub mod users;
pub mod webhooks;

/// Text that came from outside (P100's ids, an intake row, a person's note) as a terminal
/// line may show it: control characters (ANSI escapes, line breaks) become `?`.
pub(crate) fn shown(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Runs one command line. Errors wrapping [`UsageError`] mean exit status 2.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(cli.global.raw_settings(), cli.global.config.as_deref())
        .map_err(UsageError::from)?;
    // A benchmark logging every job would measure the logger.
    let level = if matches!(cli.command, Command::Bench(_)) {
        "warn"
    } else {
        "info"
    };
    crate::telemetry::init(settings.log_format, level, settings.no_color);
    match cli.command {
        Command::Migrate => migrate::run(&settings).await,
        Command::Users(command) => users::run(&settings, command).await,
        Command::Exchange(exchanges::ExchangeCommand::Submit(args)) => {
            exchanges::submit(&settings, args).await
        }
        Command::Exchanges(command) => exchanges::inspect(&settings, command).await,
        Command::Sepa(command) => sepa::run(&settings, command).await,
        Command::Webhooks(command) => webhooks::run(&settings, command).await,
        Command::Reconcile(args) => reconcile::run(&settings, args).await,
        Command::Discrepancies(command) => discrepancies::run(&settings, command).await,
        Command::Report(args) => reconcile::report(&settings, args).await,
        Command::Ledger(ledger_verify::LedgerCommand::Verify { output }) => {
            ledger_verify::run(&settings, output.json).await
        }
        Command::Sandbox(args) => sandbox::run(&settings, args).await,
        Command::Balances(args) => balances::run(&settings, args).await,
        Command::Demo(args) => demo::run(&settings, args).await,
        Command::Daemon(args) => daemon::run(&settings, args).await,
        Command::Enqueue(args) => enqueue::run(&settings, args).await,
        Command::Jobs(command) => jobs::run(&settings, command).await,
        Command::Bench(command) => bench::run(&settings, command).await,
    }
}

/// Resolves when SIGINT or SIGTERM arrives (orchestrators send SIGTERM).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
