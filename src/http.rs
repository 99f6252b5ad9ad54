//! The daemon's HTTP endpoint: `/healthz`, `/readyz`, `/metrics`, and P100's webhooks
//! ([`crate::webhooks`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// Shared state of the endpoint.
#[derive(Clone)]
pub struct HttpState {
    /// The database.
    pub pool: ledger::PgPool,
    /// The Prometheus recorder's renderer.
    pub metrics: PrometheusHandle,
    /// P100 as last seen, shared with the jobs ([`jobs::context::P100Health`] values).
    pub p100: Arc<AtomicU8>,
    /// Which job kinds have their workers running.
    pub workers: crate::worker::WorkerHealth,
    /// The webhook receiver.
    pub webhooks: crate::webhooks::Receiver,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    let webhooks = crate::webhooks::router(state.webhooks.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(webhooks)
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let database =
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&state.pool)
            .await;
    let expected = ledger::MIGRATOR.iter().count() as i64;
    let (db, migrations) = match database {
        Ok(applied) if applied >= expected => ("ok", "ok".to_owned()),
        Ok(applied) => ("ok", format!("{applied} of {expected} applied")),
        Err(e) => ("unreachable", format!("unknown: {e}")),
    };
    let p100 = match state.p100.load(Ordering::Relaxed) {
        0 => "reachable",
        1 => "unreachable (jobs retry with backoff)",
        _ => "auth_failed",
    };
    let down = state.workers.down();
    let ready = db == "ok" && migrations == "ok" && p100 != "auth_failed" && down.is_empty();
    let body = serde_json::json!({
        "ready": ready, "database": db, "migrations": migrations, "p100": p100,
        "workers": if down.is_empty() { "ok".to_owned() } else { format!("not running: {}", down.join(", ")) },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    // Queue depth is read from the table at scrape time: always true, never drifts.
    match queue::store::depth(&state.pool).await {
        Ok(rows) => {
            // Zero first, so a state that emptied does not keep its last count.
            for kind in jobs::kinds::Kind::ALL {
                for job_state in queue::store::JobState::ALL {
                    metrics::gauge!("jobs", "kind" => kind.name(), "state" => job_state.as_str())
                        .set(0.0);
                }
            }
            for (kind, job_state, n) in rows {
                metrics::gauge!("jobs", "kind" => kind, "state" => job_state.as_str())
                    .set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read queue depth for /metrics"),
    }
    // Kinds an operator paused (1) or not (0).
    match queue::store::paused(&state.pool).await {
        Ok(paused) => {
            for kind in jobs::kinds::Kind::ALL {
                let is_paused = paused.iter().any(|p| p.kind == kind.name());
                metrics::gauge!("jobs_paused", "kind" => kind.name())
                    .set(f64::from(u8::from(is_paused)));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read paused kinds for /metrics"),
    }
    // Unresolved discrepancies per severity, read the same way (a partial index keeps it small).
    match ledger::discrepancies::open_by_severity(&state.pool).await {
        Ok(rows) => {
            for severity in ["low", "medium", "high"] {
                let n = rows
                    .iter()
                    .find(|(s, _)| s == severity)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("discrepancies_open", "severity" => severity).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read open discrepancies for /metrics"),
    }
    state.metrics.render()
}
