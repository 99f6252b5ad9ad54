//! `p100-recon sandbox`: the built-in P100 for local runs, tests and the demo.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use p100_sandbox::{GeneratorConfig, Sandbox, Scenario, WebhookConfig};
use secrecy::ExposeSecret;

use crate::UsageError;

use crate::settings::Settings;

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

/// The demo's scenario, embedded so the binary needs no files.
pub const DEMO_SCENARIO: &str = include_str!("../../scenarios/demo.toml");

/// The demo scenario, parsed.
pub fn demo_scenario() -> Scenario {
    Scenario::from_toml_str(DEMO_SCENARIO, std::path::Path::new("scenarios/demo.toml"))
        .expect("the embedded demo scenario is valid (covered by a test)")
}

pub async fn run(settings: &Settings, args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let sandbox = if let Some(users) = args.generate_users {
        Sandbox::generated(GeneratorConfig {
            seed: args.seed,
            users,
            transactions: args.generate_transactions,
            partner_transactions: args.generate_partner_transactions,
            ..GeneratorConfig::default()
        })
    } else if let Some(path) = &args.scenario {
        Sandbox::from_scenario_file(path).map_err(|e| UsageError(e.to_string()))?
    } else {
        Sandbox::from_scenario(demo_scenario())
    };
    // The key: --api-key, else the configured P100 key, else the sandbox's default.
    let sandbox = match (&args.api_key, &settings.p100_api_key) {
        (Some(key), _) => sandbox.with_api_key(key.clone()),
        (None, Some(key)) => sandbox.with_api_key(key.expose_secret().to_owned()),
        (None, None) => sandbox,
    };
    sandbox.set_rate_limit(args.rate_limit);
    // clap makes --webhook-url and --webhook-token come together.
    if let (Some(url), Some(token)) = (&args.webhook_url, &args.webhook_token) {
        sandbox.set_webhooks(Some(WebhookConfig {
            retry_base: Duration::from_secs_f64(args.webhook_retry_base_secs),
            ..WebhookConfig::new(url.clone(), token.expose_secret().to_owned())
        }));
        tracing::info!(
            webhook.url = %url,
            "delivering webhooks to {url} (retries after {} s, doubling)",
            args.webhook_retry_base_secs
        );
    }
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    tracing::info!(addr = %args.addr, "P100 sandbox listening on http://{}", args.addr);
    sandbox
        .serve(listener, super::shutdown_signal())
        .await
        .context("the sandbox server failed")?;
    Ok(ExitCode::SUCCESS)
}
