//! The command line. Doc comments here are the `--help` text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations.
    Migrate,
    /// Serve the built-in P100 sandbox until interrupted.
    Sandbox(SandboxArgs),
    /// Fetch balances from P100 through the client, store them as a snapshot, print them.
    Balances(BalancesArgs),
    /// Run the main job end to end on the embedded defaults and print a summary.
    Demo(DemoArgs),
}

/// `sandbox` arguments.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8100")]
    pub addr: SocketAddr,
    /// Scenario file (TOML); see crates/p100-sandbox/README.md. Without one (and without
    /// --generate-users) the built-in demo scenario is served.
    #[arg(long, value_name = "FILE", conflicts_with = "generate_users")]
    pub scenario: Option<PathBuf>,
    /// API key the sandbox accepts [default: P100_API_KEY or sandbox-key].
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Serve generated state with this many users instead of a scenario.
    #[arg(long, value_name = "N")]
    pub generate_users: Option<usize>,
    /// Generated user transactions (with --generate-users).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "generate_users"
    )]
    pub generate_transactions: usize,
    /// Generated partner transactions (with --generate-users).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "generate_users"
    )]
    pub generate_partner_transactions: usize,
    /// Generator seed (with --generate-users).
    #[arg(long, default_value_t = 42, requires = "generate_users")]
    pub seed: u64,
}

/// `balances` arguments.
#[derive(Debug, Args)]
pub struct BalancesArgs {
    /// The partner's balances (the default).
    #[arg(long, conflicts_with = "user")]
    pub partner: bool,
    /// One user's balances.
    #[arg(long, value_name = "EXTERNAL_USER_ID")]
    pub user: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
