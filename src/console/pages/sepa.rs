//! SEPA transfers we follow: the list by status, and one with its hold and status history.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use ledger::sepa::ReleaseError;
use maud::html;

use super::Done;
use crate::console::Console;
use crate::console::session::{Noted, Who, done_note};
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
pub async fn detail(
    State(c): State<Console>,
    who: Who,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
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
    let missing = t.status == ledger::sepa::MISSING;
    let body = html! {
        (done_note(done.done.as_deref()))
        p { (state(&t.status)) " hold " strong { (text(&t.hold_state)) } }
        @if missing && t.hold_state == "held" {
            div.banner role="alert" {
                strong { "P100 does not know this transfer." }
                " Its hold of " (amount(Some(t.amount), cur)) " " (currency(cur))
                " stays, and P100 is asked again now and then, until someone releases it. Release it once you know (from P100 or the bank) that the transfer was never made."
            }
        }
        dl.fields {
            dt { "P100 transferId" } dd.mono { (text(&t.transfer_id)) }
            dt { "Owner" } dd { (owner(&t.owner_kind, t.external_user_id.as_deref())) }
            dt { "Amount (registered)" } dd { (amount(Some(t.amount), cur)) " " (currency(cur)) }
            dt { "Amount (P100)" } dd { @if t.p100_amount.is_some() {
                (amount(t.p100_amount, t.p100_currency.as_deref())) " " (currency(t.p100_currency.as_deref()))
            } @else { span.null { "—" } } }
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
        @if missing && t.hold_state == "held" {
            @if who.operates() {
                div.actions {
                    form method="post" action=(format!("/sepa/{}/release", view::path_part(&t.transfer_id))) {
                        h3 { "Release the hold" }
                        p.meta { "The held amount is available again and the transfer is no longer followed. The note is kept under your name, " (text(&who.name)) "." }
                        (view::csrf(&who))
                        textarea name="note" required placeholder="How you know the transfer was never made" {}
                        p { button.act.danger type="submit" { "Release the hold" } }
                    }
                }
            } @else {
                p.readonly { "You are signed in as a viewer: releasing a hold needs the operator role." }
            }
        }
    };
    view::page(
        &who,
        Section::Sepa,
        &format!("SEPA transfer {}", text(&t.transfer_id)),
        body,
    )
}

/// `POST /sepa/{transferId}/release`.
pub async fn release(
    State(c): State<Console>,
    who: Who,
    Path(id): Path<String>,
    Form(form): Form<Noted>,
) -> Response {
    if let Some(refused) = who.refuse_change(&form.csrf) {
        return refused;
    }
    let back = format!("/sepa/{}", view::path_part(&id));
    let note = match form.note(&back, "Say how you know the transfer was never made") {
        Ok(note) => note,
        Err(page) => return *page,
    };
    let result = async {
        let mut tx = c.pool.begin().await.map_err(ledger::Error::from)?;
        let t = ledger::sepa::release_by_hand(&mut tx, &id, &who.name, note).await?;
        tx.commit().await.map_err(ledger::Error::from)?;
        Ok::<_, ReleaseError>(t)
    }
    .await;
    match result {
        Ok(t) => {
            tracing::info!(
                user = who.name,
                sepa.transfer_id = t.transfer_id,
                "console: SEPA hold released"
            );
            Redirect::to(&format!("{back}?done=released")).into_response()
        }
        Err(ReleaseError::Ledger(e)) => view::database_error(&e),
        Err(e @ ReleaseError::NotFound(_)) => {
            view::refusal(StatusCode::NOT_FOUND, "No such transfer", &e.to_string())
        }
        Err(e) => view::conflict(&back, "Not changed", &e.to_string()),
    }
}
