//! The archive of nightly reports: each day's stored report, as its HTML page, JSON or CSV
//! (the same renderers as the files the `report` job writes).

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::NaiveDate;
use maud::html;
use recon::report::Report;

use crate::console::Console;
use crate::console::session::Who;
use crate::console::view::{self, Section, when};

const DAYS: i64 = 120;

/// `GET /reports`.
pub async fn list(State(c): State<Console>, who: Who) -> Response {
    let rows = match ledger::reconciliation::stored_reports(&c.pool, DAYS).await {
        Ok(r) => r,
        Err(e) => return view::database_error(&e),
    };
    let body = html! {
        p.meta { "The report of each day, as the nightly run stored it (the last " (DAYS) " days)." }
        @if rows.is_empty() { p.none { "No report has been stored yet." } } @else {
            table #reports {
                thead { tr { th { "day" } th.num { "run" } th { "complete" } th.num { "accounts checked" }
                    th.num { "discrepancies" } th { "written" } th { "files" } } }
                tbody { @for r in &rows { tr {
                    td { a href=(format!("/reports/{}", r.day)) { (r.day) } }
                    td.num { (r.run) }
                    td { @match r.complete { Some(true) => span.state.resolved { "complete" },
                                             Some(false) => span.state.open { "incomplete" },
                                             None => span.null { "?" } } }
                    td.num { @match r.accounts_checked { Some(n) => (n), None => span.null { "?" } } }
                    td.num { @match r.discrepancies { Some(n) => (n), None => span.null { "?" } } }
                    td { (when(&r.written_at)) }
                    td { a href=(format!("/reports/{}/reconciliation.json", r.day)) { "JSON" } " · "
                         a href=(format!("/reports/{}/reconciliation.csv", r.day)) { "CSV" } }
                } } }
            }
        }
    };
    view::page(&who, Section::Reports, "Reports", body)
}

async fn stored(c: &Console, day: &str) -> Result<(Report, i64, NaiveDate), Box<Response>> {
    let not_found = || {
        view::refusal(
            StatusCode::NOT_FOUND,
            "No such report",
            "No report is stored for that day (days are written YYYY-MM-DD).",
        )
    };
    let day: NaiveDate = day.parse().map_err(|_| Box::new(not_found()))?;
    match ledger::reconciliation::stored_report(&c.pool, day).await {
        Ok(Some((run, value))) => match serde_json::from_value::<Report>(value) {
            Ok(report) => Ok((report, run, day)),
            Err(e) => Err(Box::new(view::conflict(
                "/reports",
                "The stored report cannot be read",
                &format!("The report of {day} does not have the report's shape: {e}"),
            ))),
        },
        Ok(None) => Err(Box::new(not_found())),
        Err(e) => Err(Box::new(view::database_error(&e))),
    }
}

/// `GET /reports/{day}`: the day's report page.
pub async fn day(State(c): State<Console>, _who: Who, Path(day): Path<String>) -> Response {
    let (report, run, _) = match stored(&c, &day).await {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    match jobs::report::trend(&c.pool, run).await {
        Ok(trend) => Html(recon::render::html(&report, &trend)).into_response(),
        Err(e) => view::database_error(&e),
    }
}

/// `GET /reports/{day}/reconciliation.json|csv`.
pub async fn file(
    State(c): State<Console>,
    _who: Who,
    Path((day, file)): Path<(String, String)>,
) -> Response {
    let (report, _, day) = match stored(&c, &day).await {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let (body, kind) = match file.as_str() {
        "reconciliation.json" => (recon::render::json(&report), "application/json"),
        "reconciliation.csv" => (recon::render::csv(&report), "text/csv; charset=utf-8"),
        _ => {
            return view::refusal(
                StatusCode::NOT_FOUND,
                "No such file",
                "A report has reconciliation.json and reconciliation.csv.",
            );
        }
    };
    let disposition = format!(
        "attachment; filename=\"reconciliation-{day}.{}\"",
        &file[15..]
    );
    (
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}
