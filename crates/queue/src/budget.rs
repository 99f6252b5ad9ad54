//! Membership of the deployment-wide P100 budget (SPEC §2.2): every process that calls P100
//! beats a row of `p100_budget_members`, and the live members split `P100_MAX_RPS` among
//! themselves, so replicas never exceed it together whatever their number. Each process
//! enforces its share locally: no database round trip per request.
//!
//! The rules keep the sum of shares within the budget through every change:
//! - A member that joins while others are live spends nothing for [`JOIN_WAIT`], by which time
//!   every other member has beaten (and lowered its share) or fallen back.
//! - A member that could not beat for [`LOCAL_STALE`] falls back to a small reserve; the
//!   others count it absent only after [`STALE`] (a later instant), and keep that reserve
//!   unspent until they forget it after [`FORGET`]; it stops calling P100 altogether before.
//! - A 429's `Retry-After` seen by any member is written to `p100_budget_pause` at once and
//!   every member holds off until it ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use crate::Error;

/// How often a member beats (and learns the others' changes and any pause).
pub const BEAT: Duration = Duration::from_millis(500);
/// A member that could not beat for this long falls back to its reserve.
pub const LOCAL_STALE: Duration = Duration::from_millis(1500);
/// The others count a member absent after this long without a beat (after it fell back).
pub const STALE: Duration = Duration::from_secs(3);
/// A member joining while others are live spends nothing for this long.
pub const JOIN_WAIT: Duration = Duration::from_secs(2);
/// An absent member's reserve is kept this long; it spends nothing after [`SILENT_LIMIT`].
pub const FORGET: Duration = Duration::from_secs(60);
/// A member that could not beat for this long stops calling P100 (the others are about to
/// forget its reserve).
pub const SILENT_LIMIT: Duration = Duration::from_secs(45);
/// An absent member's reserve: this fraction of an even share.
const RESERVE_DIVISOR: u32 = 10;
/// Any constant: serialises joins so two members starting together see each other.
const JOIN_LOCK: i64 = 0x7031_3030_6275_6467;

/// What a beat sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Live members' ids, sorted (this one included).
    pub live: Vec<String>,
    /// Members silent for longer than [`STALE`] but not yet forgotten.
    pub absent: u32,
    /// How long this member has been a member.
    pub member_for: Duration,
    /// How long every member must still hold off (a 429 somewhere).
    pub pause_left: Option<Duration>,
}

impl View {
    /// Members the budget is divided among (absent ones keep a reserve).
    pub fn members(&self) -> u32 {
        self.live.len() as u32 + self.absent
    }
}

/// The reserve an absent member may spend (and the others keep for it), for `members`.
pub fn reserve(budget: u32, members: u32) -> u32 {
    budget / (RESERVE_DIVISOR * members.max(1))
}

/// `me`'s share of `budget` in `view`: the budget less absent members' reserves, split evenly
/// among the live members, the remainder to the first ids (the shares sum to the budget).
pub fn share(budget: u32, view: &View, me: &str) -> u32 {
    let Some(index) = view.live.iter().position(|id| id == me) else {
        return 0;
    };
    let live = view.live.len() as u32;
    let available = budget.saturating_sub(view.absent * reserve(budget, view.members()));
    available / live + u32::from((index as u32) < available % live)
}

/// Joins: registers `me`; true when no other member was live (nobody to wait for).
pub async fn join(conn: &mut PgConnection, me: &str, host: &str, pid: i32) -> Result<bool, Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(JOIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM p100_budget_members
          WHERE id <> $1 AND stopped_at IS NULL AND last_seen > now() - make_interval(secs => $2)",
    )
    .bind(me)
    .bind(STALE.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        r#"
        INSERT INTO p100_budget_members (id, host, pid) VALUES ($1, $2, $3)
        ON CONFLICT (id) DO UPDATE SET last_seen = now(), stopped_at = NULL
        "#,
    )
    .bind(me)
    .bind(host)
    .bind(pid)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(others == 0)
}

/// One beat: proves `me` alive, publishes a pause it was asked for, and reads the members and
/// any pause. A member back from silence (absent to the others) is a joiner again: its
/// membership restarts, so it waits [`JOIN_WAIT`] before spending a full share.
pub async fn beat(
    conn: &mut PgConnection,
    me: &str,
    host: &str,
    pid: i32,
    pause: Option<DateTime<Utc>>,
) -> Result<View, Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let seen = sqlx::query(
        r#"
        INSERT INTO p100_budget_members (id, host, pid) VALUES ($1, $2, $3)
        ON CONFLICT (id) DO UPDATE
           SET last_seen = now(), stopped_at = NULL,
               joined_at = CASE WHEN p100_budget_members.last_seen < now() - make_interval(secs => $4)
                                  OR p100_budget_members.stopped_at IS NOT NULL
                                THEN now() ELSE p100_budget_members.joined_at END
        RETURNING extract(epoch FROM now() - joined_at)::float8 AS member_for
        "#,
    )
    .bind(me)
    .bind(host)
    .bind(pid)
    .bind(STALE.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let member_for: f64 = seen.try_get("member_for")?;
    if let Some(until) = pause {
        sqlx::query(
            r#"
            INSERT INTO p100_budget_pause (singleton, paused_until, set_by) VALUES (true, $1, $2)
            ON CONFLICT (singleton) DO UPDATE SET paused_until = excluded.paused_until,
                                                  set_by = excluded.set_by
             WHERE p100_budget_pause.paused_until < excluded.paused_until
            "#,
        )
        .bind(until)
        .bind(me)
        .execute(&mut *tx)
        .await?;
    }
    let rows = sqlx::query(
        "SELECT id, last_seen > now() - make_interval(secs => $1) AS live
           FROM p100_budget_members
          WHERE stopped_at IS NULL AND last_seen > now() - make_interval(secs => $2)
          ORDER BY id",
    )
    .bind(STALE.as_secs_f64())
    .bind(FORGET.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let pause_left: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM paused_until - now())::float8 FROM p100_budget_pause
          WHERE paused_until > now()",
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut view = View {
        live: Vec::new(),
        absent: 0,
        member_for: Duration::from_secs_f64(member_for.max(0.0)),
        pause_left: pause_left.map(|s| Duration::from_secs_f64(s.max(0.0))),
    };
    for row in rows {
        if row.try_get::<bool, _>("live")? {
            view.live.push(row.try_get("id")?);
        } else {
            view.absent += 1;
        }
    }
    Ok(view)
}

/// Live members on `host`, with their process ids: a process that is gone from this host is
/// known dead without waiting for its beats to go stale.
pub async fn members_on(conn: &mut PgConnection, host: &str) -> Result<Vec<(String, i32)>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, pid FROM p100_budget_members WHERE host = $1 AND stopped_at IS NULL",
    )
    .bind(host)
    .fetch_all(&mut *conn)
    .await?)
}

/// Marks members known dead as stopped: the others take their shares at their next beat.
pub async fn retire(conn: &mut PgConnection, ids: &[String]) -> Result<(), Error> {
    sqlx::query("UPDATE p100_budget_members SET stopped_at = now() WHERE id = ANY($1) AND stopped_at IS NULL")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Leaves cleanly: the others take the share at their next beat.
pub async fn leave(conn: &mut PgConnection, me: &str) -> Result<(), Error> {
    sqlx::query("UPDATE p100_budget_members SET stopped_at = now() WHERE id = $1")
        .bind(me)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM p100_budget_members WHERE last_seen < now() - interval '1 day' OR (stopped_at IS NOT NULL AND stopped_at < now() - interval '1 hour')",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(live: &[&str], absent: u32) -> View {
        View {
            live: live.iter().map(|s| (*s).to_owned()).collect(),
            absent,
            member_for: Duration::ZERO,
            pause_left: None,
        }
    }

    #[test]
    fn live_members_split_the_budget_exactly_and_absent_ones_keep_a_reserve() {
        let v = view(&["a", "b", "c"], 0);
        let shares: Vec<u32> = ["a", "b", "c"].iter().map(|m| share(10, &v, m)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        assert_eq!(share(10, &v, "stranger"), 0);

        // One of four went silent: it may spend its reserve, the others split the rest.
        let v = view(&["a", "b", "c"], 1);
        let reserve = reserve(200, 4);
        assert_eq!(reserve, 5);
        let shares: Vec<u32> = ["a", "b", "c"].iter().map(|m| share(200, &v, m)).collect();
        assert_eq!(shares.iter().sum::<u32>() + reserve, 200);
        assert_eq!(shares, vec![65, 65, 65]);
    }

    #[test]
    fn shares_never_sum_past_the_budget() {
        for budget in [1, 2, 3, 7, 10, 99, 200, 1000] {
            for live in 1..=7 {
                for absent in 0..=3 {
                    let ids: Vec<String> = (0..live).map(|i| format!("m{i}")).collect();
                    let v = View {
                        live: ids.clone(),
                        absent,
                        member_for: Duration::ZERO,
                        pause_left: None,
                    };
                    let sum: u32 = ids.iter().map(|m| share(budget, &v, m)).sum();
                    let reserves = absent * reserve(budget, v.members());
                    assert_eq!(sum + reserves, budget, "{budget} {live} {absent}");
                }
            }
        }
    }
}
