//! `p100-recon sandbox`: the built-in P100 for local runs, tests and the demo.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use p100_sandbox::{GeneratorConfig, Sandbox, Scenario, WebhookConfig};
use secrecy::ExposeSecret;

use crate::UsageError;
use crate::cli::SandboxArgs;
use crate::settings::Settings;

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
