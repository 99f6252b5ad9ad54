//! The operator console (SPEC §11): server-rendered pages for the operations team's morning,
//! served by the daemon on `CONSOLE_ADDR` (loopback by default), off unless
//! `CONSOLE_TOKENS_FILE` names who may sign in.
//!
//! No JavaScript and nothing loaded from elsewhere: every page is HTML with inline CSS, built
//! with maud (escaping every value), and every change is a form POST checked by
//! [`session::Who::refuse_change`]. Pages read through the ledger's and the queue's own functions;
//! the console holds no SQL of its own.

use std::sync::Arc;
use std::sync::atomic::AtomicU8;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

mod pages;
pub mod session;
pub mod tokens;
pub mod view;

pub use tokens::{Role, Tokens};

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    /// The database.
    pub pool: ledger::PgPool,
    /// Who may sign in.
    pub tokens: Arc<Tokens>,
    /// P100 as this daemon last saw it ([`jobs::context::P100Health`] values).
    pub p100: Arc<AtomicU8>,
    /// The daemon's schedule: a retried job gets its kind's attempts afresh.
    pub schedule: Arc<jobs::schedule::ScheduleFile>,
}

/// Headers on every answer: no script may run, nothing is loaded from elsewhere, no page may be
/// framed, nothing is cached or sniffed, no URL leaks in a Referer.
async fn harden(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Every line logged while serving a request names its method and path (never its query, body
/// or cookies), so "the database failed" says on which page.
async fn in_span(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "console",
        method = %request.method(),
        path = %request.uri().path()
    );
    next.run(request).instrument(span).await
}

/// The console's routes.
pub fn router(console: Console) -> Router {
    use pages::*;
    Router::new()
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/", get(overview::page))
        .route("/discrepancies", get(discrepancies::list))
        .route("/discrepancies/{id}", get(discrepancies::detail))
        .route(
            "/discrepancies/{id}/acknowledge",
            post(discrepancies::acknowledge),
        )
        .route("/discrepancies/{id}/resolve", post(discrepancies::resolve))
        .route("/discrepancies/{id}/recheck", post(discrepancies::recheck))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::detail))
        .route("/jobs/{id}/retry", post(jobs::retry))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/kinds/{kind}/pause", post(jobs::pause))
        .route("/kinds/{kind}/resume", post(jobs::resume))
        .route("/users", get(users::list))
        .route("/users/{id}", get(users::detail))
        .route("/sepa", get(sepa::list))
        .route("/sepa/{id}", get(sepa::detail))
        .route("/sepa/{id}/release", post(sepa::release))
        .route("/exchanges", get(exchanges::list))
        .route("/exchanges/{id}", get(exchanges::detail))
        .route("/reports", get(reports::list))
        .route("/reports/{file}", get(reports::day))
        .route("/reports/{day}/{file}", get(reports::file))
        .fallback(|| async {
            view::refusal(
                axum::http::StatusCode::NOT_FOUND,
                "No such page",
                "This console has no page at that address.",
            )
        })
        .with_state(console)
        .layer(axum::middleware::map_response(harden))
        .layer(axum::middleware::from_fn(in_span))
}
