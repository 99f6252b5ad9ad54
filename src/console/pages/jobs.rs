//! Jobs: the queue per kind (with pause and resume), the list with filters, one job with its
//! arguments, errors and result, and the operator's retry and cancel.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use jobs::kinds::Kind;
use maud::{Markup, html};
use queue::store::{JobState, ListFilter};

use super::{Done, Id};
use crate::console::Console;
use crate::console::session::{Noted, Plain, Who, done_note};
use crate::console::view::{self, Section, opt, state, text, when};

const LIMIT: i64 = 200;

/// `/jobs` filters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Filters {
    kind: Option<String>,
    state: Option<String>,
    done: Option<String>,
}

/// Jobs per kind and state, and the paused kinds: the queue's health, as the overview shows it
/// too.
pub async fn queue_table(c: &Console, who: Option<&Who>) -> Result<Markup, queue::Error> {
    let (depth, paused) = tokio::try_join!(
        queue::store::unfinished_depth(&c.pool),
        queue::store::paused(&c.pool)
    )?;
    let count = |kind: &str, s: JobState| {
        depth
            .iter()
            .find(|(k, st, _)| k == kind && *st == s)
            .map_or(0, |(_, _, n)| *n)
    };
    let shown = [
        JobState::Pending,
        JobState::Running,
        JobState::Failed,
        JobState::Dead,
    ];
    Ok(html! {
        table #queue {
            thead { tr { th { "kind" } @for s in shown { th.num { (s.as_str()) } } th { "paused" }
                @if who.is_some_and(Who::operates) { th { "pause / resume" } } } }
            tbody { @for kind in Kind::ALL {
                @let name = kind.name();
                @let p = paused.iter().find(|p| p.kind == name);
                tr {
                    td { a href=(format!("/jobs?kind={name}")) { (name) } }
                    @for s in shown {
                        @let n = count(name, s);
                        td.num class=[(n > 0 && s == JobState::Dead).then_some("delta-nonzero")] {
                            a href=(format!("/jobs?kind={name}&state={}", s.as_str())) { (n) } }
                    }
                    td { @match p {
                        Some(p) => { strong { "paused" } " by " (text(&p.paused_by)) " since " (when(&p.paused_at))
                                     ": " span.note { (text(&p.note)) } },
                        None => span.null { "no" },
                    } }
                    @if let Some(who) = who.filter(|w| w.operates()) {
                        td { @if p.is_some() {
                            form method="post" action=(format!("/kinds/{name}/resume")) {
                                (view::csrf(who)) button.act type="submit" { "Resume" } }
                        } @else {
                            form method="post" action=(format!("/kinds/{name}/pause")) {
                                (view::csrf(who))
                                input type="text" name="note" required placeholder="why (required)";
                                " " button.act.warn type="submit" { "Pause" } }
                        } }
                    }
                }
            } }
        }
    })
}

/// `GET /jobs`.
pub async fn list(State(c): State<Console>, who: Who, Query(f): Query<Filters>) -> Response {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    let mut ignored = Vec::new();
    let kind = view::one_of("kind", f.kind, &kinds, &mut ignored)
        .and_then(|k| Kind::parse(&k))
        .map(Kind::name);
    let job_state =
        view::one_of("state", f.state, &states, &mut ignored).and_then(|s| JobState::parse(&s));
    let filter = ListFilter {
        kind: kind.map(str::to_owned),
        states: job_state.into_iter().collect(),
        limit: LIMIT,
    };
    let rows = match queue::store::list(&c.pool, &filter).await {
        Ok(rows) => rows,
        Err(e) => return view::database_error(&e),
    };
    let queue = match queue_table(&c, Some(&who)).await {
        Ok(t) => t,
        Err(e) => return view::database_error(&e),
    };
    let body = html! {
        (done_note(f.done.as_deref()))
        (view::ignored(&ignored))
        h2 { "Queue per kind" }
        (queue)
        h2 { "Jobs" }
        form.filters method="get" action="/jobs" {
            (view::select("kind", "Kind", &kinds, kind))
            (view::select("state", "State", &states, job_state.map(JobState::as_str)))
            button.plain type="submit" { "Filter" }
            a href="/jobs" { "Clear" }
        }
        p.meta { (rows.len()) " shown, newest first" @if rows.len() as i64 == LIMIT { " (the latest " (LIMIT) ")" } }
        @if rows.is_empty() { p.none { "No job matches." } } @else {
            table #jobs {
                thead { tr { th.num { "id" } th { "kind" } th { "state" } th.num { "attempts" } th { "run at" } th { "last error" } } }
                tbody { @for j in &rows { tr {
                    td.num { a href=(format!("/jobs/{}", j.id)) { (j.id) } }
                    td { (j.kind) }
                    td { (state(j.state.as_str())) }
                    td.num { (j.attempts) " / " (j.max_attempts) }
                    td { (when(&j.run_at)) }
                    td.detail { (opt(j.last_error.as_deref())) }
                } } }
            }
        }
    };
    view::page(&who, Section::Jobs, "Jobs", body)
}

/// `GET /jobs/{id}`.
pub async fn detail(
    State(c): State<Console>,
    who: Who,
    Id(id): Id,
    Query(done): Query<Done>,
) -> Response {
    let job = match queue::store::show(&c.pool, id).await {
        Ok(Some(j)) => j,
        Ok(None) => {
            return view::refusal(
                StatusCode::NOT_FOUND,
                "No such job",
                &format!("There is no job {id}."),
            );
        }
        Err(e) => return view::database_error(&e),
    };
    let retryable = matches!(
        job.state,
        JobState::Failed | JobState::Dead | JobState::Cancelled
    );
    let cancellable = matches!(job.state, JobState::Pending | JobState::Failed);
    let body = html! {
        (done_note(done.done.as_deref()))
        dl.fields {
            dt { "Kind" } dd { a href=(format!("/jobs?kind={}", view::path_part(&job.kind))) { (text(&job.kind)) } }
            dt { "State" } dd { (state(job.state.as_str())) }
            dt { "Attempts" } dd { (job.attempts) " of " (job.max_attempts) " (deferred " (job.deferrals) " times)" }
            dt { "Runs" } dd { (job.runs) }
            dt { "Run at" } dd { (when(&job.run_at)) }
            dt { "Started" } dd { (view::opt_when(job.started_at.as_ref())) }
            dt { "Created" } dd { (when(&job.created_at)) }
            dt { "Finished" } dd { (view::opt_when(job.finished_at.as_ref())) }
            dt { "Held by" } dd { (opt(job.locked_by.as_deref())) }
            dt { "Unit" } dd.mono { (opt(job.dedup_key.as_deref())) }
            dt { "Last error" } dd.note { (opt(job.last_error.as_deref())) }
        }
        h2 { "Arguments" } (view::json(&job.payload))
        h2 { "Errors, one per failed attempt" } (view::json(&job.errors))
        @if let Some(result) = &job.result { h2 { "Result of the last run" } (view::json(result)) }
        @if who.operates() {
            @if retryable || cancellable {
                div.actions {
                    @if retryable {
                        form method="post" action=(format!("/jobs/{id}/retry")) {
                            h3 { "Retry" }
                            p.meta { "Runs again now, with its kind's attempts afresh; its error history is kept." }
                            (view::csrf(&who)) button.act type="submit" { "Retry now" }
                        }
                    }
                    @if cancellable {
                        form method="post" action=(format!("/jobs/{id}/cancel")) {
                            h3 { "Cancel" }
                            p.meta { "It will not run. A running job cannot be cancelled." }
                            (view::csrf(&who)) button.act.danger type="submit" { "Cancel job" }
                        }
                    }
                }
            }
        } @else {
            p.readonly { "You are signed in as a viewer: retrying and cancelling need the operator role." }
        }
    };
    view::page(&who, Section::Jobs, &format!("Job {id}"), body)
}

/// `POST /jobs/{id}/retry`.
pub async fn retry(c: State<Console>, who: Who, id: Id, form: Form<Plain>) -> Response {
    act(c, who, id, form, "retried").await
}

/// `POST /jobs/{id}/cancel`.
pub async fn cancel(c: State<Console>, who: Who, id: Id, form: Form<Plain>) -> Response {
    act(c, who, id, form, "cancelled").await
}

async fn act(
    State(c): State<Console>,
    who: Who,
    Id(id): Id,
    Form(form): Form<Plain>,
    done: &'static str,
) -> Response {
    if let Some(refused) = who.refuse_change(&form.csrf) {
        return refused;
    }
    let result = async {
        let mut conn = c.pool.acquire().await?;
        if done == "retried" {
            let extra = match queue::store::show(&mut *conn, id).await? {
                Some(job) => c.schedule.fresh_attempts(&job.kind),
                None => 1,
            };
            queue::store::retry(&mut conn, id, extra).await
        } else {
            queue::store::cancel(&mut conn, id).await
        }
    }
    .await;
    let back = format!("/jobs/{id}");
    match result {
        Ok(Ok(())) => {
            tracing::info!(user = who.name, job.id = id, "console: job {id} {done}");
            Redirect::to(&format!("{back}?done={done}")).into_response()
        }
        Ok(Err(refusal)) => view::conflict(&back, "Not changed", &refusal.explain(id)),
        Err(e) => view::database_error(&e),
    }
}

/// `POST /kinds/{kind}/pause`.
pub async fn pause(c: State<Console>, who: Who, kind: Path<String>, form: Form<Noted>) -> Response {
    set_paused(c, who, kind, form, true).await
}

/// `POST /kinds/{kind}/resume`.
pub async fn resume(
    c: State<Console>,
    who: Who,
    kind: Path<String>,
    form: Form<Noted>,
) -> Response {
    set_paused(c, who, kind, form, false).await
}

async fn set_paused(
    State(c): State<Console>,
    who: Who,
    Path(kind): Path<String>,
    Form(form): Form<Noted>,
    pause: bool,
) -> Response {
    if let Some(refused) = who.refuse_change(&form.csrf) {
        return refused;
    }
    let Some(kind) = Kind::parse(&kind) else {
        return view::refusal(
            StatusCode::NOT_FOUND,
            "No such job kind",
            "Nothing was changed.",
        );
    };
    let note = if pause {
        match form.note("/jobs", "Say why the kind is paused") {
            Ok(note) => note,
            Err(page) => return *page,
        }
    } else {
        ""
    };
    let done = if pause {
        queue::store::pause(&c.pool, kind.name(), &who.name, note).await
    } else {
        queue::store::resume(&c.pool, kind.name()).await
    };
    let what = if pause { "paused" } else { "resumed" };
    match done {
        // Someone else got there first: their pause (and its note) stands, as the page shows.
        Ok(false) => view::conflict(
            "/jobs",
            "Not changed",
            &format!(
                "{} was already {}; the queue table shows who paused it and why.",
                kind.name(),
                if pause {
                    "paused"
                } else {
                    "running (not paused)"
                }
            ),
        ),
        Ok(true) => {
            tracing::info!(
                user = who.name,
                job.kind = kind.name(),
                "console: kind {what}"
            );
            Redirect::to(&format!("/jobs?done={what}")).into_response()
        }
        Err(e) => view::database_error(&e),
    }
}
