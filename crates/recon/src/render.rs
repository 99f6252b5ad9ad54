//! Renderers of the nightly report: `reconciliation.json` (the SPEC §6 contract),
//! `reconciliation.csv` (one row per discrepancy), `reconciliation.html` (one self-contained
//! page for an operator) and a short summary for a terminal.
//!
//! Amounts are never printed through a float: JSON and CSV carry the model's exact decimal
//! strings; the summary and the HTML show each currency's decimal places (`crate::money`).
//! The HTML page loads nothing: inline CSS, an inline SVG chart, no scripts, no links.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;

use crate::check::Class;
use crate::money::shown;
use crate::report::{Report, ReportDiscrepancy, TrendPoint};
use crate::severity::Severity;

/// Runs the HTML trend shows at most.
pub const TREND_RUNS: usize = 14;

/// The CSV header, in column order.
pub const CSV_HEADER: [&str; 13] = [
    "id",
    "owner",
    "external_user_id",
    "currency",
    "class",
    "subject",
    "provider_balance",
    "ledger_balance",
    "delta",
    "state",
    "severity",
    "first_seen_at",
    "detail",
];

/// `reconciliation.json`: the report as pretty JSON (with a final newline).
pub fn json(report: &Report) -> String {
    // Strings, integers, booleans and decimals written as strings: this cannot fail.
    let mut out = serde_json::to_string_pretty(report).expect("a Report always serialises");
    out.push('\n');
    out
}

/// `reconciliation.csv`: the header, then one row per discrepancy, written by the `csv` crate
/// (RFC 4180 quoting, CRLF line ends; null is an empty field). Text that came from outside
/// (ids, subjects, details) and starts like a formula gets a leading `'`, so a spreadsheet shows
/// it instead of evaluating it; amounts are ours and stay numbers.
pub fn csv(report: &Report) -> String {
    let mut writer = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let rows = std::iter::once(
        CSV_HEADER
            .iter()
            .map(|h| (*h).to_owned())
            .collect::<Vec<_>>(),
    )
    .chain(report.discrepancies.iter().map(|d| {
        vec![
            text_cell(&d.id),
            d.owner.clone(),
            text_cell(d.external_user_id.as_deref().unwrap_or("")),
            text_cell(d.currency.as_deref().unwrap_or("")),
            d.class.clone(),
            text_cell(d.subject.as_deref().unwrap_or("")),
            opt_decimal(&d.provider_balance),
            opt_decimal(&d.ledger_balance),
            opt_decimal(&d.delta),
            d.state.clone(),
            d.severity.clone(),
            time(&d.first_seen_at),
            text_cell(d.detail.as_deref().unwrap_or("")),
        ]
    }));
    for row in rows {
        writer
            .write_record(&row)
            .expect("writing CSV into memory cannot fail");
    }
    let bytes = writer
        .into_inner()
        .expect("flushing CSV into memory cannot fail");
    String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8")
}

/// A text cell a spreadsheet will not evaluate (OWASP's CSV injection advice).
fn text_cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// A short multi-line summary for a terminal.
pub fn summary_text(report: &Report) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Reconciliation run {} (scope {})",
        one_line(&report.run_id),
        one_line(&report.scope)
    );
    let _ = writeln!(out, "  cut-off      {}", time(&report.cutoff));
    if report.complete {
        let _ = writeln!(out, "  status       complete");
    } else {
        let _ = writeln!(out, "  status       INCOMPLETE");
        for reason in &report.incomplete_reasons {
            let _ = writeln!(out, "{INDENT}- {}", one_line(reason));
        }
    }
    let _ = writeln!(
        out,
        "  accounts     {} checked, {} matched, {} matched in flight, {} discrepancies",
        s.accounts_checked, s.matched, s.matched_in_flight, s.discrepancies
    );
    if s.by_currency.is_empty() {
        let _ = writeln!(out, "  totals       none");
    } else {
        let header = ["currency", "provider", "ledger", "delta"].map(String::from);
        let rows: Vec<[String; 4]> = std::iter::once(header)
            .chain(s.by_currency.iter().map(|c| {
                [
                    one_line(&c.currency),
                    shown(c.provider_total, &c.currency),
                    shown(c.ledger_total, &c.currency),
                    shown(c.delta, &c.currency),
                ]
            }))
            .collect();
        let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
        let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
        for (i, r) in rows.iter().enumerate() {
            let (lead, flag) = match i.checked_sub(1).map(|j| &s.by_currency[j]) {
                None => ("  totals       ", ""),
                Some(c) if c.delta.is_zero() => (INDENT, ""),
                Some(_) => (INDENT, "  <- delta"),
            };
            let _ = writeln!(
                out,
                "{lead}{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}{flag}",
                r[0], r[1], r[2], r[3]
            );
        }
    }
    let listed = report.discrepancies.len();
    if listed == 0 {
        let _ = writeln!(out, "  severity     none listed");
    } else {
        let by_severity = severity_counts(&report.discrepancies)
            .into_iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let by_class = class_counts(&report.discrepancies)
            .into_iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>();
        let _ = writeln!(out, "  severity     {by_severity} ({listed} listed)");
        out.push_str(&wrapped("  classes      ", &by_class));
    }
    if !report.unmatched_transactions.is_empty() {
        let _ = writeln!(
            out,
            "  unmatched    {} transactions",
            report.unmatched_transactions.len()
        );
    }
    let _ = writeln!(
        out,
        "  p100         {} calls / {} budget",
        report.p100.calls, report.p100.budget
    );
    let _ = writeln!(
        out,
        "  jobs         {} failed, {} dead, oldest pending {}",
        report.jobs.failed,
        report.jobs.dead,
        age(report.jobs.oldest_pending_age_seconds)
    );
    out
}

/// The summary's value column.
const INDENT: &str = "               ";

/// `items` joined by commas after `lead`, wrapped before 96 columns under the value column.
fn wrapped(lead: &str, items: &[String]) -> String {
    let mut out = String::from(lead);
    let mut col = lead.chars().count();
    for (i, item) in items.iter().enumerate() {
        let sep = if i + 1 < items.len() { "," } else { "" };
        let len = item.chars().count() + sep.len();
        if i > 0 {
            if col + 1 + len > 96 {
                out.push('\n');
                out.push_str(INDENT);
                col = INDENT.len();
            } else {
                out.push(' ');
                col += 1;
            }
        }
        out.push_str(item);
        out.push_str(sep);
        col += len;
    }
    out.push('\n');
    out
}

/// Counts per severity, highest first (unknown spellings last, alphabetically).
fn severity_counts(ds: &[ReportDiscrepancy]) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<(std::cmp::Reverse<Option<Severity>>, &str), usize> = BTreeMap::new();
    for d in ds {
        let key = (
            std::cmp::Reverse(Severity::parse(&d.severity)),
            d.severity.as_str(),
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((_, s), n)| (one_line(s), n))
        .collect()
}

/// Counts per class, in the order of [`Class`] (unknown spellings last, alphabetically).
fn class_counts(ds: &[ReportDiscrepancy]) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<(bool, Option<Class>, &str), usize> = BTreeMap::new();
    for d in ds {
        let class = Class::parse(&d.class);
        *counts
            .entry((class.is_none(), class, d.class.as_str()))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((_, _, s), n)| (one_line(s), n))
        .collect()
}

/// `reconciliation.html`: one self-contained page. `trend` holds the last runs (the current
/// one included if it should show); they are ordered by start and the last
/// [`TREND_RUNS`] are drawn, oldest left.
pub fn html(report: &Report, trend: &[TrendPoint]) -> String {
    crate::page::html(report, trend)
}

/// The report's stylesheet, which the operator console shares.
pub const CSS: &str = r#"
:root {
  --fg: #1f2328; --muted: #59636e; --line: #d8dee4; --soft: #f6f8fa;
  --red: #b42318; --red-bg: #fdecea; --amber: #8a5a00; --amber-bg: #fff4cc;
  --blue: #1f5fbf; --blue-bg: #e8f0fc; --green: #1a7f37; --green-bg: #e6f6ea;
}
* { box-sizing: border-box; }
html { background: #fff; }
body { margin: 0; color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1480px; margin: 0 auto; padding: 22px 16px 36px; }
h1 { font-size: 24px; margin: 0 0 6px; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 14px; margin: 18px 0 8px; }
p { margin: 4px 0; }
.meta { color: var(--muted); }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
.meta code { color: var(--fg); }
.count { color: var(--muted); font-weight: normal; font-size: 13px; margin-left: 4px; }
.none { color: var(--muted); font-style: italic; }
.banner { margin: 16px 0 4px; padding: 12px 16px; border: 1px solid var(--red); border-left-width: 6px;
  border-radius: 6px; background: var(--red-bg); color: var(--red); }
.banner ul { margin: 6px 0 0; padding-left: 22px; color: var(--fg); }
.status-ok { margin: 16px 0 4px; padding: 8px 14px; border-left: 6px solid var(--green);
  border-radius: 6px; background: var(--green-bg); color: var(--green); font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(128px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; background: var(--soft); }
.card .k { color: var(--muted); font-size: 12px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.card .s { color: var(--muted); font-size: 11px; }
.card .v { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; white-space: nowrap; }
.card.bad { background: var(--red-bg); border-color: #f3b8b2; } .card.bad .v { color: var(--red); }
.card.warn { background: var(--amber-bg); border-color: #eed58a; } .card.warn .v { color: var(--amber); }
.card.good .v { color: var(--green); }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
table.totals { width: 100%; }
.row { display: flex; flex-wrap: wrap; gap: 0 40px; align-items: flex-start; }
.totals-box { flex: 1 1 400px; max-width: 500px; min-width: 0; }
.trend-box { flex: 1 1 600px; min-width: 0; }
th, td { padding: 6px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: baseline; }
table.discrepancies { font-size: 12px; table-layout: fixed; }
table.discrepancies th, table.discrepancies td { padding-left: 6px; padding-right: 6px; }
table.discrepancies th { white-space: normal; }
table.discrepancies td { white-space: nowrap; }
table.discrepancies td.wrap, table.discrepancies td.expl, table.discrepancies td.detail,
table.discrepancies td.num { white-space: normal; overflow-wrap: anywhere; }
col.c-id { width: 56px; } col.c-owner { width: 92px; } col.c-cur { width: 50px; }
col.c-class { width: 150px; } col.c-subject { width: 120px; } col.c-amount { width: 92px; }
col.c-state { width: 104px; } col.c-seen { width: 88px; } col.c-expl { width: 136px; }
td.cls { font-weight: 600; }
th { background: var(--soft); font-size: 12px; font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap;
  font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
th.num { font-family: inherit; }
td.delta-nonzero { color: var(--red); font-weight: 700; }
table.totals td.delta-nonzero { background: var(--red-bg) !important; }
td.delta-zero { color: var(--muted); }
.cur { text-transform: uppercase; font-weight: 600; }
.null { color: #8c959f; }
td.detail { white-space: pre-wrap !important; overflow-wrap: anywhere; min-width: 200px; }
.when { white-space: nowrap; }
.sub { color: var(--muted); font-size: 12px; }
.sev { display: inline-block; padding: 1px 10px; border-radius: 999px; font-size: 12px; font-weight: 700;
  text-transform: uppercase; letter-spacing: .04em; }
.sev.high { background: var(--red); color: #fff; }
.sev.medium { background: var(--amber-bg); color: var(--amber); border: 1px solid #eed58a; }
.sev.low { background: var(--blue-bg); color: var(--blue); }
.sev.other { background: var(--soft); color: var(--muted); border: 1px solid var(--line); }
.state { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 11px; border: 1px solid var(--line); }
.state.open { background: var(--red-bg); border-color: #f3b8b2; color: var(--red); }
.state.acknowledged { background: var(--amber-bg); border-color: #eed58a; color: var(--amber); }
.state.resolved { background: var(--green-bg); border-color: #a8dbb5; color: var(--green); }
ul.expl { margin: 0; padding: 0; list-style: none; }
ul.expl li { margin-bottom: 4px; line-height: 1.3; }
ul.expl li .mono { font-weight: 600; }
ul.expl .num { display: inline; }
.trend svg { display: block; max-width: 100%; height: auto; }
.legend { color: var(--muted); font-size: 12px; margin-top: 6px; max-width: 720px; }
footer { margin-top: 32px; padding-top: 10px; border-top: 1px solid var(--line); color: var(--muted); font-size: 12px; }
@media print { main { max-width: none; padding: 0; } .card, tbody tr td { background: none !important; } }
"#;

/// Control characters (newlines, escape sequences) become spaces: one line on a terminal.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// RFC 3339 UTC with milliseconds, as in the JSON.
fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A time as people read it, in UTC.
pub fn display_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn opt_decimal(d: &Option<Decimal>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// `1 d 3 h`, `5 m 12 s`, … .
pub fn age(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} m")
    } else if m > 0 {
        format!("{m} m {s} s")
    } else {
        format!("{s} s")
    }
}

pub(crate) fn duration(from: &DateTime<Utc>, to: &DateTime<Utc>) -> String {
    match (*to - *from).to_std() {
        Ok(d) => age(d.as_secs()),
        Err(_) => "?".to_string(),
    }
}

pub(crate) fn since(t: &DateTime<Utc>, now: &DateTime<Utc>) -> String {
    match (*now - *t).to_std() {
        Ok(d) => format!("age {}", age(d.as_secs())),
        Err(_) => "after run start".to_string(),
    }
}
