//! This process's part in the deployment-wide P100 budget: beats its membership
//! (`queue::budget`) on a connection of its own and sets the client's share and pauses from
//! what it sees. The client enforces the share locally, so no request waits on the database.
//!
//! Failure modes: the database unreachable for [`queue::budget::LOCAL_STALE`] → the share
//! falls to the reserve the others keep for a silent member (never the full budget); for
//! [`queue::budget::SILENT_LIMIT`] → no request at all, because the others are about to forget
//! that reserve. Both end at the first beat that gets through.

use sqlx::PgConnection;
use tokio::sync::watch;
use tokio::time::Instant;

use queue::budget;

/// A member sending at least this fraction of its share counts as busy.
const BUSY_USE: f64 = 0.8;

/// How the budget is shared (`P100_BUDGET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// All processes on the database share `P100_MAX_RPS` (the default).
    Deployment,
    /// Each process may send `P100_MAX_RPS` on its own (one replica, or budgets divided by
    /// hand).
    Process,
}

impl Mode {
    /// Parses the setting.
    pub fn parse(text: &str) -> Option<Mode> {
        match text.trim() {
            "deployment" => Some(Mode::Deployment),
            "process" => Some(Mode::Process),
            _ => None,
        }
    }
}

/// A running membership; [`Membership::leave`] ends it cleanly.
pub struct Membership {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Membership {
    /// Stops beating and leaves, so the others take the share at once rather than after
    /// [`budget::STALE`].
    pub async fn leave(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Joins the budget on `conn` (migrated) and keeps the client's share in step until left.
/// Returns after the first beats, once the others have made room (a share above zero), or
/// after a few beats without room (the client then waits for its share like any request).
pub async fn join(
    mut conn: PgConnection,
    connect: sqlx::postgres::PgConnectOptions,
    client: p100::Client,
    me: String,
) -> anyhow::Result<Membership> {
    client.set_share(0);
    let host = crate::worker::hostname();
    // A member of this host whose process is gone (a crash, a `kill -9`) is dead for sure:
    // retired now rather than counted until its beats go stale.
    let gone: Vec<String> = budget::members_on(&mut conn, &host)
        .await?
        .into_iter()
        .filter(|(id, pid)| {
            *id != me
                && *pid != std::process::id() as i32
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
        .map(|(id, _)| id)
        .collect();
    if !gone.is_empty() {
        tracing::info!(retired = ?gone, "budget members of this host whose process is gone are retired");
        budget::retire(&mut conn, &gone).await?;
    }
    let mut keeper = Keeper {
        conn: Some(conn),
        connect,
        budget: client.max_rps(),
        client,
        me,
        host,
        last_ok: Instant::now(),
        members: 1,
        published: None,
    };
    for _ in 0..8 {
        keeper.beat().await?;
        if keeper.client.share() > 0 {
            break;
        }
        tokio::time::sleep(budget::BEAT).await;
    }
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(keeper.run(stopped));
    Ok(Membership { stop, task })
}

struct Keeper {
    conn: Option<PgConnection>,
    connect: sqlx::postgres::PgConnectOptions,
    budget: u32,
    client: p100::Client,
    me: String,
    host: String,
    /// When the last beat that got through was sent.
    last_ok: Instant,
    /// Members at the last beat (sizes the reserve when falling back).
    members: u32,
    /// The latest pause this process published.
    published: Option<std::time::SystemTime>,
}

impl Keeper {
    /// One beat: lowers the share before the lower cap commits, raises it only after.
    async fn beat(&mut self) -> anyhow::Result<()> {
        let sent = Instant::now();
        let (starved, used) = self.client.take_demand();
        // Wanting more: requests waited for a full window, or the share is all but spent
        // (a job whose concurrency just fills its share never sees a full window).
        let busy = starved || used >= f64::from(self.client.share()) * BUSY_USE;
        let pause = *self.client.rate_limited().borrow();
        let pause = pause.filter(|p| Some(*p) != self.published);
        let (budget_rps, client) = (self.budget, self.client.clone());
        let (me, host) = (self.me.clone(), self.host.clone());
        let conn = &mut self.conn;
        let connect = &self.connect;
        let attempt = async move {
            if conn.is_none() {
                *conn = Some(<PgConnection as sqlx::Connection>::connect_with(connect).await?);
            }
            let c = conn.as_mut().expect("connected just above");
            let beat = budget::beat(
                c,
                &me,
                (&host, std::process::id() as i32),
                budget_rps,
                budget::Demand { busy, used },
                pause.map(chrono::DateTime::from),
            )
            .await?;
            if beat.cap < client.share() {
                client.set_share(beat.cap);
            }
            let seen = (beat.cap, beat.live + beat.silent, beat.pause_left);
            beat.commit().await?;
            anyhow::Ok(seen)
        };
        // A half-open connection must not hold the share for longer than a fallback allows.
        let result = match tokio::time::timeout(budget::LOCAL_STALE, attempt).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("budget beat timed out")),
        };
        let (cap, members, pause_left) = match result {
            Ok(seen) => seen,
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        self.last_ok = sent;
        self.members = members;
        if pause.is_some() {
            self.published = pause;
        }
        if cap != self.client.share() {
            tracing::debug!(
                share_rps = cap,
                members,
                busy,
                "P100 budget share is now {cap} of {} requests/s",
                self.budget
            );
        }
        self.client.set_share(cap);
        metrics::gauge!("p100_budget_members").set(f64::from(members));
        metrics::gauge!("p100_budget_fallback").set(0.0);
        if let Some(left) = pause_left.filter(|d| !d.is_zero()) {
            self.client.hold_off(left);
        }
        Ok(())
    }

    /// The share while the database cannot be reached.
    fn fall_back(&self) {
        let silent = self.last_ok.elapsed();
        let share = if silent >= budget::SILENT_LIMIT {
            0
        } else if silent >= budget::LOCAL_STALE {
            budget::reserve(self.budget, self.members).min(self.client.share())
        } else {
            return;
        };
        if share != self.client.share() {
            tracing::warn!(
                share_rps = share,
                silent_ms = silent.as_millis() as u64,
                "the database is unreachable: P100 budget share falls to {share} requests/s"
            );
        }
        self.client.set_share(share);
        metrics::gauge!("p100_budget_fallback").set(1.0);
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut rate_limited = self.client.rate_limited();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(budget::BEAT) => {}
                // A 429 here: published at once, every other member hears at its next beat.
                changed = rate_limited.changed() => if changed.is_err() { break },
                _ = stop.changed() => break,
            }
            if let Err(e) = self.beat().await {
                tracing::warn!(error = %e, "P100 budget beat failed");
                self.fall_back();
            }
        }
        if let Some(conn) = self.conn.as_mut()
            && let Err(e) = budget::retire(conn, std::slice::from_ref(&self.me)).await
        {
            tracing::warn!(error = %e, "leaving the P100 budget failed; the others take the share after {} s", budget::STALE.as_secs());
        }
    }
}
