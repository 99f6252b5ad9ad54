//! The webhook inbox: every delivery P100 made, what it named, and what it led to.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::Error;

/// A delivery that P100 repeats within this window is the same delivery (P100 retries for
/// about two minutes: 8 + 16 + 32 + 64 s). The same body later is a new event.
pub const REPEAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Valid, about something we follow: it brings a polling job forward.
    Accepted,
    /// Answered 400: not JSON, too large, or without its entity id.
    Rejected,
    /// Valid but about nothing we follow (kept and shown, not acted on).
    Ignored,
}

impl DeliveryState {
    /// Every state, in display order.
    pub const ALL: [DeliveryState; 3] = [
        DeliveryState::Accepted,
        DeliveryState::Rejected,
        DeliveryState::Ignored,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Accepted => "accepted",
            DeliveryState::Rejected => "rejected",
            DeliveryState::Ignored => "ignored",
        }
    }

    /// The state of a stored name.
    pub fn parse(name: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A delivery to store.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    /// The route's name (`kyc`, `sepa-transfer` …).
    pub route: &'a str,
    /// Accepted or rejected (ignoring is decided when it is acted on).
    pub state: DeliveryState,
    /// Why it was rejected.
    pub reason: Option<&'a str>,
    /// The entity it names.
    pub entity_id: Option<&'a str>,
    /// The user it names.
    pub external_user_id: Option<&'a str>,
    /// The status it claims.
    pub status: Option<&'a str>,
    /// The body as text (bounded by the caller).
    pub body: &'a str,
    /// The body's length in bytes as received.
    pub body_bytes: i32,
    /// The canonical form repeats are recognised by.
    pub canonical: &'a [u8],
}

/// Stores a delivery; a repeat of one received within [`REPEAT_WINDOW`] is counted on that
/// row instead. Returns the row's id and whether it was a repeat. Committed when it returns.
pub async fn receive(db: impl PgExecutor<'_>, d: &NewDelivery<'_>) -> Result<(i64, bool), Error> {
    Ok(sqlx::query_as(
        "SELECT delivery_id, repeated FROM p100_recon_receive_webhook($1, $2, $3, $4, $5, $6, $7, $8, $9, make_interval(secs => $10))",
    )
    .bind(d.route)
    .bind(d.state.as_str())
    .bind(d.reason)
    .bind(d.entity_id)
    .bind(d.external_user_id)
    .bind(d.status)
    .bind(d.body)
    .bind(d.body_bytes)
    .bind(d.canonical)
    .bind(REPEAT_WINDOW.as_secs_f64())
    .fetch_one(db)
    .await?)
}

/// One stored delivery.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Delivery {
    /// Local id.
    pub id: i64,
    /// The route's name.
    pub route: String,
    /// First received.
    pub received_at: DateTime<Utc>,
    /// Last received (a repeat).
    pub last_received_at: DateTime<Utc>,
    /// How many times P100 delivered it.
    pub deliveries: i32,
    /// `accepted`, `rejected` or `ignored`.
    pub state: String,
    /// Why rejected or ignored.
    pub reason: Option<String>,
    /// The entity it names.
    pub entity_id: Option<String>,
    /// The user it names.
    pub external_user_id: Option<String>,
    /// The status it claims.
    pub status: Option<String>,
    /// The body's length as received.
    pub body_bytes: i32,
    /// When it was acted on.
    pub acted_at: Option<DateTime<Utc>>,
    /// What it led to.
    pub effect: Option<String>,
    /// The job it brought forward.
    pub job_id: Option<i64>,
    /// When that job's run confirmed it.
    pub confirmed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, route, received_at, last_received_at, deliveries, state, reason, \
     entity_id, external_user_id, status, body_bytes, acted_at, effect, job_id, confirmed_at";

/// Accepted deliveries not yet acted on, oldest first, locked for the caller's transaction
/// (other replicas skip them).
pub async fn claim_unacted(conn: &mut PgConnection, limit: i64) -> Result<Vec<Delivery>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhook_deliveries
          WHERE state = 'accepted' AND acted_at IS NULL
          ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(conn)
        .await?)
}

/// What acting on a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// `accepted` (something was brought forward or nothing needed doing) or `ignored`.
    pub state: DeliveryState,
    /// One line for people.
    pub text: String,
    /// The job brought forward and the `runs` it will have once its answering run ended.
    pub job: Option<(i64, i32)>,
}

/// Records what acting on a delivery did.
pub async fn record_effect(db: impl PgExecutor<'_>, id: i64, effect: &Effect) -> Result<(), Error> {
    let reason = match effect.state {
        DeliveryState::Ignored => Some(effect.text.as_str()),
        _ => None,
    };
    sqlx::query(
        "UPDATE webhook_deliveries
            SET acted_at = now(), state = $2, effect = $3, reason = COALESCE($4, reason),
                job_id = $5, job_runs = $6
          WHERE id = $1",
    )
    .bind(id)
    .bind(effect.state.as_str())
    .bind(&effect.text)
    .bind(reason)
    .bind(effect.job.map(|j| j.0))
    .bind(effect.job.map(|j| j.1))
    .execute(db)
    .await?;
    Ok(())
}

/// Marks confirmed, now, every delivery of the last hour whose job has ended the run that
/// answers it (or ended for good; older ones are left: their job was cancelled, pruned or is
/// stuck, which the job's own state tells). One statement, so among replicas looking at once
/// each delivery is reported by the one that marks it. Returns each one's route and arrival.
/// (It reads the queue's `jobs` table: the one place the inbox meets the queue.)
pub async fn confirm_answered(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(String, DateTime<Utc>)>, Error> {
    Ok(sqlx::query_as(
        "UPDATE webhook_deliveries d SET confirmed_at = now()
           FROM jobs j
          WHERE j.id = d.job_id AND d.job_id IS NOT NULL AND d.confirmed_at IS NULL
            AND d.received_at > now() - interval '1 hour'
            AND (j.runs >= d.job_runs OR j.state IN ('done', 'dead', 'cancelled'))
        RETURNING d.route, d.received_at",
    )
    .fetch_all(db)
    .await?)
}

/// Filter of [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this route.
    pub route: Option<String>,
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// Deliveries, newest first.
pub async fn list(db: impl PgExecutor<'_>, filter: &ListFilter) -> Result<Vec<Delivery>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhook_deliveries
          WHERE ($1::text IS NULL OR route = $1) AND ($2::text IS NULL OR state = $2)
          ORDER BY id DESC LIMIT $3"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&filter.route)
        .bind(filter.state.map(DeliveryState::as_str))
        .bind(filter.limit)
        .fetch_all(db)
        .await?)
}

/// One delivery with its body.
pub async fn show(db: impl PgExecutor<'_>, id: i64) -> Result<Option<(Delivery, String)>, Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        delivery: Delivery,
        body: String,
    }
    let sql = format!("SELECT {COLUMNS}, body FROM webhook_deliveries WHERE id = $1");
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| (r.delivery, r.body)))
}

/// Deletes up to `limit` deliveries last received more than `age` ago that are done with:
/// refused, ignored, or acted on. An accepted delivery not yet acted on is kept whatever its
/// age. Returns how many were deleted.
pub async fn prune(
    db: impl PgExecutor<'_>,
    age: std::time::Duration,
    limit: i64,
) -> Result<u64, Error> {
    Ok(sqlx::query(
        "DELETE FROM webhook_deliveries WHERE id IN (
             SELECT id FROM webhook_deliveries
              WHERE received_at < now() - make_interval(secs => $1)
                AND last_received_at < now() - make_interval(secs => $1)
                AND (state <> 'accepted' OR acted_at IS NOT NULL)
              LIMIT $2)",
    )
    .bind(age.as_secs_f64())
    .bind(limit)
    .execute(db)
    .await?
    .rows_affected())
}

/// Counts over the inbox (or its deliveries since a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Totals {
    /// Rows (distinct deliveries).
    pub events: i64,
    /// Deliveries including P100's repeats.
    pub deliveries: i64,
    /// Rows that brought a job forward.
    pub brought_forward: i64,
    /// Rows whose job's run has answered them.
    pub confirmed: i64,
    /// Rows about nothing we follow.
    pub ignored: i64,
    /// Rows refused (400) with their reason.
    pub rejected: i64,
    /// The latest delivery that was not refused.
    pub last_received_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Counts over the deliveries first received since `since` (the whole inbox when `None`).
pub async fn totals(
    db: impl PgExecutor<'_>,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Totals, Error> {
    // Two statements rather than `$1 IS NULL OR …`, which a generic plan could not answer
    // from the index on `received_at`.
    const COUNTS: &str =
        "SELECT count(*) AS events, coalesce(sum(deliveries), 0)::bigint AS deliveries,
                count(job_id) AS brought_forward, count(confirmed_at) AS confirmed,
                count(*) FILTER (WHERE state = 'ignored') AS ignored,
                count(*) FILTER (WHERE state = 'rejected') AS rejected,
                max(last_received_at) FILTER (WHERE state <> 'rejected') AS last_received_at
           FROM webhook_deliveries";
    Ok(match since {
        None => sqlx::query_as(COUNTS).fetch_one(db).await?,
        Some(since) => {
            let sql = format!("{COUNTS} WHERE received_at >= $1");
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(since)
                .fetch_one(db)
                .await?
        }
    })
}
