//! Installs the tracing subscriber once: human lines or JSON, to stderr.

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Level filter from `RUST_LOG`, else `level` for us and `warn` for chatty dependencies.
/// sqlx's URL parser warns about a parameter it does not know with its value, which may be a
/// password (`?sslpassword=`): errors only from there.
fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},sqlx=warn,sqlx_postgres::options=error,hyper=warn,reqwest=warn,apalis=warn,apalis_core=warn"
        ))
    })
}

/// Sets up logging at `level` (unless `RUST_LOG` says otherwise); stdout stays free for
/// command output.
pub fn init(format: LogFormat, level: &str) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
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
