//! The console's page frame and the pieces every page shares, through maud: every value is
//! escaped by the template, text from outside is shown with its control characters replaced,
//! amounts with their currency's decimal places ([`recon::money::shown`]), the report's look
//! ([`recon::render::CSS`]) plus the console's own rules.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use rust_decimal::Decimal;

use super::session::Who;

/// The sections of the console, in the order of its navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `/`.
    Overview,
    /// `/discrepancies`.
    Discrepancies,
    /// `/jobs`.
    Jobs,
    /// `/users`.
    Users,
    /// `/sepa`.
    Sepa,
    /// `/exchanges`.
    Exchanges,
    /// `/reports`.
    Reports,
}

const SECTIONS: [(Section, &str, &str); 7] = [
    (Section::Overview, "/", "Overview"),
    (Section::Discrepancies, "/discrepancies", "Discrepancies"),
    (Section::Jobs, "/jobs", "Jobs"),
    (Section::Users, "/users", "Users & KYC"),
    (Section::Sepa, "/sepa", "SEPA transfers"),
    (Section::Exchanges, "/exchanges", "Exchanges"),
    (Section::Reports, "/reports", "Reports"),
];

const CONSOLE_CSS: &str = r#"
nav.top { background: #24292f; color: #fff; }
nav.top .in { max-width: 1480px; margin: 0 auto; padding: 0 16px; display: flex; align-items: center; gap: 4px; flex-wrap: wrap; }
nav.top .brand { font-weight: 700; margin-right: 14px; padding: 10px 0; }
nav.top a { color: #d0d7de; text-decoration: none; padding: 10px 10px; display: inline-block; }
nav.top a.on { color: #fff; box-shadow: inset 0 -3px 0 #fd8c73; }
nav.top .who { margin-left: auto; display: flex; gap: 8px; align-items: center; color: #d0d7de; }
nav.top .who form { display: inline; }
nav.top button { background: none; border: 1px solid #57606a; color: #d0d7de; border-radius: 6px; padding: 3px 10px; cursor: pointer; }
.role { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 11px; background: #57606a; color: #fff; }
form.filters { display: flex; flex-wrap: wrap; gap: 10px; align-items: end; margin: 12px 0; padding: 10px 12px; background: var(--soft); border: 1px solid var(--line); border-radius: 8px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); gap: 2px; }
input, select, textarea, button { font: inherit; }
input[type=text], input[type=password], select, textarea { border: 1px solid var(--line); border-radius: 6px; padding: 5px 8px; background: #fff; }
textarea { width: 100%; min-height: 64px; }
button.act { background: #1f883d; color: #fff; border: 1px solid #1a7f37; border-radius: 6px; padding: 5px 14px; cursor: pointer; font-weight: 600; }
button.act.warn { background: #bf8700; border-color: #9a6700; }
button.act.danger { background: #cf222e; border-color: #a40e26; }
button.plain { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 5px 14px; cursor: pointer; }
.actions { display: flex; flex-wrap: wrap; gap: 16px; margin: 14px 0; }
.actions form { flex: 1 1 320px; max-width: 520px; border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.actions form h3 { margin-top: 0; }
.readonly { color: var(--muted); font-style: italic; margin: 12px 0; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 8px 0; }
dl.fields dt { color: var(--muted); }
dl.fields dd { margin: 0; overflow-wrap: anywhere; }
pre.json { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; overflow: auto; font-size: 12px; max-height: 360px; white-space: pre-wrap; overflow-wrap: anywhere; }
.note { white-space: pre-wrap; overflow-wrap: anywhere; }
.error-box { margin: 16px 0; padding: 12px 16px; border: 1px solid var(--red); border-left-width: 6px; border-radius: 6px; background: var(--red-bg); }
ol.checklist li { margin-bottom: 6px; }
.login { max-width: 420px; margin: 80px auto; border: 1px solid var(--line); border-radius: 10px; padding: 20px 24px; }
.login input[type=password] { width: 100%; margin: 6px 0 12px; }
td a, dd a { color: var(--blue); }
"#;

/// Text from outside (P100's ids and texts, a person's note): control characters other than
/// line breaks and tabs, and the invisible characters that reorder or hide text (bidi
/// overrides and isolates, zero-width ones), become U+FFFD, so nothing invisible changes what a
/// person reads. The template escapes the rest.
pub fn text(s: &str) -> String {
    s.chars()
        .map(|c| {
            let invisible = matches!(
                c,
                '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
            );
            if (c.is_control() && c != '\n' && c != '\t') || invisible {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// An optional text, or a muted dash.
pub fn opt(s: Option<&str>) -> Markup {
    match s {
        Some(s) => html! { (text(s)) },
        None => html! { span.null { "—" } },
    }
}

/// A time, in UTC.
pub fn when(t: &DateTime<Utc>) -> Markup {
    html! { span.when { (recon::render::display_time(t)) } }
}

/// An optional time.
pub fn opt_when(t: Option<&DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => when(t),
        None => html! { span.null { "—" } },
    }
}

/// An amount with its currency's decimal places.
pub fn amount(a: Option<Decimal>, currency: Option<&str>) -> Markup {
    match a {
        Some(a) => {
            let shown = match currency {
                Some(c) => recon::money::shown(a, c),
                None => a.normalize().to_string(),
            };
            html! { span.num { (shown) } }
        }
        None => html! { span.null { "—" } },
    }
}

/// A currency code.
pub fn currency(c: Option<&str>) -> Markup {
    match c {
        Some(c) => html! { span.cur { (text(c)) } },
        None => html! { span.null { "—" } },
    }
}

/// Whose: the partner, or a user (linked to their page).
pub fn owner(kind: &str, user: Option<&str>) -> Markup {
    match (kind, user) {
        ("user", Some(u)) => html! { a href=(format!("/users/{}", path_part(u))) { (text(u)) } },
        _ => html! { "partner" },
    }
}

/// A value for a URL path segment: every byte but RFC 3986's unreserved ones percent-encoded
/// (a space is `%20`: form encoding's `+` is no space in a path).
pub fn path_part(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A severity pill.
pub fn severity(s: &str) -> Markup {
    let class = match s {
        "high" | "medium" | "low" => s,
        _ => "other",
    };
    html! { span class=(format!("sev {class}")) { (text(s)) } }
}

/// A state pill (discrepancy states are coloured; others plain).
pub fn state(s: &str) -> Markup {
    let class = match s {
        "open" | "acknowledged" | "resolved" => s,
        "dead" | "FAILED" | "NEEDS_REVIEW" | "MISSING_AT_PROVIDER" | "EXPIRED" => "open",
        "failed" | "running" | "SUBMITTING" | "SUBMITTED" => "acknowledged",
        "done" | "SUCCESSFUL" | "COMPLETED" | "VERIFIED" => "resolved",
        _ => "",
    };
    html! { span class=(format!("state {class}")) { (text(s)) } }
}

/// JSON, pretty, escaped.
pub fn json(v: &serde_json::Value) -> Markup {
    let pretty = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    html! { pre.json { (text(&pretty)) } }
}

/// A `<select>` of `options` with `current` selected; the empty option means "any".
pub fn select(name: &str, label: &str, options: &[&str], current: Option<&str>) -> Markup {
    html! {
        label { (label)
            select name=(name) {
                option value="" selected[current.is_none()] { "any" }
                @for o in options {
                    option value=(o) selected[current == Some(*o)] { (text(o)) }
                }
            }
        }
    }
}

/// A filter's value when it is one of `allowed`; any other is noted in `ignored`, so the page
/// says it shows everything rather than silently ignoring it.
pub fn one_of(
    name: &str,
    value: Option<String>,
    allowed: &[&str],
    ignored: &mut Vec<String>,
) -> Option<String> {
    let value = value
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())?;
    if allowed.contains(&value.as_str()) {
        Some(value)
    } else {
        ignored.push(format!(
            "{name} {:?} is not one of {}",
            text(&value),
            allowed.join(", ")
        ));
        None
    }
}

/// The filters a page could not apply.
pub fn ignored(notes: &[String]) -> Markup {
    html! {
        @if !notes.is_empty() {
            div.error-box role="alert" {
                strong { "Not applied: " } (notes.join("; ")) ". The list is not filtered by them."
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf(who: &Who) -> Markup {
    html! { input type="hidden" name="csrf" value=(who.csrf); }
}

fn document(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · p100-recon console" }
                style { (PreEscaped(recon::render::CSS)) (PreEscaped(CONSOLE_CSS)) }
            }
            body { (body) }
        }
    }
}

/// A page of the console for someone signed in.
pub fn page(who: &Who, section: Section, title: &str, body: Markup) -> Response {
    let markup = document(
        title,
        html! {
            nav.top { div.in {
                span.brand { "p100-recon" }
                @for (s, href, label) in SECTIONS {
                    a href=(href) class=[(s == section).then_some("on")] { (label) }
                }
                span.who {
                    (text(&who.name)) " " span.role { (who.role.as_str()) }
                    form method="post" action="/logout" {
                        (csrf(who))
                        button type="submit" { "Sign out" }
                    }
                }
            } }
            main {
                h1 { (title) }
                (body)
            }
        },
    );
    Html(markup.into_string()).into_response()
}

/// The sign-in page.
pub fn login(next: &str, form_token: &str, error: Option<&str>) -> Html<String> {
    let markup = document(
        "Sign in",
        html! {
            main { div.login {
                h1 { "p100-recon console" }
                p.meta { "Sign in with your token from CONSOLE_TOKENS_FILE." }
                @if let Some(e) = error { div.error-box role="alert" { (e) } }
                form method="post" action="/login" {
                    input type="hidden" name="form" value=(form_token);
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Token" }
                    input type="password" id="token" name="token" autocomplete="current-password" required autofocus;
                    button.act type="submit" { "Sign in" }
                }
            } }
        },
    );
    Html(markup.into_string())
}

/// A page saying why something was refused or not found; nothing else on it.
pub fn refusal(status: StatusCode, title: &str, detail: &str) -> Response {
    let markup = document(
        title,
        html! {
            main {
                h1 { (title) }
                div.error-box role="alert" { (detail) }
                p { a href="/" { "Back to the overview" } }
            }
        },
    );
    (status, Html(markup.into_string())).into_response()
}

/// The database failed: said once in the log, and as a page.
pub fn database_error(e: &dyn std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "console: the database failed");
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database did not answer",
        "Nothing was changed. Try again in a moment; the daemon's log says more.",
    )
}

/// What an action could not do, on its own page with a way back.
pub fn conflict(back: &str, title: &str, detail: &str) -> Response {
    let markup = document(
        title,
        html! {
            main {
                h1 { (title) }
                div.error-box role="alert" { (text(detail)) }
                p { a href=(back) { "Back" } }
            }
        },
    );
    (StatusCode::CONFLICT, Html(markup.into_string())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_keeps_line_breaks_and_loses_other_control_characters() {
        assert_eq!(
            text("a\u{1b}[31mb\r\nc\td\0"),
            "a\u{fffd}[31mb\u{fffd}\nc\td\u{fffd}"
        );
        // "100.00" shown reversed by a right-to-left override, and a zero-width space.
        assert_eq!(text("\u{202e}00.001\u{200b}x"), "\u{fffd}00.001\u{fffd}x");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            path_part("alice smith/..?#+é"),
            "alice%20smith%2F..%3F%23%2B%C3%A9"
        );
        assert_eq!(path_part("bob-0002_x.y~"), "bob-0002_x.y~");
    }

    #[test]
    fn hostile_text_is_escaped_everywhere_it_is_shown() {
        let hostile = r#"<script>alert(1)</script>"'=1+2"#;
        let m = html! { (opt(Some(hostile))) (owner("user", Some(hostile))) (severity(hostile)) (state(hostile)) };
        let s = m.into_string();
        assert!(!s.contains("<script>"), "{s}");
        assert!(s.contains("&lt;script&gt;"), "{s}");
        assert!(!s.contains(r#""'"#), "{s}");
    }
}
