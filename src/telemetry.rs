//! Installs the tracing subscriber once: human lines or JSON, to stderr.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Level filter from `RUST_LOG`, else `info` for us and `warn` for chatty dependencies.
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,reqwest=warn,apalis=warn"))
}

/// Sets up logging; stdout stays free for command output.
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.compact().try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber, which is what we want.
    let _ = result;
}
