//! The command line. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use ledger::Owner;

use crate::UsageError;
use crate::settings::RawSettings;

/// Keeps a partner's ledger in step with its P100 account and proves that the two agree.
#[derive(Debug, Parser)]
#[command(name = "p100-recon", version, propagate_version = true)]
pub struct Cli {
    /// Settings that every command shares.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that override environment variables and the config file.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Config file (default: ./p100-recon.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Postgres URL [env: DATABASE_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// P100 base URL [env: P100_BASE_URL; default: staging].
    #[arg(long, global = true, value_name = "URL")]
    pub p100_base_url: Option<String>,
    /// File holding the P100 API key [env: P100_API_KEY_FILE]. The key itself is read only
    /// from P100_API_KEY, never from a flag, so it cannot show in the process list.
    #[arg(long, global = true, value_name = "FILE")]
    pub p100_api_key_file: Option<String>,
    /// Client-side limit on P100 requests per second for this process [env: P100_MAX_RPS; default 10].
    #[arg(long, global = true, value_name = "N")]
    pub p100_max_rps: Option<String>,
    /// Directory for reports [env: REPORT_DIR; default ./reports].
    #[arg(long, global = true, value_name = "DIR")]
    pub report_dir: Option<String>,
    /// Address for health, metrics and webhooks [env: HTTP_ADDR; default 127.0.0.1:8080].
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub http_addr: Option<String>,
    /// Log format, human or json [env: LOG_FORMAT].
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl GlobalArgs {
    /// The flag layer of the settings.
    pub fn raw_settings(&self) -> RawSettings {
        RawSettings {
            database_url: self.database_url.clone(),
            p100_base_url: self.p100_base_url.clone(),
            p100_api_key_file: self.p100_api_key_file.clone(),
            p100_max_rps: self.p100_max_rps.clone(),
            report_dir: self.report_dir.clone(),
            http_addr: self.http_addr.clone(),
            log_format: self.log_format.clone(),
            ..RawSettings::default()
        }
    }
}

/// `--partner | --user ID` where neither is allowed (the command then means the partner, or
/// everyone, as its help says).
#[derive(Debug, Args, Clone, Default)]
pub struct OwnerArgs {
    /// The partner.
    #[arg(long, conflicts_with = "user")]
    pub partner: bool,
    /// One user, by the partner's externalUserId.
    #[arg(long, value_name = "EXTERNAL_USER_ID")]
    pub user: Option<String>,
}

impl OwnerArgs {
    /// The owner named, checked; `None` when neither flag was given.
    pub fn owner(&self) -> Result<Option<Owner>, UsageError> {
        match (&self.user, self.partner) {
            (Some(id), _) => user(id).map(Some),
            (None, true) => Ok(Some(Owner::Partner)),
            (None, false) => Ok(None),
        }
    }
}

/// `--partner | --user ID`, one of the two required.
#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub struct RequiredOwnerArgs {
    /// The partner.
    #[arg(long)]
    pub partner: bool,
    /// One user, by the partner's externalUserId.
    #[arg(long, value_name = "EXTERNAL_USER_ID")]
    pub user: Option<String>,
}

impl RequiredOwnerArgs {
    /// The owner named, checked.
    pub fn owner(&self) -> Result<Owner, UsageError> {
        match &self.user {
            Some(id) => user(id),
            None => Ok(Owner::Partner),
        }
    }
}

fn user(id: &str) -> Result<Owner, UsageError> {
    Owner::user(id).map_err(|e| UsageError(format!("--user: {e}")))
}

/// `--json`: JSON instead of text (an array for lists).
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct Output {
    /// Print JSON instead of text (an array for lists).
    #[arg(long)]
    pub json: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The ledger's own checks.
    #[command(subcommand)]
    Ledger(crate::commands::ledger_verify::LedgerCommand),
    /// Users to follow.
    #[command(subcommand)]
    Users(crate::commands::users::UsersCommand),
    /// Register locked exchanges to finalize.
    #[command(subcommand)]
    Exchange(crate::commands::exchanges::ExchangeCommand),
    /// Inspect exchanges.
    #[command(subcommand)]
    Exchanges(crate::commands::exchanges::ExchangesCommand),
    /// Outgoing SEPA transfers: register one to follow, inspect them.
    #[command(subcommand)]
    Sepa(crate::commands::sepa::SepaCommand),
    /// Compare P100's balances with the ledger now (queued for the daemon; --wait waits).
    Reconcile(crate::commands::reconcile::ReconcileArgs),
    /// The discrepancy workflow: list, show, acknowledge, resolve.
    #[command(subcommand)]
    Discrepancies(crate::commands::discrepancies::DiscrepanciesCommand),
    /// Write (or rewrite) the reconciliation report of a day.
    Report(crate::commands::reconcile::ReportArgs),
    /// Apply database migrations.
    Migrate,
    /// Serve the built-in P100 sandbox until interrupted.
    Sandbox(crate::commands::sandbox::SandboxArgs),
    /// Fetch balances from P100 through the client, store them as a snapshot, print them.
    Balances(crate::commands::balances::BalancesArgs),
    /// Run the main job end to end on the embedded defaults and print a summary.
    Demo(crate::commands::demo::DemoArgs),
    /// Run the workers, the scheduler and the HTTP endpoint until SIGINT/SIGTERM, then drain.
    Daemon(crate::commands::daemon::DaemonArgs),
    /// Enqueue one job. A unit that already has a live job gets that job brought forward.
    Enqueue(crate::commands::enqueue::EnqueueArgs),
    /// Inspect and steer the job queue.
    #[command(subcommand)]
    Jobs(crate::commands::jobs::JobsCommand),
    /// Measurements; each prints one JSON line with its figure and a baseline from the same run.
    #[command(subcommand)]
    Bench(crate::commands::bench::BenchCommand),
    /// The inbox of P100's webhook deliveries: what each named and what it led to.
    #[command(subcommand)]
    Webhooks(crate::commands::webhooks::WebhooksCommand),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    fn sandbox_args(flags: &[&str]) -> Result<crate::commands::sandbox::SandboxArgs, clap::Error> {
        use clap::Parser;
        let args = ["p100-recon", "sandbox"].iter().chain(flags);
        match super::Cli::try_parse_from(args)?.command {
            super::Command::Sandbox(a) => Ok(a),
            other => panic!("not the sandbox command: {other:?}"),
        }
    }

    #[test]
    fn webhook_url_and_token_come_together_and_the_token_stays_out_of_debug() {
        let url = ["--webhook-url", "http://127.0.0.1:8080/webhooks/p100"];
        let token = ["--webhook-token", "tok-123456"];
        assert!(sandbox_args(&url).is_err());
        assert!(sandbox_args(&token).is_err());
        assert!(sandbox_args(&["--webhook-url", "ftp://x", token[0], token[1]]).is_err());
        let a = sandbox_args(&[url[0], url[1], token[0], token[1]]).unwrap();
        assert_eq!(a.webhook_url.as_deref(), Some(url[1]));
        assert_eq!(a.webhook_retry_base_secs, 8.0);
        assert!(!format!("{a:?}").contains("tok-123456"));
        let a = sandbox_args(&["--webhook-retry-base-secs", "0.25"]).unwrap();
        assert_eq!(a.webhook_retry_base_secs, 0.25);
        assert!(sandbox_args(&["--webhook-retry-base-secs", "0"]).is_err());
        assert!(sandbox_args(&[]).unwrap().webhook_url.is_none());
    }
}
