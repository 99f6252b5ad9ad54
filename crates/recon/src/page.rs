//! `reconciliation.html`, through maud: every value is escaped by the template itself, so no
//! field can be forgotten (the page was once assembled with `push_str` and a hand-placed
//! `escape` per value). maud over askama: the page is checked by the compiler with the code
//! that feeds it, it needs no template files beside the crate, and the console can reuse its
//! pieces as plain functions.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use rust_decimal::Decimal;

use crate::money::shown;
use crate::render::{CSS, TREND_RUNS, age, display_time, duration, since};
use crate::report::{Report, ReportDiscrepancy, TrendPoint};
use crate::severity::Severity;

/// The page of one report, with the trend of `trend` (see [`crate::render::html`]).
pub fn html(report: &Report, trend: &[TrendPoint]) -> String {
    let s = &report.summary;
    let date = report.started_at.format("%Y-%m-%d").to_string();
    let over_budget = report.p100.calls > report.p100.budget;
    let used = match report.p100.budget {
        0 => String::new(),
        b => format!(
            "{}% of the budget",
            u128::from(report.p100.calls) * 100 / u128::from(b)
        ),
    };
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Reconciliation " (date) " — run " (report.run_id) }
                style { (PreEscaped(CSS)) }
            }
            body { main {
                header {
                    h1 { "Reconciliation report " (date) }
                    p.meta { "Run " code { (report.run_id) } " · scope " code { (report.scope) }
                        " · cut-off " strong { (display_time(&report.cutoff)) } }
                    p.meta { "Started " (display_time(&report.started_at)) " · finished "
                        (display_time(&report.finished_at)) " · took "
                        (duration(&report.started_at, &report.finished_at)) }
                }
                @if report.complete {
                    div.status-ok { "Complete: every step the run depends on succeeded." }
                } @else {
                    div.banner role="alert" {
                        strong { "Incomplete report." }
                        " Something the run depends on failed; the figures below may miss accounts or transactions."
                        ul {
                            @if report.incomplete_reasons.is_empty() { li { "No reason recorded." } }
                            @for r in &report.incomplete_reasons { li { (r) } }
                        }
                    }
                }
                section {
                    h2 { "Summary" }
                    div.cards {
                        (card("Accounts checked", &s.accounts_checked.to_string(), "", ""))
                        (card("Matched", &s.matched.to_string(), "", ""))
                        (card("Matched in flight", &s.matched_in_flight.to_string(), "", ""))
                        (card("Discrepancies", &s.discrepancies.to_string(),
                            if s.discrepancies > 0 { "bad" } else { "good" }, ""))
                        (card("P100 calls / budget",
                            &format!("{} / {}", report.p100.calls, report.p100.budget),
                            if over_budget { "bad" } else { "" }, &used))
                        (card("Jobs failed", &report.jobs.failed.to_string(),
                            if report.jobs.failed > 0 { "warn" } else { "" }, ""))
                        (card("Jobs dead", &report.jobs.dead.to_string(),
                            if report.jobs.dead > 0 { "bad" } else { "" }, ""))
                        (card("Oldest pending job", &age(report.jobs.oldest_pending_age_seconds), "",
                            &format!("{} s", report.jobs.oldest_pending_age_seconds)))
                    }
                }
                div.row {
                    section.totals-box {
                        h2 { "Totals per currency" }
                        @if s.by_currency.is_empty() {
                            p.none { "No accounts were checked." }
                        } @else {
                            table.totals {
                                thead { tr { th { "Currency" } th.num { "Provider (P100)" } th.num { "Ledger" } th.num { "Delta" } } }
                                tbody {
                                    @for c in &s.by_currency {
                                        tr {
                                            td.cur { (c.currency) }
                                            td.num { (shown(c.provider_total, &c.currency)) }
                                            td.num { (shown(c.ledger_total, &c.currency)) }
                                            (delta_cell(Some(&c.delta), &c.currency))
                                        }
                                    }
                                }
                            }
                        }
                    }
                    section.trend-box {
                        h2 { "Trend of the last runs" }
                        (trend_svg(report, trend))
                    }
                }
                section {
                    h2 { "Discrepancies " span.count { (report.discrepancies.len()) " listed" } }
                    @for (label, class, members) in &severity_groups(report) {
                        h3 id=(format!("severity-{class}")) {
                            span class=(format!("sev {class}")) { (label) } " " span.count { (members.len()) }
                        }
                        @if members.is_empty() {
                            p.none { "None." }
                        } @else {
                            (discrepancy_table(members, &report.started_at, *class == "other"))
                        }
                    }
                }
                section {
                    h2 { "Unmatched transactions " span.count { (report.unmatched_transactions.len()) } }
                    @if report.unmatched_transactions.is_empty() {
                        p.none { "None." }
                    } @else {
                        table {
                            thead { tr { th { "P100 transaction" } th { "Local reference" } th { "Owner / user" }
                                th { "Currency" } th.num { "Amount" } th { "Class" } th { "Status" } } }
                            tbody {
                                @for u in &report.unmatched_transactions {
                                    tr {
                                        td.mono { (opt_text(u.provider_tx_id.as_deref())) }
                                        td.mono { (opt_text(u.reference.as_deref())) }
                                        td { (owner_cell(&u.owner, u.external_user_id.as_deref())) }
                                        td.cur { (u.currency) }
                                        td.num { (shown(u.amount, &u.currency)) }
                                        td { code { (u.class) } }
                                        td { (u.status) }
                                    }
                                }
                            }
                        }
                    }
                }
                footer {
                    "Generated for run " code { (report.run_id) } ". " code { "reconciliation.json" }
                    " is the contract; amounts here are in each currency's decimal places (never rounded: the JSON and CSV keep P100's exact strings), times are UTC."
                }
            } }
        }
    };
    page.into_string()
}

/// Discrepancies grouped high, medium, low, then any severity we do not know.
fn severity_groups(report: &Report) -> Vec<(String, &'static str, Vec<&ReportDiscrepancy>)> {
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
    groups
}

fn card(label: &str, value: &str, class: &str, sub: &str) -> Markup {
    html! {
        div class=(format!("card {class}")) {
            div.k { (label) }
            div.v { (value) }
            @if !sub.is_empty() { div.s { (sub) } }
        }
    }
}

fn discrepancy_table(
    members: &[&ReportDiscrepancy],
    now: &DateTime<Utc>,
    show_severity: bool,
) -> Markup {
    html! {
        table.discrepancies {
            colgroup { col.c-id; col.c-owner; col.c-cur; col.c-class; col.c-subject; col.c-amount;
                col.c-amount; col.c-amount; col.c-state; col.c-seen; col.c-detail; col.c-expl; }
            thead { tr { th { "Id" } th { "Owner" } th { "Cur." } th { "Class" } th { "Subject" }
                th.num { "Provider" } th.num { "Ledger" } th.num { "Delta" } th { "State" }
                th { "First seen" } th { "Detail" } th { "Explanations" } } }
            tbody {
                @for d in members {
                    @let currency = d.currency.as_deref().unwrap_or("");
                    @let state_class = match d.state.as_str() {
                        "open" | "acknowledged" | "resolved" => d.state.as_str(),
                        _ => "",
                    };
                    tr id=(format!("d-{}", d.id)) {
                        td.mono { (d.id) }
                        td.wrap { (owner_cell(&d.owner, d.external_user_id.as_deref())) }
                        td.cur { (opt_text(d.currency.as_deref())) }
                        td.cls {
                            (d.class)
                            @if show_severity { div.sub { "severity " (d.severity) } }
                        }
                        td.mono.wrap { (opt_text(d.subject.as_deref())) }
                        td.num { (opt_text(d.provider_balance.map(|v| shown(v, currency)).as_deref())) }
                        td.num { (opt_text(d.ledger_balance.map(|v| shown(v, currency)).as_deref())) }
                        (delta_cell(d.delta.as_ref(), currency))
                        td { span class=(format!("state {state_class}")) { (d.state) } }
                        td.when title=(display_time(&d.first_seen_at)) {
                            (d.first_seen_at.format("%Y-%m-%d").to_string())
                            div.sub { (since(&d.first_seen_at, now)) }
                        }
                        td.detail { (opt_text(d.detail.as_deref())) }
                        td.expl { (explanations_cell(d)) }
                    }
                }
            }
        }
    }
}

fn explanations_cell(d: &ReportDiscrepancy) -> Markup {
    let currency = d.currency.as_deref().unwrap_or("");
    html! {
        @if d.explanations.is_empty() {
            span.null { "—" }
        } @else {
            ul.expl {
                @for e in &d.explanations {
                    li { span.mono { (e.provider_tx_id) } br; code { (e.class) } " "
                        span.num { (shown(e.amount, currency)) } }
                }
            }
        }
    }
}

fn owner_cell(owner: &str, user: Option<&str>) -> Markup {
    html! {
        @match user {
            Some(u) => { span.sub { (owner) } " " span.mono { (u) } }
            None => { (owner) }
        }
    }
}

fn delta_cell(delta: Option<&Decimal>, currency: &str) -> Markup {
    html! {
        @match delta {
            None => { td.num { span.null { "—" } } }
            Some(d) if d.is_zero() => { td.num.delta-zero { (shown(*d, currency)) } }
            Some(d) => { td.num.delta-nonzero { (shown(*d, currency)) } }
        }
    }
}

fn opt_text(s: Option<&str>) -> Markup {
    html! {
        @match s {
            Some(s) => { (s) }
            None => { span.null { "—" } }
        }
    }
}

/// The trend as an inline SVG bar chart: discrepancies per run, oldest left.
fn trend_svg(report: &Report, trend: &[TrendPoint]) -> Markup {
    let mut points: Vec<&TrendPoint> = trend.iter().collect();
    points.sort_by(|a, b| {
        a.started_at
            .cmp(&b.started_at)
            .then_with(|| a.run_id.cmp(&b.run_id))
    });
    let points = &points[points.len().saturating_sub(TREND_RUNS)..];
    if points.is_empty() {
        return html! { p.none { "No earlier runs recorded." } };
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
    let this_run_shown = points.iter().any(|p| p.run_id == report.run_id);
    html! {
        div.trend {
            svg width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img"
                aria-label="Discrepancies per run, oldest left"
                font-family="system-ui, DejaVu Sans, Arial, sans-serif" {
                defs { pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)" {
                    rect width="6" height="6" fill="#fdecea" {}
                    line x1="0" y1="0" x2="0" y2="6" stroke="#b42318" stroke-width="2.5" {}
                } }
                // Baseline and a faint line at the maximum.
                line x1=(LEFT) y1=(TOP) x2=(width - LEFT) y2=(TOP) stroke="#eef1f4" {}
                line x1=(LEFT) y1=(base) x2=(width - LEFT) y2=(base) stroke="#8c959f" {}
                @for (i, p) in points.iter().enumerate() {
                    @let cx = LEFT + i as u64 * SLOT + SLOT / 2;
                    // Bar heights are the only figures computed through a float, from u64 counts.
                    @let h = {
                        let h = ((p.discrepancies as f64 / max as f64) * PLOT as f64).round() as u64;
                        if p.discrepancies > 0 { h.max(2) } else { h }
                    };
                    @let current = p.run_id == report.run_id;
                    @let fill = if !p.complete { "url(#hatch)" } else if current { "#1f5fbf" } else { "#7fa3d9" };
                    g {
                        title { (p.run_id) " · " (display_time(&p.started_at)) " · " (p.discrepancies)
                            " discrepancies · " (p.accounts_checked) " accounts checked"
                            @if !p.complete { " · incomplete" } }
                        @if h > 0 {
                            rect x=(cx - BAR / 2) y=(base - h) width=(BAR) height=(h) rx="2" fill=(fill)
                                stroke=(if p.complete { "none" } else { "#b42318" }) {}
                        }
                        text x=(cx) y=(base - h - 6) text-anchor="middle" font-size="13" font-weight="700" fill="#1f2328" { (p.discrepancies) }
                        text x=(cx) y=(base + 16) text-anchor="middle" font-size="12"
                            font-weight=(if current { "700" } else { "400" }) fill="#1f2328" { (p.started_at.format("%m-%d").to_string()) }
                        text x=(cx) y=(base + 31) text-anchor="middle" font-size="11" fill="#59636e" { (p.accounts_checked) }
                        @if !p.complete {
                            text x=(cx) y=(base + 46) text-anchor="middle" font-size="9" font-weight="700" fill="#b42318" { "incompl." }
                        }
                    }
                }
            }
            p.legend {
                "Discrepancies found per run, last " (points.len()) " runs, oldest left"
                @if this_run_shown { "; this run in bold" }
                ". Under each bar: start date (UTC, month-day) and accounts checked. Hatched red: incomplete run."
            }
        }
    }
}
