//! Users we follow and their KYC: the list with a search, and one user with their KYC history
//! and unresolved discrepancies.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use crate::console::Console;
use crate::console::session::Who;
use crate::console::view::{self, Section, amount, currency, opt, severity, state, text, when};

const LIMIT: i64 = 200;
/// Unresolved discrepancies shown on a user's page.
const SHOWN: i64 = 100;
/// KYC statuses as recorded: P100's `status`, or ours for no verification and an unknown user.
const KYC: [&str; 6] = [
    "none",
    "NOT_VERIFIED",
    "VERIFIED",
    "EXPIRED",
    "NO_VERIFICATION",
    "UNKNOWN_USER",
];

/// `/users` filters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Filters {
    q: Option<String>,
    kyc: Option<String>,
}

/// `GET /users`.
pub async fn list(State(c): State<Console>, who: Who, Query(f): Query<Filters>) -> Response {
    let q = f.q.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let mut ignored = Vec::new();
    let kyc = view::one_of("KYC status", f.kyc, &KYC, &mut ignored);
    let rows = match ledger::users::search(&c.pool, q.as_deref(), kyc.as_deref(), LIMIT).await {
        Ok(r) => r,
        Err(e) => return view::database_error(&e),
    };
    let body = html! {
        (view::ignored(&ignored))
        form.filters method="get" action="/users" {
            label { "User id contains" input type="text" name="q" value=[q.as_deref()] placeholder="any"; }
            label { "KYC status"
                select name="kyc" {
                    option value="" selected[kyc.is_none()] { "any" }
                    @for k in KYC { option value=(k) selected[kyc.as_deref() == Some(k)] {
                        @if k == "none" { "not checked yet" } @else { (k) } } }
                } }
            button.plain type="submit" { "Filter" }
            a href="/users" { "Clear" }
        }
        p.meta { (rows.len()) " shown, by id" @if rows.len() as i64 == LIMIT { " (the first " (LIMIT) ")" } }
        @if rows.is_empty() { p.none { "No user matches." } } @else {
            table #users {
                thead { tr { th { "user" } th { "KYC" } th { "attempt" } th { "rejection reason" } th { "checked" }
                    th { "known at P100" } th { "followed since" } } }
                tbody { @for u in &rows { tr {
                    td { a href=(format!("/users/{}", view::path_part(&u.external_user_id))) { (text(&u.external_user_id)) } }
                    td { @match &u.kyc_status { Some(s) => (state(s)), None => span.null { "not checked" } } }
                    td { (opt(u.kyc_attempt_status.as_deref())) }
                    td.detail { (opt(u.kyc_rejection_reason.as_deref())) }
                    td { (view::opt_when(u.kyc_checked_at.as_ref())) }
                    td { @if u.unknown_at_p100 { strong { "no (P412)" } } @else { "yes" } }
                    td { (when(&u.tracked_at)) }
                } } }
            }
        }
    };
    view::page(&who, Section::Users, "Users & KYC", body)
}

/// `GET /users/{id}`.
pub async fn detail(State(c): State<Console>, who: Who, Path(id): Path<String>) -> Response {
    let filter = ledger::discrepancies::Filter {
        owner: ledger::Owner::user(&id).ok(),
        limit: SHOWN,
        ..Default::default()
    };
    let (user, history, open) = match tokio::try_join!(
        ledger::users::show(&c.pool, &id),
        ledger::users::kyc_history(&c.pool, &id),
        ledger::discrepancies::list(&c.pool, &filter)
    ) {
        Ok((Some(u), h, d)) => (u, h, d),
        Ok((None, _, _)) => {
            return view::refusal(
                StatusCode::NOT_FOUND,
                "No such user",
                "We do not follow a user with that id.",
            );
        }
        Err(e) => return view::database_error(&e),
    };
    let body = html! {
        dl.fields {
            dt { "KYC status" } dd { @match &user.kyc_status { Some(s) => (state(s)), None => span.null { "not checked yet" } } }
            dt { "Attempt status" } dd { (opt(user.kyc_attempt_status.as_deref())) }
            dt { "Rejection reason" } dd.note { (opt(user.kyc_rejection_reason.as_deref())) }
            dt { "Last checked" } dd { (view::opt_when(user.kyc_checked_at.as_ref())) }
            dt { "Polls in progress in a row" } dd { (user.kyc_pending_polls) }
            dt { "Known at P100" } dd { @if user.unknown_at_p100 { strong { "no: P100 answered P412 (user unknown)" } } @else { "yes" } }
            dt { "Followed since" } dd { (when(&user.tracked_at)) }
        }
        p { a href=(format!("/jobs?kind=kyc_poll")) { "KYC polling jobs" } }
        h2 { "Unresolved discrepancies " span.count { (open.len())
            @if open.len() as i64 == SHOWN { " (the first " (SHOWN) ")" } } }
        @if open.is_empty() { p.none { "None." } } @else {
            table { thead { tr { th.num { "id" } th { "severity" } th { "state" } th { "currency" } th { "class" } th.num { "delta / amount" } } }
                tbody { @for d in &open { tr {
                    td.num { a href=(format!("/discrepancies/{}", d.id)) { (d.id) } }
                    td { (severity(&d.severity)) } td { (state(&d.state)) }
                    td { (currency(d.currency.as_deref())) } td.cls { (text(&d.class)) }
                    td.num { (amount(d.delta.or(d.amount), d.currency.as_deref())) }
                } } } }
        }
        h2 { "KYC history" }
        @if history.is_empty() { p.none { "Not checked yet." } } @else {
            table #kyc { thead { tr { th { "checked" } th { "status" } th { "attempt" } th { "rejection reason" } } }
                tbody { @for (status, attempt, reason, at) in &history { tr {
                    td { (when(at)) } td { (state(status)) } td { (opt(attempt.as_deref())) } td.note { (opt(reason.as_deref())) }
                } } } }
        }
    };
    view::page(&who, Section::Users, &format!("User {}", text(&id)), body)
}
