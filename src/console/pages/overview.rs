//! The overview: the last runs and whether they were complete, open discrepancies by severity
//! with their trend, the queue per kind, P100's health and the webhooks: the morning's first
//! page.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use crate::console::Console;
use crate::console::session::Who;
use crate::console::view::{self, Section, state, text, when};

const RUNS: i64 = 10;

fn card(label: &str, value: &str, class: &str, href: &str) -> Markup {
    html! {
        a href=(href) style="text-decoration:none;color:inherit" {
            div class=(format!("card {class}")) { div.k { (label) } div.v { (value) } }
        }
    }
}

/// `GET /`.
pub async fn page(State(c): State<Console>, who: Who) -> Response {
    let loaded = tokio::try_join!(
        async {
            ledger::discrepancies::open_by_severity(&c.pool)
                .await
                .map_err(|e| e.to_string())
        },
        async {
            ledger::reconciliation::recent_runs(&c.pool, RUNS)
                .await
                .map_err(|e| e.to_string())
        },
        async {
            queue::store::backlog(&c.pool)
                .await
                .map_err(|e| e.to_string())
        },
        async {
            queue::budget::status(&c.pool)
                .await
                .map_err(|e| e.to_string())
        },
        async {
            ledger::webhooks::totals(
                &c.pool,
                Some(chrono::Utc::now() - chrono::Duration::hours(24)),
            )
            .await
            .map_err(|e| e.to_string())
        },
        async {
            super::jobs::queue_table(&c, None)
                .await
                .map_err(|e| e.to_string())
        },
    );
    let (open, runs, backlog, budget, webhooks, queue) = match loaded {
        Ok(all) => all,
        Err(e) => return view::database_error(&e),
    };
    let open_of = |s: &str| open.iter().find(|(sev, _)| sev == s).map_or(0, |(_, n)| *n);
    let (high, medium, low) = (open_of("high"), open_of("medium"), open_of("low"));
    let p100 = match c.p100.load(Ordering::Relaxed) {
        0 => ("reachable", ""),
        1 => ("unreachable: jobs retry with backoff", "warn"),
        _ => ("rejecting the API key", "bad"),
    };
    let last = runs.first();
    let body = html! {
        div.cards {
            (card("Open high", &high.to_string(), if high > 0 { "bad" } else { "good" }, "/discrepancies?severity=high"))
            (card("Open medium", &medium.to_string(), if medium > 0 { "warn" } else { "good" }, "/discrepancies?severity=medium"))
            (card("Open low", &low.to_string(), "", "/discrepancies?severity=low"))
            (card("Dead jobs", &backlog.dead.to_string(), if backlog.dead > 0 { "bad" } else { "good" }, "/jobs?state=dead"))
            (card("Failed, retrying", &backlog.failed.to_string(), if backlog.failed > 0 { "warn" } else { "" }, "/jobs?state=failed"))
            (card("Oldest due job", &recon::render::age(backlog.oldest_pending_age_seconds.max(0) as u64), "", "/jobs?state=pending"))
        }
        h2 { "Last reconciliation runs" }
        @match last {
            None => p.none { "No reconciliation has run yet." },
            Some(r) if r.state == "finished" && r.complete => div.status-ok { "The last run (" (r.id) ", " (text(&r.scope)) ") was complete." },
            Some(r) if r.state == "running" => p { "Run " (r.id) " is running since " (when(&r.started_at)) "." },
            Some(r) => div.banner role="alert" { strong { "The last run (" (r.id) ") is " @if r.state == "failed" { "failed" } @else { "incomplete" } "." }
                @if let Some(e) = &r.error { " " (text(e)) }
                @if let Some(reasons) = r.incomplete_reasons.as_array() { ul { @for why in reasons { li { (text(why.as_str().unwrap_or_default())) } } } } },
        }
        @if !runs.is_empty() {
            table #runs {
                thead { tr { th.num { "run" } th { "scope" } th { "state" } th { "started" } th { "complete" }
                    th.num { "accounts" } th.num { "discrepancies found" } th.num { "P100 calls / budget" } } }
                tbody { @for r in &runs { tr {
                    td.num { (r.id) } td { (text(&r.scope)) } td { (state(&r.state)) } td { (when(&r.started_at)) }
                    td { @if r.state != "finished" { span.null { "—" } } @else if r.complete { span.state.resolved { "complete" } } @else { span.state.open { "incomplete" } } }
                    td.num { (r.accounts_checked) }
                    td.num class=[(r.discrepancies > 0).then_some("delta-nonzero")] { (r.discrepancies) }
                    td.num { (r.p100_calls) " / " (r.p100_budget) }
                } } }
            }
            p.meta { "Newest first: the discrepancies column is the trend. Reports of past days are in " a href="/reports" { "the archive" } "." }
        }
        h2 { "Queue per kind" }
        (queue)
        h2 { "P100" }
        dl.fields {
            dt { "As this daemon last saw it" } dd class=(p100.1) { (p100.0) }
            dt { "Replicas sharing the budget" } dd { (budget.live_members) " (" (budget.busy) " wanting more)" }
            dt { "Their caps" } dd { (budget.caps) " requests per second" }
            dt { "429 pause" } dd { @match &budget.paused_until { Some(t) => strong { "every replica waits until " (when(t)) }, None => "none" } }
        }
        h2 { "Webhooks in the last 24 hours" }
        dl.fields {
            dt { "Last delivery" } dd { @match &webhooks.last_received_at {
                Some(t) => (when(t)),
                None => strong { "none: check P100's webhook settings and P100_WEBHOOK_TOKEN (polling still covers every change)" },
            } }
            dt { "Deliveries (with P100's repeats)" } dd { (webhooks.deliveries) }
            dt { "Distinct events" } dd { (webhooks.events) }
            dt { "Brought a job forward" } dd { (webhooks.brought_forward) }
            dt { "Confirmed by reading P100" } dd { (webhooks.confirmed) }
            dt { "About nothing we follow" } dd { (webhooks.ignored) }
            dt { "Refused (400)" } dd class=[(webhooks.rejected > 0).then_some("delta-nonzero")] { (webhooks.rejected) }
        }
    };
    view::page(&who, Section::Overview, "Overview", body)
}
