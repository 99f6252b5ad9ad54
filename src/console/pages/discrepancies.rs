//! Discrepancies: the list with filters, one with its explanations and event log, and the two
//! steps a person takes (acknowledge, resolve), each with a required note kept under the
//! signed-in name.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use ledger::discrepancies::{Filter, StepError};
use maud::html;

use super::{Done, Id};
use crate::console::Console;
use crate::console::session::{Noted, Who, done_note};
use crate::console::view::{
    self, Section, amount, currency, opt, owner, severity, state, text, when,
};

const STATES: [&str; 3] = ["open", "acknowledged", "resolved"];
const SEVERITIES: [&str; 3] = ["high", "medium", "low"];
const LIMIT: i64 = 500;

/// `/discrepancies` filters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Filters {
    state: Option<String>,
    severity: Option<String>,
    class: Option<String>,
    owner: Option<String>,
}

/// `GET /discrepancies`.
pub async fn list(State(c): State<Console>, who: Who, Query(f): Query<Filters>) -> Response {
    let class_names: Vec<&str> = recon::check::Class::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    let mut ignored = Vec::new();
    let state_f = view::one_of("state", f.state, &STATES, &mut ignored);
    let severity_f = view::one_of("severity", f.severity, &SEVERITIES, &mut ignored);
    let class_f = view::one_of("class", f.class, &class_names, &mut ignored);
    let owner_text = f
        .owner
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let owner_f = match owner_text.as_deref() {
        None => None,
        Some("partner") => Some(ledger::Owner::Partner),
        Some(id) => match ledger::Owner::user(id) {
            Ok(o) => Some(o),
            Err(e) => {
                ignored.push(format!("owner: {e}"));
                None
            }
        },
    };
    let filter = Filter {
        state: state_f,
        severity: severity_f,
        class: class_f,
        owner: owner_f,
        all: false,
        limit: LIMIT,
    };
    let rows = match ledger::discrepancies::list(&c.pool, &filter).await {
        Ok(r) => r,
        Err(e) => return view::database_error(&e),
    };
    let body = html! {
        (view::ignored(&ignored))
        form.filters method="get" action="/discrepancies" {
            (view::select("state", "State", &STATES, filter.state.as_deref()))
            (view::select("severity", "Severity", &SEVERITIES, filter.severity.as_deref()))
            (view::select("class", "Class", &class_names, filter.class.as_deref()))
            label { "Owner (user id or partner)"
                input type="text" name="owner" value=[owner_text.as_deref()] placeholder="any"; }
            button.plain type="submit" { "Filter" }
            a href="/discrepancies" { "Clear" }
        }
        p.meta { (rows.len()) " shown"
            @if rows.len() as i64 == LIMIT { " (the first " (LIMIT) ")" }
            @if filter.state.is_none() { " · resolved ones only with state = resolved" }
            " · most severe and oldest first" }
        @if rows.is_empty() {
            p.none { "No discrepancy matches." }
        } @else {
            table #discrepancies {
                thead { tr {
                    th.num { "id" } th { "severity" } th { "state" } th { "owner" } th { "currency" }
                    th { "class" } th { "subject" } th.num { "delta / amount" } th { "first seen" } th { "last seen" }
                } }
                tbody { @for d in &rows {
                    tr {
                        td.num { a href=(format!("/discrepancies/{}", d.id)) { (d.id) } }
                        td { (severity(&d.severity)) }
                        td { (state(&d.state)) }
                        td { (owner(&d.owner_kind, d.external_user_id.as_deref())) }
                        td { (currency(d.currency.as_deref())) }
                        td.cls { (text(&d.class)) }
                        td.mono { (opt(d.subject.as_deref())) }
                        td.num { (amount(d.delta.or(d.amount), d.currency.as_deref())) }
                        td { (when(&d.first_seen_at)) }
                        td { (when(&d.last_seen_at)) }
                    }
                } }
            }
        }
    };
    view::page(&who, Section::Discrepancies, "Discrepancies", body)
}

/// `GET /discrepancies/{id}`.
pub async fn detail(
    State(c): State<Console>,
    who: Who,
    Id(id): Id,
    Query(done): Query<Done>,
) -> Response {
    let (d, events) = match tokio::try_join!(
        ledger::discrepancies::show(&c.pool, id),
        ledger::discrepancies::events(&c.pool, id)
    ) {
        Ok((Some(d), events)) => (d, events),
        Ok((None, _)) => {
            return view::refusal(
                StatusCode::NOT_FOUND,
                "No such discrepancy",
                &format!("There is no discrepancy {id}."),
            );
        }
        Err(e) => return view::database_error(&e),
    };
    // The operation it is about, when it is one we follow: where the next step is taken.
    let related = match d.subject.as_deref() {
        Some(subject) => {
            let found = tokio::try_join!(
                ledger::sepa::find(&c.pool, subject),
                ledger::exchanges::find_by_lock(&c.pool, subject)
            );
            match found {
                Ok((Some(t), _)) => Some((
                    format!("/sepa/{}", view::path_part(&t.transfer_id)),
                    format!("SEPA transfer {} ({})", t.transfer_id, t.status),
                )),
                Ok((None, Some(e))) => Some((
                    format!("/exchanges/{}", e.id),
                    format!("exchange {} ({})", e.id, e.state),
                )),
                Ok(_) => None,
                Err(e) => return view::database_error(&e),
            }
        }
        None => None,
    };
    let explanations: Vec<recon::report::Explanation> =
        serde_json::from_value(d.explanations.clone()).unwrap_or_default();
    let cur = d.currency.as_deref();
    let body = html! {
        (done_note(done.done.as_deref()))
        p { (severity(&d.severity)) " " (state(&d.state)) " " strong { (text(&d.class)) } }
        dl.fields {
            dt { "Owner" } dd { (owner(&d.owner_kind, d.external_user_id.as_deref())) }
            dt { "Currency" } dd { (currency(cur)) }
            dt { "Subject" } dd.mono { (opt(d.subject.as_deref())) }
            @if let Some((href, label)) = &related {
                dt { "About" } dd { a href=(href) { (text(label)) } }
            }
            dt { "P100's balance" } dd { (amount(d.provider_balance, cur)) }
            dt { "Ledger's settled balance" } dd { (amount(d.ledger_balance, cur)) }
            dt { "Delta (P100 − ledger)" } dd { (amount(d.delta, cur)) }
            dt { "Amount at stake" } dd { (amount(d.amount, cur)) }
            dt { "Detail" } dd.note { (opt(d.detail.as_deref())) }
            dt { "First seen" } dd { (when(&d.first_seen_at)) }
            dt { "Last seen" } dd { (when(&d.last_seen_at)) }
            dt { "Resolved" } dd { (view::opt_when(d.resolved_at.as_ref())) }
            dt { "Last found by run" } dd { @match d.last_run { Some(r) => (r), None => span.null { "—" } } }
        }
        h2 { "Candidate explanations" }
        @if explanations.is_empty() {
            p.none { "None: no P100 transaction or operation of ours accounts for it." }
        } @else {
            table { thead { tr { th { "P100 transaction / operation" } th { "class" } th.num { "amount" } } }
                tbody { @for e in &explanations { tr {
                    td.mono { (text(&e.provider_tx_id)) }
                    td { (text(&e.class)) }
                    td.num { (amount(Some(e.amount), cur)) }
                } } } }
        }
        h2 { "Event log" }
        table #events { thead { tr { th { "when" } th { "event" } th { "by" } th { "note" } } }
            tbody { @for e in &events { tr {
                td { (when(&e.at)) } td { (text(&e.event)) } td { (text(&e.actor)) }
                td.note { (opt(e.note.as_deref())) }
            } } } }
        @if d.state != "resolved" {
            @if who.operates() {
                div.actions {
                    @if d.state == "open" {
                        form method="post" action=(format!("/discrepancies/{id}/acknowledge")) {
                            h3 { "Acknowledge" }
                            p.meta { "Someone is on it. The note is kept under your name, " (text(&who.name)) "." }
                            (view::csrf(&who))
                            textarea name="note" required placeholder="What you are doing about it" {}
                            p { button.act.warn type="submit" { "Acknowledge" } }
                        }
                    }
                    form method="post" action=(format!("/discrepancies/{id}/recheck")) {
                        h3 { "Check again now" }
                        p.meta { "Syncs its owner's history and reconciles that owner alone. If P100 and the ledger agree now, it resolves itself." }
                        (view::csrf(&who))
                        p { button.plain type="submit" { "Reconcile " (owner_label(&d.owner_kind, d.external_user_id.as_deref())) " now" } }
                    }
                    form method="post" action=(format!("/discrepancies/{id}/resolve")) {
                        h3 { "Resolve" }
                        p.meta { "Explained or fixed. If a later run finds it again, it reopens." }
                        (view::csrf(&who))
                        textarea name="note" required placeholder="Why it is resolved" {}
                        p { button.act type="submit" { "Resolve" } }
                    }
                }
            } @else {
                p.readonly { "You are signed in as a viewer: acknowledging and resolving need the operator role." }
            }
        }
    };
    view::page(
        &who,
        Section::Discrepancies,
        &format!("Discrepancy {id}"),
        body,
    )
}

fn owner_label(kind: &str, user: Option<&str>) -> String {
    match (kind, user) {
        ("user", Some(u)) => text(u),
        _ => "the partner".to_owned(),
    }
}

/// `POST /discrepancies/{id}/acknowledge`.
pub async fn acknowledge(c: State<Console>, who: Who, id: Id, form: Form<Noted>) -> Response {
    step(c, who, id, form, "acknowledged").await
}

/// `POST /discrepancies/{id}/resolve`.
pub async fn resolve(c: State<Console>, who: Who, id: Id, form: Form<Noted>) -> Response {
    step(c, who, id, form, "resolved").await
}

async fn step(
    State(c): State<Console>,
    who: Who,
    Id(id): Id,
    Form(form): Form<Noted>,
    to: &'static str,
) -> Response {
    if let Some(refused) = who.refuse_change(&form.csrf) {
        return refused;
    }
    let back = format!("/discrepancies/{id}");
    let note = match form.note(
        &back,
        "Say why: the note is kept in the discrepancy's event log",
    ) {
        Ok(note) => note,
        Err(page) => return *page,
    };
    let result = async {
        let mut tx = c.pool.begin().await.map_err(ledger::Error::from)?;
        let d = ledger::discrepancies::step(&mut tx, id, to, &who.name, note).await?;
        tx.commit().await.map_err(ledger::Error::from)?;
        Ok::<_, StepError>(d)
    }
    .await;
    match result {
        Ok(_) => {
            tracing::info!(
                user = who.name,
                discrepancy = id,
                step = to,
                "console: discrepancy {to}"
            );
            Redirect::to(&format!("{back}?done={to}")).into_response()
        }
        Err(StepError::Ledger(e)) => view::database_error(&e),
        Err(e) => view::conflict(&back, "Not changed", &e.to_string()),
    }
}

/// `POST /discrepancies/{id}/recheck`: its owner's history synced and reconciled now (a
/// reconciliation of that owner alone; one that matches resolves the discrepancy itself).
pub async fn recheck(
    State(c): State<Console>,
    who: Who,
    Id(id): Id,
    Form(form): Form<crate::console::session::Plain>,
) -> Response {
    if let Some(refused) = who.refuse_change(&form.csrf) {
        return refused;
    }
    let d = match ledger::discrepancies::show(&c.pool, id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return view::refusal(
                StatusCode::NOT_FOUND,
                "No such discrepancy",
                "Nothing was queued.",
            );
        }
        Err(e) => return view::database_error(&e),
    };
    if d.state == "resolved" {
        return view::conflict(
            &format!("/discrepancies/{id}"),
            "Not queued",
            "It is resolved: the nightly run checks its owner again anyway.",
        );
    }
    let args = match &d.external_user_id {
        Some(user) => serde_json::json!({ "user": user, "sync": true }),
        None => serde_json::json!({ "partner": true, "sync": true }),
    };
    let job = match jobs::enqueue::new_job(jobs::kinds::Kind::Reconcile, args, &c.schedule, None) {
        Ok(job) => job,
        Err(e) => return view::conflict(&format!("/discrepancies/{id}"), "Not queued", &e),
    };
    match jobs::enqueue::enqueue(&c.pool, &job).await {
        Ok(queued) => {
            tracing::info!(
                user = who.name,
                discrepancy = id,
                job.id = queued.id,
                "console: owner queued for reconciliation"
            );
            // What enqueue did: a new job, an existing one of this owner brought forward (with
            // its own arguments), or one more run after the running one.
            let done = match (queued.created, queued.rerun_after) {
                (true, _) => "queued",
                (false, true) => "rerun",
                (false, false) => "brought_forward",
            };
            Redirect::to(&format!("/jobs/{}?done={done}", queued.id)).into_response()
        }
        Err(e) => view::database_error(&e),
    }
}
