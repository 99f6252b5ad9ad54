//! Membership of the deployment-wide P100 budget (SPEC §2.2): every process that calls P100
//! beats a row of `p100_budget_members`, and the members share `P100_MAX_RPS` so replicas
//! never exceed it together whatever their number. Each process enforces its cap locally: no
//! database round trip per request.
//!
//! The invariant is that the members' caps sum to at most the budget, a silent member counted
//! at its reserve (what it falls back to):
//! - beats are serialised (an advisory lock), and a member raises its cap only to what the
//!   others' caps leave; it lowers its own sending rate *before* its lower cap commits
//!   ([`Beat::commit`]), and raises it only after;
//! - a member that could not beat for [`LOCAL_STALE`] falls back to its reserve; the others
//!   count it at that reserve only after [`STALE`] (a later instant), until they forget it after
//!   [`FORGET`]; it stops calling P100 altogether at [`SILENT_LIMIT`], before that;
//! - a member back from silence starts again from its reserve (or from nothing, if forgotten).
//!
//! Shares follow demand: a member whose requests waited for slots since its last beat is busy;
//! idle members keep twice what they used (at least a floor, so a sudden urgent request still
//! finds a slot), and busy ones split the rest. When nobody is busy the split is even.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Row, Transaction};

use crate::Error;

/// How often a member beats (and learns the others' changes and any pause).
pub const BEAT: Duration = Duration::from_millis(500);
/// A member that could not beat for this long falls back to its reserve.
pub const LOCAL_STALE: Duration = Duration::from_millis(1500);
/// The others count a member at its reserve after this long without a beat.
pub const STALE: Duration = Duration::from_secs(3);
/// The others forget a silent member (and its reserve) after this long.
pub const FORGET: Duration = Duration::from_secs(60);
/// A member that could not beat for this long stops calling P100: the others are about to
/// forget its reserve.
pub const SILENT_LIMIT: Duration = Duration::from_secs(45);
/// A silent member's reserve: this fraction of an even share.
const RESERVE_DIVISOR: u32 = 10;
/// An idle member keeps at least this fraction of an even share, so an urgent request that
/// arrives there finds a slot before the member turns busy and grows…
const FLOOR_DIVISOR: u32 = 20;
/// …but never more than this many requests per second (a request waits half a second at
/// most): with 200 rps and three members, a twentieth of an even share left 3 % of the budget
/// unused whenever one member did all the work.
const FLOOR_MAX_RPS: u32 = 2;
/// Serialises beats, so each sees the others' caps as they are.
const BEAT_LOCK: i64 = 0x7031_3030_6275_6467;

/// What this member says of itself at a beat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Requests waited for a slot since the last beat.
    pub busy: bool,
    /// Requests per second sent since the last beat.
    pub used: f64,
}

/// One member as a beat sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its id.
    pub id: String,
    /// Busy at its last beat.
    pub busy: bool,
    /// Requests per second at its last beat.
    pub used: f64,
}

/// The reserve a silent member may spend (and the others leave it), for `members`.
pub fn reserve(budget: u32, members: u32) -> u32 {
    budget / (RESERVE_DIVISOR * members.max(1))
}

/// The cap `me` should have: `live` members (sorted by id, `me` among them) share the budget
/// less the reserves of `silent` members.
pub fn target(budget: u32, live: &[Member], silent: u32, me: &str) -> u32 {
    let Some(index) = live.iter().position(|m| m.id == me) else {
        return 0;
    };
    let n = live.len() as u32;
    let available = budget.saturating_sub(silent * reserve(budget, n + silent));
    let even = |i: usize, total: u32, of: u32| total / of + u32::from((i as u32) < total % of);
    let busy: Vec<usize> = (0..live.len()).filter(|&i| live[i].busy).collect();
    if busy.is_empty() {
        return even(index, available, n);
    }
    let most = available / n;
    let floor = (most / FLOOR_DIVISOR).clamp(1, FLOOR_MAX_RPS).min(most);
    let keep = |m: &Member| ((m.used * 2.0).ceil() as u32).clamp(floor, most);
    if !live[index].busy {
        return keep(&live[index]);
    }
    let idle: u32 = live.iter().filter(|m| !m.busy).map(keep).sum();
    let rank = busy.iter().position(|&i| i == index).unwrap_or(0);
    even(rank, available.saturating_sub(idle), busy.len() as u32)
}

/// A beat in progress: its transaction holds the beat lock. [`Beat::commit`] makes `cap`
/// this member's; until then the previous cap stands.
pub struct Beat<'c> {
    tx: Transaction<'c, Postgres>,
    /// The cap this member had (after any fall back the others assumed).
    pub previous: u32,
    /// The cap it has once committed: never more than the others leave.
    pub cap: u32,
    /// Live members, this one included.
    pub live: u32,
    /// Silent members not yet forgotten.
    pub silent: u32,
    /// How long every member must still hold off (a 429 somewhere).
    pub pause_left: Option<Duration>,
}

impl Beat<'_> {
    /// Commits the new cap.
    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// Starts a beat for `me` with a `budget`: proves it alive, publishes a pause it was asked for,
/// and works out its new cap from the others' (see the module's invariant).
pub async fn beat<'c>(
    conn: &'c mut PgConnection,
    me: &str,
    (host, pid): (&str, i32),
    budget: u32,
    demand: Demand,
    pause: Option<DateTime<Utc>>,
) -> Result<Beat<'c>, Error> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(BEAT_LOCK)
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "SELECT id, cap, busy, used, stopped_at IS NOT NULL AS stopped,
                extract(epoch FROM now() - last_seen)::float8 AS silent_for
           FROM p100_budget_members
          WHERE id = $1 OR (stopped_at IS NULL AND last_seen > now() - make_interval(secs => $2))
          ORDER BY id",
    )
    .bind(me)
    .bind(FORGET.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let mut live = Vec::new();
    // The others' caps, and whether each is silent (counted at its reserve).
    let mut others = Vec::new();
    let mut previous = None;
    for row in &rows {
        let id: String = row.try_get("id")?;
        let cap = row.try_get::<i32, _>("cap")?.max(0) as u32;
        let silent_for = Duration::from_secs_f64(row.try_get::<f64, _>("silent_for")?.max(0.0));
        let stopped: bool = row.try_get("stopped")?;
        if id == me {
            previous = Some((cap, silent_for, stopped));
            live.push(Member {
                id,
                busy: demand.busy,
                used: demand.used,
            });
        } else if silent_for < STALE {
            others.push((cap, false));
            live.push(Member {
                id,
                busy: row.try_get("busy")?,
                used: f64::from(row.try_get::<f32, _>("used")?),
            });
        } else {
            others.push((cap, true));
        }
    }
    let silent = others.iter().filter(|(_, s)| *s).count() as u32;
    let reserve = reserve(budget, live.len() as u32 + silent);
    let previous = match previous {
        None => 0,
        Some((_, silent_for, stopped)) if stopped || silent_for >= FORGET => 0,
        // The others have counted it at its reserve: that is all it may have now.
        Some((cap, silent_for, _)) if silent_for >= STALE => cap.min(reserve),
        Some((cap, _, _)) => cap,
    };
    let others: u32 = others
        .iter()
        .map(|&(cap, silent)| if silent { cap.min(reserve) } else { cap })
        .sum();
    let room = budget.saturating_sub(others);
    let cap = target(budget, &live, silent, me).min(room);
    sqlx::query(
        r#"
        INSERT INTO p100_budget_members (id, host, pid, cap, busy, used)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (id) DO UPDATE
           SET last_seen = now(), stopped_at = NULL, cap = excluded.cap,
               busy = excluded.busy, used = excluded.used,
               joined_at = CASE WHEN p100_budget_members.stopped_at IS NOT NULL
                                  OR p100_budget_members.last_seen < now() - make_interval(secs => $7)
                                THEN now() ELSE p100_budget_members.joined_at END
        "#,
    )
    .bind(me)
    .bind(host)
    .bind(pid)
    .bind(cap as i32)
    .bind(demand.busy)
    .bind(demand.used as f32)
    .bind(FORGET.as_secs_f64())
    .execute(&mut *tx)
    .await?;
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
    let pause_left: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM paused_until - now())::float8 FROM p100_budget_pause
          WHERE paused_until > now()",
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(Beat {
        tx,
        previous,
        cap,
        live: live.len() as u32,
        silent,
        pause_left: pause_left.map(|s| Duration::from_secs_f64(s.max(0.0))),
    })
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

/// Marks members as stopped (known dead, or leaving): their caps are free at once.
pub async fn retire(conn: &mut PgConnection, ids: &[String]) -> Result<(), Error> {
    sqlx::query(
        "UPDATE p100_budget_members SET stopped_at = now(), cap = 0 WHERE id = ANY($1) AND stopped_at IS NULL",
    )
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM p100_budget_members WHERE last_seen < now() - interval '1 day' OR stopped_at < now() - interval '1 hour'",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The deployment's budget as an operator sees it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Status {
    /// Members heard from in the last [`STALE`].
    pub live_members: i64,
    /// The sum of their caps (requests per second).
    pub caps: i64,
    /// How many of them want more than their cap.
    pub busy: i64,
    /// Until when a 429's `Retry-After` pauses every member, when it does.
    pub paused_until: Option<DateTime<Utc>>,
}

/// Reads the membership and the pause (for the console; takes no lock).
pub async fn status(db: impl sqlx::PgExecutor<'_>) -> Result<Status, Error> {
    Ok(sqlx::query_as(
        "SELECT count(*) AS live_members, coalesce(sum(cap), 0)::bigint AS caps,
                count(*) FILTER (WHERE busy) AS busy,
                (SELECT paused_until FROM p100_budget_pause WHERE paused_until > now()) AS paused_until
           FROM p100_budget_members
          WHERE stopped_at IS NULL AND last_seen > now() - make_interval(secs => $1)",
    )
    .bind(STALE.as_secs_f64())
    .fetch_one(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, busy: bool, used: f64) -> Member {
        Member {
            id: id.into(),
            busy,
            used,
        }
    }

    fn targets(budget: u32, live: &[Member], silent: u32) -> Vec<u32> {
        live.iter()
            .map(|x| target(budget, live, silent, &x.id))
            .collect()
    }

    #[test]
    fn with_nobody_busy_the_split_is_even_and_exact() {
        let live = [m("a", false, 0.0), m("b", false, 0.0), m("c", false, 0.0)];
        assert_eq!(targets(10, &live, 0), vec![4, 3, 3]);
        assert_eq!(target(10, &live, 0, "stranger"), 0);
        // One of four went silent: it keeps its reserve, the others split the rest.
        assert_eq!(reserve(200, 4), 5);
        assert_eq!(targets(200, &live, 1), vec![65, 65, 65]);
    }

    #[test]
    fn a_busy_member_gets_what_idle_ones_do_not_use() {
        let live = [m("a", true, 66.0), m("b", false, 0.0), m("c", false, 4.0)];
        // Idle: b keeps the floor (2 rps), c twice its use; a the rest.
        assert_eq!(targets(200, &live, 0), vec![190, 2, 8]);
        let live = [m("a", true, 90.0), m("b", true, 90.0), m("c", false, 1.0)];
        assert_eq!(targets(200, &live, 0), vec![99, 99, 2]);
    }

    #[test]
    fn targets_never_sum_past_the_budget() {
        for budget in [1, 2, 3, 7, 10, 99, 200, 1000] {
            for n in 1..=6 {
                for busy_mask in 0..(1u32 << n) {
                    for silent in 0..=2 {
                        let live: Vec<Member> = (0..n)
                            .map(|i| {
                                m(
                                    &format!("m{i}"),
                                    busy_mask & (1 << i) != 0,
                                    f64::from(i * 7),
                                )
                            })
                            .collect();
                        let sum: u32 = targets(budget, &live, silent).iter().sum();
                        let reserves = silent * reserve(budget, n + silent);
                        assert!(
                            sum + reserves <= budget,
                            "{budget} {n} {busy_mask:b} {silent}: {sum}"
                        );
                    }
                }
            }
        }
    }
}
