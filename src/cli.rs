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
    /// The ledger's own checks.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Users to follow.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Register locked exchanges to finalize.
    #[command(subcommand)]
    Exchange(ExchangeCommand),
    /// Inspect exchanges.
    #[command(subcommand)]
    Exchanges(ExchangesCommand),
    /// Outgoing SEPA transfers: register one to follow, inspect them.
    #[command(subcommand)]
    Sepa(SepaCommand),
    /// Compare P100's balances with the ledger now (queued for the daemon; --wait waits).
    Reconcile(ReconcileArgs),
    /// The discrepancy workflow: list, show, acknowledge, resolve.
    #[command(subcommand)]
    Discrepancies(DiscrepanciesCommand),
    /// Write (or rewrite) the reconciliation report of a day.
    Report(ReportArgs),
    /// Apply database migrations.
    Migrate,
    /// Serve the built-in P100 sandbox until interrupted.
    Sandbox(SandboxArgs),
    /// Fetch balances from P100 through the client, store them as a snapshot, print them.
    Balances(BalancesArgs),
    /// Run the main job end to end on the embedded defaults and print a summary.
    Demo(DemoArgs),
    /// Run the workers, the scheduler and the HTTP endpoint until SIGINT/SIGTERM, then drain.
    Daemon(DaemonArgs),
    /// Enqueue one job. A unit that already has a live job gets that job brought forward.
    Enqueue(EnqueueArgs),
    /// Inspect and steer the job queue.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Measurements; each prints one JSON line with its figure and a baseline from the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The inbox of P100's webhook deliveries: what each named and what it led to.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

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
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// One delivery with its body.
    Show {
        /// The delivery's id (from `webhooks list`).
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `daemon` arguments.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Schedule and per-kind limits [default: jobs/schedule.toml, else the built-in copy].
    #[arg(long, value_name = "FILE")]
    pub schedule: Option<PathBuf>,
    /// How long shutdown waits for in-flight jobs before leaving them to be rescued.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub grace: String,
    /// How long a claimed job stays claimed without renewal (a crashed daemon's jobs return
    /// to the queue after this).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub lease: String,
    /// Lease renewal and rescue cadence.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub heartbeat: String,
    /// Idle poll interval (NOTIFY wakes workers at once; this is the safety net).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub poll_interval: String,
    /// Finished (done, cancelled) jobs are deleted after this age.
    #[arg(long, default_value = "168h", value_name = "DURATION")]
    pub prune_done_after: String,
    /// Dead jobs are deleted after this age.
    #[arg(long, default_value = "720h", value_name = "DURATION")]
    pub prune_dead_after: String,
    /// Workers per job kind in this process.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub workers_per_kind: usize,
    /// Only these job kinds (comma-separated) [default: all].
    #[arg(long, value_name = "KINDS")]
    pub kinds: Option<String>,
    /// Most database connections of the pool (default: sized from P100_MAX_RPS, 20–100); with
    /// several replicas, keep their sum under the server's max_connections.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
}

/// `enqueue` arguments.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Job kind (e.g. noop).
    pub kind: String,
    /// The job's arguments as JSON (e.g. '{"sleep_ms": 100}').
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub args: String,
    /// The unit the job works on, for kinds that take one as `unit` (at most one live job per unit).
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,
    /// The partner's history or balances (tx_sync, reconcile).
    #[arg(long, conflicts_with = "user")]
    pub partner: bool,
    /// One user (tx_sync, kyc_poll, reconcile).
    #[arg(long, value_name = "EXTERNAL_USER_ID")]
    pub user: Option<String>,
    /// An exchange, by local id or lockId (exchange_finalize).
    #[arg(long, value_name = "ID")]
    pub exchange: Option<String>,
    /// The day of a report (report), YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,
    /// A SEPA transfer, by transferId (sepa_status).
    #[arg(long, value_name = "ID")]
    pub transfer: Option<String>,
    /// Not before this time: RFC 3339 (2026-11-26T02:00:00Z) or a delay from now (90s, 5m).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Wait for the run to end; exit 0 if it completed, 1 if it failed or went dead.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit 1).
    #[arg(
        long,
        default_value = "10m",
        value_name = "DURATION",
        requires = "wait"
    )]
    pub wait_timeout: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `exchange` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExchangeCommand {
    /// Register a locked exchange; prints its local id and queues its finalization.
    Submit(ExchangeSubmitArgs),
}

/// `exchange submit` arguments.
#[derive(Debug, Args)]
pub struct ExchangeSubmitArgs {
    /// The partner's own balances.
    #[arg(long, conflicts_with = "user", required_unless_present = "user")]
    pub partner: bool,
    /// A user's balances (recorded as NEEDS_REVIEW: P100 documents no user-level execute path).
    #[arg(long, value_name = "EXTERNAL_USER_ID")]
    pub user: Option<String>,
    /// P100's lockId.
    #[arg(long)]
    pub lock_id: String,
    /// Source currency.
    #[arg(long = "from", value_name = "CUR")]
    pub from: String,
    /// Target currency.
    #[arg(long = "to", value_name = "CUR")]
    pub to: String,
    /// Amount in the source currency.
    #[arg(long, value_name = "DEC")]
    pub amount: String,
    /// Lock expiry (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub expires_at: String,
}

/// `reconcile` arguments.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Only the partner's balances.
    #[arg(long, conflicts_with = "user")]
    pub partner: bool,
    /// Only this user's balances.
    #[arg(long, value_name = "EXTERNAL_USER_ID")]
    pub user: Option<String>,
    /// Sync the histories first (as the nightly chain does).
    #[arg(long)]
    pub sync: bool,
    /// Wait for the run; exit 0 if it completed, 1 if it failed.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit 1).
    #[arg(long, default_value = "30m", value_name = "DURATION")]
    pub wait_timeout: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `discrepancies` subcommands.
#[derive(Debug, Subcommand)]
pub enum DiscrepanciesCommand {
    /// Unresolved discrepancies, most severe and oldest first.
    List {
        /// Only this state (open, acknowledged, resolved).
        #[arg(long, value_parser = ["open", "acknowledged", "resolved"])]
        state: Option<String>,
        /// Only this severity (low, medium, high).
        #[arg(long, value_parser = ["low", "medium", "high"])]
        severity: Option<String>,
        /// Include resolved ones.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// One discrepancy with its event log.
    Show {
        /// Its id.
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an open discrepancy (someone is on it).
    Ack(DiscrepancyStepArgs),
    /// Resolve an open or acknowledged discrepancy.
    Resolve(DiscrepancyStepArgs),
}

/// `discrepancies ack|resolve` arguments.
#[derive(Debug, Args)]
pub struct DiscrepancyStepArgs {
    /// The discrepancy's id.
    pub id: i64,
    /// Why (kept in the event log).
    #[arg(long)]
    pub note: String,
    /// Who [default: $USER].
    #[arg(long)]
    pub actor: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The day (UTC) whose last reconciliation run is described [default: today].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,
    /// Where to write [default: REPORT_DIR].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the report JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// `sepa` subcommands.
#[derive(Debug, Subcommand)]
pub enum SepaCommand {
    /// Register an outgoing SEPA transfer to follow: places a ledger hold and queues its
    /// status checks.
    Track(SepaTrackArgs),
    /// Transfers, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// One transfer (transferId) with its status history.
    Show {
        /// P100's transferId.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Release the hold of a transfer P100 never showed (MISSING_AT_PROVIDER); it is no
    /// longer followed.
    Release {
        /// P100's transferId.
        id: String,
        /// Why (kept in the transfer's history).
        #[arg(long)]
        note: String,
        /// Who [default: the operator's login name].
        #[arg(long)]
        actor: Option<String>,
    },
}

/// `sepa track` arguments.
#[derive(Debug, Args)]
pub struct SepaTrackArgs {
    /// P100's transferId (as returned by Create a SEPA Transfer).
    pub transfer_id: String,
    /// Debits the partner's balance.
    #[arg(long, conflicts_with = "user", required_unless_present = "user")]
    pub partner: bool,
    /// Debits this user's balance.
    #[arg(long, value_name = "EXTERNAL_USER_ID")]
    pub user: Option<String>,
    /// Amount sent (without P100's fee).
    #[arg(long, value_name = "DEC")]
    pub amount: String,
    /// Currency (eur).
    #[arg(long, value_name = "CUR")]
    pub currency: String,
}

/// `exchanges` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExchangesCommand {
    /// Exchanges, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// One exchange (local id or lockId) with its state history.
    Show {
        /// Local id or lockId.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `users` subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Start following users: their KYC is polled and their history synced by the sweeps.
    Track {
        /// The partner's ids of the users (externalUserId).
        #[arg(required = true, value_name = "EXTERNAL_USER_ID")]
        ids: Vec<String>,
    },
    /// Start following the users of a CSV file with a header `external_user_id`; one bad row
    /// refuses the whole file (nothing changes) and names the line.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Tracked users with their KYC as last seen.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON (an array).
        #[arg(long)]
        json: bool,
    },
    /// One user's KYC and its history.
    Show {
        /// The user (externalUserId).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `ledger` subcommands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Self-audit: every posting balanced, every maintained balance equal to its entries.
    /// Exits 1 on any violation.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List(JobsListArgs),
    /// Show one job with its error history.
    Show(JobIdArgs),
    /// Run a failed, dead or cancelled job again now (with a fresh set of attempts).
    Retry(JobIdArgs),
    /// Cancel a job that has not started.
    Cancel(JobIdArgs),
}

/// `jobs list` arguments.
#[derive(Debug, Args)]
pub struct JobsListArgs {
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only these states (pending, running, failed, done, dead, cancelled); repeatable.
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Print JSON (an array).
    #[arg(long)]
    pub json: bool,
}

/// A job id argument.
#[derive(Debug, Args)]
pub struct JobIdArgs {
    /// The job id.
    pub id: i64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// No-op jobs through the project's queue, against a raw batched SKIP LOCKED loop.
    Queue(BenchQueueArgs),
    /// Generated P100 history synced into the ledger through the real client and job, against
    /// a raw COPY of the same rows into the same tables. Runs in a scratch database it drops.
    Ingest(BenchIngestArgs),
    /// One full reconciliation of N accounts (P100 balances served by the sandbox without a
    /// rate limit), against a raw GROUP BY over the same entries.
    Reconcile(BenchReconcileArgs),
    /// One full cycle (every history synced, one reconciliation, the report) of N generated
    /// users through K daemon processes against the sandbox limited to R requests per second,
    /// against the lower bound of P100 calls (SPEC §9.1). Runs in a scratch database it drops.
    Cycle(BenchCycleArgs),
    /// The webhook receiver: deliveries stored and answered per second (against the same HTTP
    /// server answering without storing), with every one counted afterwards; and, with
    /// `--latency`, seconds from a sandbox state change to the local state, with webhooks and
    /// with polling only. Runs in a scratch database it drops.
    Webhooks(BenchWebhooksArgs),
}

/// `bench webhooks` arguments.
#[derive(Debug, Args)]
pub struct BenchWebhooksArgs {
    /// Deliveries to send (one in ten a repeat of an earlier one).
    #[arg(long, default_value_t = 20_000)]
    pub deliveries: usize,
    /// Deliveries in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Also measure the latency from a sandbox change to the local state: this many users
    /// whose KYC progresses and as many SEPA transfers, through a daemon, with webhooks and
    /// with polling only.
    #[arg(long, value_name = "UNITS")]
    pub latency: Option<usize>,
}

/// `bench cycle` arguments.
#[derive(Debug, Args)]
pub struct BenchCycleArgs {
    /// Generated users (1–3 currencies each, histories of 0–60 rows, 1 in 97 over 150).
    #[arg(long, default_value_t = 2_000)]
    pub users: usize,
    /// The sandbox's rate limit, requests per second (the deployment's P100_MAX_RPS).
    #[arg(long, default_value_t = 200)]
    pub rps: u32,
    /// Daemon processes on the one database, sharing the rps budget (P100_BUDGET=deployment).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Instead of one cycle: H hours of the schedule in simulated time (partner sync every
    /// 5 minutes, user sweep every 10, the nightly sync and reconciliation at the end), run in
    /// this process on a generated day of traffic; reports P100 requests per simulated day
    /// against the bound (every new row read once). Use with a small `--users` (e.g. 100).
    #[arg(long)]
    pub steady_hours: Option<u32>,
    /// With `--steady-hours`: partner history rows P100 adds per simulated day.
    #[arg(long, default_value_t = 200_000)]
    pub partner_rows_per_day: u64,
    /// With `--steady-hours`: history rows each user gains per simulated day.
    #[arg(long, default_value_t = 10)]
    pub user_rows_per_day: u64,
    /// With `--steady-hours`: simulated hours run before measuring, so the measured hours sit
    /// inside the daily deep re-read's period as in a long-running deployment.
    #[arg(long, default_value_t = 12)]
    pub warmup_hours: u32,
    /// With `--steady-hours`: how far back each sync reads (`fixed`: 24 h behind the cursor
    /// on every run, the behaviour before the overlap policy).
    #[arg(long, value_enum, default_value_t = BenchOverlap::Policy)]
    pub overlap: BenchOverlap,
}

/// How far back the syncs of `bench cycle --steady-hours` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOverlap {
    /// `tx_sync`'s policy: a minute behind the cursor, a day once a day of P100 time.
    Policy,
    /// 24 h behind the cursor on every run.
    Fixed,
}

/// `bench reconcile` arguments.
#[derive(Debug, Args)]
pub struct BenchReconcileArgs {
    /// (owner, currency) accounts: users × 4 currencies, plus the partner's.
    #[arg(long, default_value_t = 100_000)]
    pub accounts: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// `bench ingest` arguments.
#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// Transactions to generate and sync.
    #[arg(long, default_value_t = 100_000)]
    pub transactions: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// `bench queue` arguments.
#[derive(Debug, Args)]
pub struct BenchQueueArgs {
    /// Jobs to enqueue and process.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Finished jobs placed in the table first (the rate must hold as the table grows).
    #[arg(long, default_value_t = 0)]
    pub preload_done: usize,
    /// Workers in this process.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Rows claimed per fetch (and concurrency per worker).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
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
    /// Admit at most R requests per second, answering 429 with `Retry-After: 1` above it, as
    /// a P100 that enforces a rate limit would.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: Option<u32>,
    /// Deliver P100 webhooks for the sandbox's own progressions (KYC, user status, SEPA
    /// transfers, exchanges, crypto deposits) to this base URL: `U/kyc`, `U/user`,
    /// `U/sepa-transfer`, `U/exchange`, `U/crypto-deposit` (for p100-recon:
    /// http://HOST:PORT/webhooks/p100).
    #[arg(long, value_name = "U", requires = "webhook_token", value_parser = parse_webhook_url)]
    pub webhook_url: Option<String>,
    /// Token sent as the webhooks' `Authorization` header (bare, no `Bearer`).
    #[arg(long, value_name = "T", requires = "webhook_url", value_parser = parse_secret)]
    pub webhook_token: Option<secrecy::SecretString>,
    /// Delay before a failed webhook's first retry; later retries wait 2, 4 and 8 times as
    /// long (P100: 8, 16, 32, 64 s). Fractions allowed, for tests and the demo.
    #[arg(long, value_name = "S", default_value_t = 8.0, value_parser = parse_retry_base)]
    pub webhook_retry_base_secs: f64,
}

/// An absolute http(s) URL.
fn parse_webhook_url(s: &str) -> Result<String, String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(s.to_owned()),
        Ok(_) => Err("must be an http:// or https:// URL".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A secret that `Debug` prints redacted.
fn parse_secret(s: &str) -> Result<secrecy::SecretString, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(secrecy::SecretString::from(s.to_owned()))
    }
}

/// Seconds: positive, at most an hour.
fn parse_retry_base(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        Ok(_) => Err("must be more than 0 and at most 3600 seconds".into()),
        Err(e) => Err(e.to_string()),
    }
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
    /// Database on the configured server to work in, created when missing, emptied at the
    /// start of every run; refused when it holds anything but demo data
    /// [default: p100_recon_demo].
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    fn sandbox_args(flags: &[&str]) -> Result<super::SandboxArgs, clap::Error> {
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
