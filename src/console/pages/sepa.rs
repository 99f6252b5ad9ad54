//! SEPA transfers we follow: the list by status, and one with its hold and status history.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use crate::console::Console;
use crate::console::session::Who;
use crate::console::view::{self, Section, amount, currency, opt, owner, state, text, when};

const LIMIT: i64 = 200;

/// `/sepa` filters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Filters {
    status: Option<String>,
}

/// `GET /sepa`.
pub async fn list(State(c): State<Console>, who: Who, Query(f): Query<Filters>) -> Response {
    let status = f
        .status
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty());
    let rows = match ledger::sepa::list(&c.pool, status.as_deref(), LIMIT).await {
        Ok(r) => r,
        Err(e) => return view::database_error(&e),
    };
    let body = html! {
        form.filters method="get" action="/sepa" {
            label { "Status (TRACKING, P100's status, MISSING_AT_PROVIDER, RELEASED)"
                input type="text" name="status" value=[status.as_deref()] placeholder="any"; }
            button.plain type="submit" { "Filter" }
            a href="/sepa" { "Clear" }
        }
        p.meta { (rows.len()) " shown, newest first" @if rows.len() as i64 == LIMIT { " (the latest " (LIMIT) ")" } }
        @if rows.is_empty() { p.none { "No transfer matches." } } @else {
            table #sepa {
                thead { tr { th.num { "id" } th { "transfer" } th { "owner" } th.num { "amount" } th { "currency" }
                    th { "status" } th { "hold" } th { "checked" } th { "reason" } } }
                tbody { @for t in &rows { tr {
                    td.num { (t.id) }
                    td.mono { a href=(format!("/sepa/{}", view::path_part(&t.transfer_id))) { (text(&t.transfer_id)) } }
                    td { (owner(&t.owner_kind, t.external_user_id.as_deref())) }
                    td.num { (amount(Some(t.amount), Some(&t.currency))) }
                    td { (currency(Some(&t.currency))) }
                    td { (state(&t.status)) }
                    td { (text(&t.hold_state)) }
                    td { (view::opt_when(t.checked_at.as_ref())) }
                    td.detail { (opt(t.reason.as_deref())) }
                } } }
            }
        }
    };
    view::page(&who, Section::Sepa, "SEPA transfers", body)
}

/// `GET /sepa/{transferId}`.
pub async fn detail(State(c): State<Console>, who: Who, Path(id): Path<String>) -> Response {
    let t = match ledger::sepa::find(&c.pool, &id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return view::refusal(
                StatusCode::NOT_FOUND,
                "No such transfer",
                "No transfer has that transferId.",
            );
        }
        Err(e) => return view::database_error(&e),
    };
    let events = match ledger::sepa::events(&c.pool, t.id).await {
        Ok(ev) => ev,
        Err(e) => return view::database_error(&e),
    };
    let cur = Some(t.currency.as_str());
    let body = html! {
        p { (state(&t.status)) " hold " strong { (text(&t.hold_state)) } }
        dl.fields {
            dt { "P100 transferId" } dd.mono { (text(&t.transfer_id)) }
            dt { "Owner" } dd { (owner(&t.owner_kind, t.external_user_id.as_deref())) }
            dt { "Amount (registered)" } dd { (amount(Some(t.amount), cur)) " " (currency(cur)) }
            dt { "Amount (P100)" } dd { (amount(t.p100_amount, t.p100_currency.as_deref())) " " (currency(t.p100_currency.as_deref())) }
            dt { "Fee (P100)" } dd { (amount(t.fee, t.p100_currency.as_deref().or(cur))) }
            dt { "P100's error" } dd { @match &t.error { Some(e) => (view::json(e)), None => span.null { "—" } } }
            dt { "Reason" } dd.note { (opt(t.reason.as_deref())) }
            dt { "Reads still in progress" } dd { (t.polls) }
            dt { "Last asked P100" } dd { (view::opt_when(t.checked_at.as_ref())) }
            dt { "Tracked since" } dd { (when(&t.created_at)) }
        }
        h2 { "Status history" }
        table #events { thead { tr { th { "when" } th { "status" } th { "note" } } }
            tbody { @for (s, note, at) in &events { tr {
                td { (when(at)) } td { (state(s)) } td.note { (opt(note.as_deref())) }
            } } } }
    };
    view::page(
        &who,
        Section::Sepa,
        &format!("SEPA transfer {}", text(&t.transfer_id)),
        body,
    )
}
