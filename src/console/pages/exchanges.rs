//! Exchanges: those waiting for a person (NEEDS_REVIEW) first, with what must be checked, then
//! every exchange we follow, and one with its state history.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use crate::console::Console;
use crate::console::session::Who;
use crate::console::view::{self, Section, amount, opt, owner, state, text, when};

const STATES: [&str; 7] = [
    "NEEDS_REVIEW",
    "LOCKED",
    "SUBMITTING",
    "SUBMITTED",
    "COMPLETED",
    "FAILED",
    "EXPIRED",
];
const LIMIT: i64 = 200;

/// `/exchanges` filters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Filters {
    state: Option<String>,
}

fn table(rows: &[ledger::exchanges::Exchange], id: &str) -> Markup {
    html! {
        table id=(id) {
            thead { tr { th.num { "id" } th { "owner" } th { "lock" } th { "from → to" } th.num { "amount" }
                th { "state" } th { "lock expires" } th { "reason" } } }
            tbody { @for e in rows { tr {
                td.num { a href=(format!("/exchanges/{}", e.id)) { (e.id) } }
                td { (owner(&e.owner_kind, e.external_user_id.as_deref())) }
                td.mono { (text(&e.lock_id)) }
                td { span.cur { (text(&e.currency_from)) } " → " span.cur { (text(&e.currency_to)) } }
                td.num { (amount(Some(e.amount), Some(&e.currency_from))) }
                td { (state(&e.state)) }
                td { (when(&e.expires_at)) }
                td.detail { (opt(e.reason.as_deref())) }
            } } }
        }
    }
}

/// `GET /exchanges`.
pub async fn list(State(c): State<Console>, who: Who, Query(f): Query<Filters>) -> Response {
    let mut ignored = Vec::new();
    let wanted = view::one_of("state", f.state, &STATES, &mut ignored);
    let (review, rows) = match tokio::try_join!(
        ledger::exchanges::list(&c.pool, Some("NEEDS_REVIEW"), LIMIT),
        ledger::exchanges::list(&c.pool, wanted.as_deref(), LIMIT)
    ) {
        Ok(r) => r,
        Err(e) => return view::database_error(&e),
    };
    let body = html! {
        (view::ignored(&ignored))
        h2 { "Waiting for a person (NEEDS_REVIEW) " span.count { (review.len()) } }
        @if review.is_empty() { p.none { "None." } } @else {
            p.meta { "Each needs someone to check it at P100; open one for the steps." }
            (table(&review, "review"))
        }
        h2 { "All exchanges" }
        form.filters method="get" action="/exchanges" {
            (view::select("state", "State", &STATES, wanted.as_deref()))
            button.plain type="submit" { "Filter" }
            a href="/exchanges" { "Clear" }
        }
        @if rows.is_empty() { p.none { "No exchange matches." } } @else { (table(&rows, "exchanges")) }
    };
    view::page(&who, Section::Exchanges, "Exchanges", body)
}

/// `GET /exchanges/{id}`.
pub async fn detail(State(c): State<Console>, who: Who, Path(id): Path<String>) -> Response {
    let ex = match ledger::exchanges::find(&c.pool, &id).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return view::refusal(
                StatusCode::NOT_FOUND,
                "No such exchange",
                "No exchange has that id or lockId.",
            );
        }
        Err(e) => return view::database_error(&e),
    };
    let events = match ledger::exchanges::events(&c.pool, ex.id).await {
        Ok(ev) => ev,
        Err(e) => return view::database_error(&e),
    };
    let steps = jobs::exchange_finalize::review_steps(&ex);
    let body = html! {
        p { (state(&ex.state)) }
        @if !steps.is_empty() {
            div.banner role="alert" {
                strong { "What a person must check" }
                ol.checklist { @for s in &steps { li { (text(s)) } } }
            }
        }
        dl.fields {
            dt { "Owner" } dd { (owner(&ex.owner_kind, ex.external_user_id.as_deref())) }
            dt { "Lock" } dd.mono { (text(&ex.lock_id)) }
            dt { "P100 exchange id" } dd.mono { (opt(ex.exchange_id.as_deref())) }
            dt { "From → to" } dd { span.cur { (text(&ex.currency_from)) } " → " span.cur { (text(&ex.currency_to)) } }
            dt { "Amount" } dd { (amount(Some(ex.amount), Some(&ex.currency_from))) }
            dt { "Lock expires" } dd { (when(&ex.expires_at)) }
            dt { "Submitted" } dd { (view::opt_when(ex.submitted_at.as_ref())) }
            dt { "Registered" } dd { (when(&ex.created_at)) }
            dt { "Reason" } dd.note { (opt(ex.reason.as_deref())) }
        }
        h2 { "State history" }
        table #events { thead { tr { th { "when" } th { "state" } th { "note" } } }
            tbody { @for (s, note, at) in &events { tr {
                td { (when(at)) } td { (state(s)) } td.note { (opt(note.as_deref())) }
            } } } }
    };
    view::page(
        &who,
        Section::Exchanges,
        &format!("Exchange {}", ex.id),
        body,
    )
}
