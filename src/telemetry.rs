//! Installs the tracing subscriber once: human lines or JSON, to stderr.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::span;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{DefaultFields, FormatFields, Writer};

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
/// command output. Human lines are coloured only on a terminal, and never with `no_color`
/// (`NO_COLOR`): a log file or a pipe gets plain text.
pub fn init(format: LogFormat, level: &str, no_color: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder
            .with_ansi(!no_color && std::io::stderr().is_terminal())
            .fmt_fields(LastValueFields)
            .compact()
            .try_init(),
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

/// Human field formatting in which a span field recorded again replaces its earlier value.
/// The client records `p100.request_id` on the job's span after every request; the default
/// formatter would append each one, so a job's line carried every request id of its run.
struct LastValueFields;

impl<'writer> FormatFields<'writer> for LastValueFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        DefaultFields::new().format_fields(writer, fields)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> fmt::Result {
        let mut names = FieldNames(Vec::new());
        fields.record(&mut names);
        for name in names.0 {
            current.fields = without_field(&current.fields, name);
        }
        if !current.fields.is_empty() {
            current.fields.push(' ');
        }
        DefaultFields::new().format_fields(current.as_writer(), fields)
    }
}

struct FieldNames(Vec<&'static str>);

impl Visit for FieldNames {
    fn record_debug(&mut self, field: &Field, _value: &dyn fmt::Debug) {
        self.0.push(field.name());
    }
}

/// `fields` (`a=1 b="x y"`, field names possibly in ANSI italics) without the field `name`.
fn without_field(fields: &str, name: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let bytes = fields.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b' ' if !quoted => {
                kept.push(&fields[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    kept.push(&fields[start..]);
    let plain = |pair: &str| {
        let pair = pair.strip_prefix("\u{1b}[3m").unwrap_or(pair);
        pair.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('=') || rest.starts_with("\u{1b}[0m"))
    };
    kept.into_iter()
        .filter(|pair| !pair.is_empty() && !plain(pair))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_recorded_again_keeps_only_its_last_value() {
        let fields = r#"job.id=7 user.id="a b" p100.request_id="r-1" p100.request_id="r-2""#;
        assert_eq!(
            without_field(fields, "p100.request_id"),
            r#"job.id=7 user.id="a b""#
        );
        let ansi = "\u{1b}[3mjob.id\u{1b}[0m\u{1b}[2m=\u{1b}[0m7 \u{1b}[3mp100.request_id\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"r-1\"";
        assert_eq!(
            without_field(ansi, "p100.request_id"),
            "\u{1b}[3mjob.id\u{1b}[0m\u{1b}[2m=\u{1b}[0m7"
        );
        // A name that only starts like the field stays; quoted spaces do not split.
        assert_eq!(
            without_field(
                r#"p100.request_ids=2 note="p100.request_id=x""#,
                "p100.request_id"
            ),
            r#"p100.request_ids=2 note="p100.request_id=x""#
        );
    }

    #[test]
    fn one_request_id_per_line() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(LastValueFields)
            .compact()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span =
                tracing::info_span!("job", job.id = 1, p100.request_id = tracing::field::Empty);
            let _in = span.enter();
            span.record("p100.request_id", "first");
            span.record("p100.request_id", "second");
            span.record("p100.request_id", "third");
            tracing::info!("job 1 finished");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.matches("p100.request_id").count(), 1, "{out}");
        assert!(out.contains("p100.request_id=\"third\""), "{out}");
        assert!(!out.contains('\u{1b}'), "{out}");
    }
}
