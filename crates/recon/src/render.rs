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
    let s = &report.summary;
    let date = report.started_at.format("%Y-%m-%d").to_string();
    let mut o = String::with_capacity(32 * 1024);

    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        o,
        "<title>Reconciliation {} — run {}</title>",
        escape(&date),
        escape(&report.run_id)
    );
    o.push_str("<style>\n");
    o.push_str(CSS);
    o.push_str("</style>\n</head>\n<body>\n<main>\n");

    // Heading.
    let _ = writeln!(
        o,
        "<header>\n<h1>Reconciliation report {}</h1>",
        escape(&date)
    );
    let _ = writeln!(
        o,
        "<p class=\"meta\">Run <code>{}</code> · scope <code>{}</code> · cut-off <strong>{}</strong></p>",
        escape(&report.run_id),
        escape(&report.scope),
        escape(&display_time(&report.cutoff)),
    );
    let _ = writeln!(
        o,
        "<p class=\"meta\">Started {} · finished {} · took {}</p>\n</header>",
        escape(&display_time(&report.started_at)),
        escape(&display_time(&report.finished_at)),
        escape(&duration(&report.started_at, &report.finished_at)),
    );

    // Complete or not.
    if report.complete {
        o.push_str(
            "<div class=\"status-ok\">Complete: every step the run depends on succeeded.</div>\n",
        );
    } else {
        o.push_str("<div class=\"banner\" role=\"alert\">\n<strong>Incomplete report.</strong> Something the run depends on failed; the figures below may miss accounts or transactions.\n");
        if report.incomplete_reasons.is_empty() {
            o.push_str("<ul><li>No reason recorded.</li></ul>\n");
        } else {
            o.push_str("<ul>\n");
            for r in &report.incomplete_reasons {
                let _ = writeln!(o, "<li>{}</li>", escape(r));
            }
            o.push_str("</ul>\n");
        }
        o.push_str("</div>\n");
    }

    // Counts.
    o.push_str("<section>\n<h2>Summary</h2>\n<div class=\"cards\">\n");
    card(
        &mut o,
        "Accounts checked",
        &s.accounts_checked.to_string(),
        "",
    );
    card(&mut o, "Matched", &s.matched.to_string(), "");
    card(
        &mut o,
        "Matched in flight",
        &s.matched_in_flight.to_string(),
        "",
    );
    card(
        &mut o,
        "Discrepancies",
        &s.discrepancies.to_string(),
        if s.discrepancies > 0 { "bad" } else { "good" },
    );
    let over_budget = report.p100.calls > report.p100.budget;
    let used = match report.p100.budget {
        0 => String::new(),
        b => format!(
            "{}% of the budget",
            u128::from(report.p100.calls) * 100 / u128::from(b)
        ),
    };
    card_sub(
        &mut o,
        "P100 calls / budget",
        &format!("{} / {}", report.p100.calls, report.p100.budget),
        if over_budget { "bad" } else { "" },
        &used,
    );
    card(
        &mut o,
        "Jobs failed",
        &report.jobs.failed.to_string(),
        if report.jobs.failed > 0 { "warn" } else { "" },
    );
    card(
        &mut o,
        "Jobs dead",
        &report.jobs.dead.to_string(),
        if report.jobs.dead > 0 { "bad" } else { "" },
    );
    card_sub(
        &mut o,
        "Oldest pending job",
        &age(report.jobs.oldest_pending_age_seconds),
        "",
        &format!("{} s", report.jobs.oldest_pending_age_seconds),
    );
    o.push_str("</div>\n</section>\n");

    // Totals per currency, and the trend beside them.
    o.push_str(
        "<div class=\"row\">\n<section class=\"totals-box\">\n<h2>Totals per currency</h2>\n",
    );
    if s.by_currency.is_empty() {
        o.push_str("<p class=\"none\">No accounts were checked.</p>\n");
    } else {
        o.push_str("<table class=\"totals\">\n<thead><tr><th>Currency</th><th class=\"num\">Provider (P100)</th><th class=\"num\">Ledger</th><th class=\"num\">Delta</th></tr></thead>\n<tbody>\n");
        for c in &s.by_currency {
            let _ = writeln!(
                o,
                "<tr><td class=\"cur\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>{}</tr>",
                escape(&c.currency),
                escape(&shown(c.provider_total, &c.currency)),
                escape(&shown(c.ledger_total, &c.currency)),
                delta_cell(Some(&c.delta), &c.currency),
            );
        }
        o.push_str("</tbody>\n</table>\n");
    }
    o.push_str("</section>\n<section class=\"trend-box\">\n<h2>Trend of the last runs</h2>\n");
    trend_svg(&mut o, report, trend);
    o.push_str("</section>\n</div>\n");

    // Discrepancies by severity.
    let _ = writeln!(
        o,
        "<section>\n<h2>Discrepancies <span class=\"count\">{} listed</span></h2>",
        report.discrepancies.len()
    );
    let mut groups: Vec<(String, &'static str, Vec<&ReportDiscrepancy>)> =
        [Severity::High, Severity::Medium, Severity::Low]
            .into_iter()
            .map(|sev| {
                let label = match sev {
                    Severity::High => "High",
                    Severity::Medium => "Medium",
                    Severity::Low => "Low",
                };
                let members = report
                    .discrepancies
                    .iter()
                    .filter(|d| Severity::parse(&d.severity) == Some(sev))
                    .collect();
                (label.to_string(), sev.as_str(), members)
            })
            .collect();
    let other: Vec<&ReportDiscrepancy> = report
        .discrepancies
        .iter()
        .filter(|d| Severity::parse(&d.severity).is_none())
        .collect();
    if !other.is_empty() {
        groups.push(("Other severity".to_string(), "other", other));
    }
    for (label, class, members) in &groups {
        let _ = writeln!(
            o,
            "<h3 id=\"severity-{class}\"><span class=\"sev {class}\">{}</span> <span class=\"count\">{}</span></h3>",
            escape(label),
            members.len()
        );
        if members.is_empty() {
            o.push_str("<p class=\"none\">None.</p>\n");
            continue;
        }
        discrepancy_table(&mut o, members, &report.started_at, class == &"other");
    }
    o.push_str("</section>\n");

    // Unmatched transactions.
    let _ = writeln!(
        o,
        "<section>\n<h2>Unmatched transactions <span class=\"count\">{}</span></h2>",
        report.unmatched_transactions.len()
    );
    if report.unmatched_transactions.is_empty() {
        o.push_str("<p class=\"none\">None.</p>\n");
    } else {
        o.push_str("<table>\n<thead><tr><th>P100 transaction</th><th>Local reference</th><th>Owner / user</th><th>Currency</th><th class=\"num\">Amount</th><th>Class</th><th>Status</th></tr></thead>\n<tbody>\n");
        for u in &report.unmatched_transactions {
            let _ = writeln!(
                o,
                "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"cur\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
                opt_text(u.provider_tx_id.as_deref()),
                opt_text(u.reference.as_deref()),
                owner_cell(&u.owner, u.external_user_id.as_deref()),
                escape(&u.currency),
                escape(&shown(u.amount, &u.currency)),
                escape(&u.class),
                escape(&u.status),
            );
        }
        o.push_str("</tbody>\n</table>\n");
    }
    o.push_str("</section>\n");

    let _ = writeln!(
        o,
        "<footer>Generated for run <code>{}</code>. <code>reconciliation.json</code> is the contract; amounts here are in each currency's decimal places (never rounded: the JSON and CSV keep P100's exact strings), times are UTC.</footer>",
        escape(&report.run_id)
    );
    o.push_str("</main>\n</body>\n</html>\n");
    o
}

const CSS: &str = r#"
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

fn card(o: &mut String, label: &str, value: &str, class: &str) {
    card_sub(o, label, value, class, "");
}

fn card_sub(o: &mut String, label: &str, value: &str, class: &str, sub: &str) {
    let _ = write!(
        o,
        "<div class=\"card {class}\"><div class=\"k\">{}</div><div class=\"v\">{}</div>",
        escape(label),
        escape(value)
    );
    if !sub.is_empty() {
        let _ = write!(o, "<div class=\"s\">{}</div>", escape(sub));
    }
    o.push_str("</div>\n");
}

fn discrepancy_table(
    o: &mut String,
    members: &[&ReportDiscrepancy],
    now: &DateTime<Utc>,
    show_severity: bool,
) {
    o.push_str("<table class=\"discrepancies\">\n<colgroup><col class=\"c-id\"><col class=\"c-owner\"><col class=\"c-cur\"><col class=\"c-class\"><col class=\"c-subject\"><col class=\"c-amount\"><col class=\"c-amount\"><col class=\"c-amount\"><col class=\"c-state\"><col class=\"c-seen\"><col class=\"c-detail\"><col class=\"c-expl\"></colgroup>\n<thead><tr><th>Id</th><th>Owner</th><th>Cur.</th><th>Class</th><th>Subject</th><th class=\"num\">Provider</th><th class=\"num\">Ledger</th><th class=\"num\">Delta</th><th>State</th><th>First seen</th><th>Detail</th><th>Explanations</th></tr></thead>\n<tbody>\n");
    for d in members {
        let class = if show_severity {
            format!(
                "{}<div class=\"sub\">severity {}</div>",
                escape(&d.class),
                escape(&d.severity)
            )
        } else {
            escape(&d.class)
        };
        let state_class = match d.state.as_str() {
            "open" | "acknowledged" | "resolved" => d.state.as_str(),
            _ => "",
        };
        let currency = d.currency.as_deref().unwrap_or("");
        let _ = writeln!(
            o,
            "<tr id=\"d-{id}\"><td class=\"mono\">{id}</td><td class=\"wrap\">{owner}</td><td class=\"cur\">{cur}</td><td class=\"cls\">{class}</td><td class=\"mono wrap\">{subject}</td><td class=\"num\">{provider}</td><td class=\"num\">{ledger}</td>{delta}<td><span class=\"state {state_class}\">{state}</span></td><td class=\"when\" title=\"{seen_full}\">{seen}<div class=\"sub\">{age}</div></td><td class=\"detail\">{detail}</td><td class=\"expl\">{expl}</td></tr>",
            id = escape(&d.id),
            owner = owner_cell(&d.owner, d.external_user_id.as_deref()),
            cur = opt_text(d.currency.as_deref()),
            subject = opt_text(d.subject.as_deref()),
            provider = opt_text(d.provider_balance.map(|v| shown(v, currency)).as_deref()),
            ledger = opt_text(d.ledger_balance.map(|v| shown(v, currency)).as_deref()),
            delta = delta_cell(d.delta.as_ref(), currency),
            state = escape(&d.state),
            seen = escape(&d.first_seen_at.format("%Y-%m-%d").to_string()),
            seen_full = escape(&display_time(&d.first_seen_at)),
            age = escape(&since(&d.first_seen_at, now)),
            detail = opt_text(d.detail.as_deref()),
            expl = explanations_cell(d),
        );
    }
    o.push_str("</tbody>\n</table>\n");
}

fn explanations_cell(d: &ReportDiscrepancy) -> String {
    if d.explanations.is_empty() {
        return "<span class=\"null\">—</span>".to_string();
    }
    let mut s = String::from("<ul class=\"expl\">");
    for e in &d.explanations {
        let _ = write!(
            s,
            "<li><span class=\"mono\">{}</span><br><code>{}</code> <span class=\"num\">{}</span></li>",
            escape(&e.provider_tx_id),
            escape(&e.class),
            escape(&shown(e.amount, d.currency.as_deref().unwrap_or("")))
        );
    }
    s.push_str("</ul>");
    s
}

fn owner_cell(owner: &str, user: Option<&str>) -> String {
    match user {
        Some(u) => format!(
            "<span class=\"sub\">{}</span> <span class=\"mono\">{}</span>",
            escape(owner),
            escape(u)
        ),
        None => escape(owner),
    }
}

fn delta_cell(delta: Option<&Decimal>, currency: &str) -> String {
    match delta {
        None => "<td class=\"num\"><span class=\"null\">—</span></td>".to_string(),
        Some(d) if d.is_zero() => format!(
            "<td class=\"num delta-zero\">{}</td>",
            escape(&shown(*d, currency))
        ),
        Some(d) => format!(
            "<td class=\"num delta-nonzero\">{}</td>",
            escape(&shown(*d, currency))
        ),
    }
}

fn opt_text(s: Option<&str>) -> String {
    match s {
        Some(s) => escape(s),
        None => "<span class=\"null\">—</span>".to_string(),
    }
}

/// The trend as an inline SVG bar chart: discrepancies per run, oldest left.
fn trend_svg(o: &mut String, report: &Report, trend: &[TrendPoint]) {
    let mut points: Vec<&TrendPoint> = trend.iter().collect();
    points.sort_by(|a, b| {
        a.started_at
            .cmp(&b.started_at)
            .then_with(|| a.run_id.cmp(&b.run_id))
    });
    let points = &points[points.len().saturating_sub(TREND_RUNS)..];
    if points.is_empty() {
        o.push_str("<p class=\"none\">No earlier runs recorded.</p>\n");
        return;
    }

    const SLOT: u64 = 50;
    const BAR: u64 = 30;
    const LEFT: u64 = 4;
    const TOP: u64 = 24; // room for the value above the tallest bar
    const PLOT: u64 = 110; // height of the tallest bar
    const BELOW: u64 = 50; // dates, accounts, "incomplete"
    let n = points.len() as u64;
    let width = LEFT * 2 + n * SLOT;
    let height = TOP + PLOT + BELOW;
    let base = TOP + PLOT;
    let max = points
        .iter()
        .map(|p| p.discrepancies)
        .max()
        .unwrap_or(0)
        .max(1);

    o.push_str("<div class=\"trend\">\n");
    let _ = writeln!(
        o,
        "<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Discrepancies per run, oldest left\" font-family=\"system-ui, DejaVu Sans, Arial, sans-serif\">"
    );
    o.push_str("<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fdecea\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#b42318\" stroke-width=\"2.5\"/></pattern></defs>\n");
    // Baseline and a faint line at the maximum.
    let _ = writeln!(
        o,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{}\" y2=\"{TOP}\" stroke=\"#eef1f4\"/><line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#8c959f\"/>",
        width - LEFT,
        width - LEFT
    );
    for (i, p) in points.iter().enumerate() {
        let x0 = LEFT + i as u64 * SLOT;
        let cx = x0 + SLOT / 2;
        let bx = cx - BAR / 2;
        // Bar heights are the only figures computed through a float, from u64 counts.
        let mut h = ((p.discrepancies as f64 / max as f64) * PLOT as f64).round() as u64;
        if p.discrepancies > 0 {
            h = h.max(2);
        }
        let current = p.run_id == report.run_id;
        let fill = if !p.complete {
            "url(#hatch)"
        } else if current {
            "#1f5fbf"
        } else {
            "#7fa3d9"
        };
        let stroke = if p.complete { "none" } else { "#b42318" };
        let when = p.started_at.format("%m-%d").to_string();
        let _ = writeln!(
            o,
            "<g><title>{} · {} · {} discrepancies · {} accounts checked{}</title>",
            escape(&p.run_id),
            escape(&display_time(&p.started_at)),
            p.discrepancies,
            p.accounts_checked,
            if p.complete { "" } else { " · incomplete" }
        );
        if h > 0 {
            let _ = writeln!(
                o,
                "<rect x=\"{bx}\" y=\"{}\" width=\"{BAR}\" height=\"{h}\" rx=\"2\" fill=\"{fill}\" stroke=\"{stroke}\"/>",
                base - h
            );
        }
        let _ = writeln!(
            o,
            "<text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"700\" fill=\"#1f2328\">{}</text>",
            base - h - 6,
            p.discrepancies
        );
        let weight = if current { "700" } else { "400" };
        let _ = writeln!(
            o,
            "<text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" font-weight=\"{weight}\" fill=\"#1f2328\">{}</text>",
            base + 16,
            escape(&when)
        );
        let _ = writeln!(
            o,
            "<text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#59636e\">{}</text>",
            base + 31,
            p.accounts_checked
        );
        if !p.complete {
            let _ = writeln!(
                o,
                "<text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" font-size=\"9\" font-weight=\"700\" fill=\"#b42318\">incompl.</text>",
                base + 46
            );
        }
        o.push_str("</g>\n");
    }
    o.push_str("</svg>\n");
    let _ = writeln!(
        o,
        "<p class=\"legend\">Discrepancies found per run, last {} runs, oldest left{}. Under each bar: start date (UTC, month-day) and accounts checked. Hatched red: incomplete run.</p>\n</div>",
        points.len(),
        if points.iter().any(|p| p.run_id == report.run_id) {
            "; this run in bold"
        } else {
            ""
        }
    );
}

/// Escapes text for HTML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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

fn display_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn opt_decimal(d: &Option<Decimal>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// `1 d 3 h`, `5 m 12 s`, … .
fn age(seconds: u64) -> String {
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

fn duration(from: &DateTime<Utc>, to: &DateTime<Utc>) -> String {
    match (*to - *from).to_std() {
        Ok(d) => age(d.as_secs()),
        Err(_) => "?".to_string(),
    }
}

fn since(t: &DateTime<Utc>, now: &DateTime<Utc>) -> String {
    match (*now - *t).to_std() {
        Ok(d) => format!("age {}", age(d.as_secs())),
        Err(_) => "after run start".to_string(),
    }
}
