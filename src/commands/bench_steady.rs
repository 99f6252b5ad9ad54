//! `p100-recon bench cycle --steady-hours H`: what the schedule costs in P100 requests once
//! histories are synced, against the bound of reading every new row once.
//!
//! Runs in this process, on simulated time: the sandbox's clock moves 5 minutes a step and
//! the real `tx_sync::sync` runs as the schedule would run it (the partner every step, the
//! user sweep every second step, the nightly chain at the end). Daemons would add queue
//! latency, not requests: each job is one call of the same function, so counting requests
//! needs no daemon, and simulated days then take minutes instead of days.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jobs::tx_sync::{DEEP_OVERLAP, Overlap, Window};
use ledger::Owner;
use p100_sandbox::{RunningSandbox, Scenario, TxSpec, UserSpec};

use super::bench::BenchCycleArgs;
use super::bench::BenchOverlap;
use super::bench_cycle::{CURRENCIES, row, user_id};
use crate::UsageError;
use crate::settings::Settings;

/// The partner's schedule (`partner-sync`, every 5 minutes): one simulated step.
const STEP_MS: i64 = 5 * 60 * 1000;
const STEPS_PER_HOUR: u64 = 12;
const STEPS_PER_DAY: u64 = 24 * STEPS_PER_HOUR;
/// `user-sync-sweep`: every 10 minutes, the 1000 users synced longest ago.
const SWEEP_EVERY_STEPS: u64 = 2;
const SWEEP_MAX_USERS: i64 = 1000;
/// Rows per history page the sync asks for (P100's maximum).
const PAGE: u64 = p100::MAX_PAGE_SIZE as u64;

pub async fn run(settings: &Settings, args: BenchCycleArgs) -> anyhow::Result<ExitCode> {
    let hours = args.steady_hours.unwrap_or_default();
    if hours == 0 || args.users == 0 {
        return Err(UsageError("--steady-hours and --users must be at least 1".into()).into());
    }
    let url = settings.require_database_url().map_err(UsageError::from)?;
    let line = super::bench::in_scratch_database(url, |scratch| async move {
        steady_in(&scratch, &args, hours).await
    })
    .await?;
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// Requests made and the bound, for one kind of run.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    syncs: u64,
    requests: u64,
    bound: u64,
}

impl Count {
    fn json(&self, scale: f64) -> serde_json::Value {
        serde_json::json!({
            "syncs": self.syncs,
            "requests_per_sim_day": (self.requests as f64 * scale).round(),
            "bound_per_sim_day": (self.bound as f64 * scale).round(),
            "ratio": ratio(self.requests, self.bound),
        })
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    (a as f64 / b.max(1) as f64 * 1000.0).round() / 1000.0
}

#[derive(Debug, Default)]
struct Tally {
    partner: Count,
    users: Count,
    /// The partner's and users' deep re-reads (included in the counts above).
    deep: Count,
}

struct Sim {
    sandbox: RunningSandbox,
    client: p100::Client,
    pool: ledger::PgPool,
    overlap: Overlap,
    seed: u64,
    users: usize,
    partner_per_day: u64,
    user_rows_per_day: u64,
    /// Simulated time of step 0 (the end of the generated day), in ms.
    t0_ms: i64,
    /// Rows added to each history since its last sync (the bound reads each once).
    unread: HashMap<Owner, u64>,
    /// Rows added so far (row numbers for the generator).
    partner_rows: u64,
    user_rows: u64,
    tally: Tally,
}

impl Sim {
    /// Adds the rows P100 gains during step `k` (the 5 minutes ending at t0 + k × 5 min),
    /// spread evenly over it, the last at its end.
    fn add_step_rows(&mut self, k: i64) -> anyhow::Result<()> {
        let end = self.t0_ms + k * STEP_MS;
        let share = |per_day: u64| {
            let at = |k: i64| (k + STEPS_PER_DAY as i64) as u64 * per_day / STEPS_PER_DAY;
            at(k) - at(k - 1)
        };
        let partner = share(self.partner_per_day);
        let spread = |i: u64, n: u64| -> Option<DateTime<Utc>> {
            DateTime::from_timestamp_millis(end - STEP_MS + (i as i64 + 1) * STEP_MS / n as i64)
        };
        let rows: Vec<TxSpec> = (0..partner)
            .map(|i| {
                let n = self.partner_rows + i;
                let at = spread(i, partner);
                TxSpec {
                    created_at: at,
                    updated_at: at,
                    ..row(self.seed, u64::MAX, n, CURRENCIES[n as usize % 3])
                }
            })
            .collect();
        self.partner_rows += partner;
        *self.unread.entry(Owner::Partner).or_default() += partner;
        self.sandbox
            .sandbox()
            .add_transactions("partner", rows)
            .map_err(|e| anyhow::anyhow!("adding partner rows: {e}"))?;

        let users = share(self.user_rows_per_day * self.users as u64);
        let mut per_user: HashMap<usize, Vec<TxSpec>> = HashMap::new();
        for i in 0..users {
            let n = self.user_rows + i;
            let u = (n % self.users as u64) as usize;
            let at = spread(i, users);
            per_user.entry(u).or_default().push(TxSpec {
                created_at: at,
                updated_at: at,
                ..row(self.seed, u as u64, n, CURRENCIES[u % 3])
            });
        }
        self.user_rows += users;
        for (u, rows) in per_user {
            *self.unread.entry(Owner::User(user_id(u))).or_default() += rows.len() as u64;
            self.sandbox
                .sandbox()
                .add_transactions(&user_id(u), rows)
                .map_err(|e| anyhow::anyhow!("adding user rows: {e}"))?;
        }
        Ok(())
    }

    /// One `tx_sync` run, tallied: one request per page read; the bound is one request per
    /// 100 rows added since the last run, and one to learn there are none.
    async fn sync(&mut self, owner: &Owner) -> anyhow::Result<()> {
        let summary = jobs::tx_sync::sync(&self.client, &self.pool, owner, self.overlap).await?;
        let unread = self.unread.remove(owner).unwrap_or(0);
        let requests = summary.pages.max(1) as u64;
        let bound = unread.div_ceil(PAGE).max(1);
        let mut counts = vec![match owner {
            Owner::Partner => &mut self.tally.partner,
            Owner::User(_) => &mut self.tally.users,
        }];
        let deep = summary.window == Window::Deep
            || (summary.window == Window::Fixed
                && matches!(self.overlap, Overlap::Fixed(d) if d >= DEEP_OVERLAP));
        if deep {
            counts.push(&mut self.tally.deep);
        }
        for c in counts {
            c.syncs += 1;
            c.requests += requests;
            c.bound += bound;
        }
        Ok(())
    }

    async fn sweep(&mut self) -> anyhow::Result<()> {
        for user in ledger::users::due_for_sync(&self.pool, SWEEP_MAX_USERS).await? {
            self.sync(&Owner::User(user)).await?;
        }
        Ok(())
    }

    /// Step `k`: 5 minutes pass, P100 gains their rows, the partner syncs, and every second
    /// step the user sweep runs.
    async fn step(&mut self, k: u64) -> anyhow::Result<()> {
        self.sandbox
            .sandbox()
            .advance_clock(Duration::from_millis(STEP_MS as u64));
        self.add_step_rows(k as i64)?;
        self.sync(&Owner::Partner).await?;
        if k.is_multiple_of(SWEEP_EVERY_STEPS) {
            self.sweep().await?;
        }
        Ok(())
    }
}

async fn steady_in(
    url: &str,
    args: &BenchCycleArgs,
    hours: u32,
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let pool = crate::db::connect(url, 4).await?;
    crate::db::migrate(&pool).await?;
    let ids: Vec<String> = (0..args.users).map(user_id).collect();
    let sandbox = p100_sandbox::Sandbox::from_scenario(Scenario {
        users: ids
            .iter()
            .enumerate()
            .map(|(u, id)| UserSpec {
                external_user_id: id.clone(),
                currencies: vec![CURRENCIES[u % 3].to_owned()],
                ..UserSpec::default()
            })
            .collect(),
        ..Scenario::default()
    })
    .spawn()
    .await?;
    // No rate limit: requests are counted, not timed.
    let client = super::bench::unlimited_client(&sandbox.base_url())?;
    ledger::users::track(
        &pool,
        &ids,
        "bench",
        ledger::intake::FirstJob::QueuedByCaller,
    )
    .await?;
    let overlap = match args.overlap {
        BenchOverlap::Policy => Overlap::Policy,
        BenchOverlap::Fixed => Overlap::Fixed(DEEP_OVERLAP),
    };
    let mut sim = Sim {
        sandbox,
        client: client.clone(),
        pool: pool.clone(),
        overlap,
        seed: args.seed,
        users: args.users,
        partner_per_day: args.partner_rows_per_day,
        user_rows_per_day: args.user_rows_per_day,
        t0_ms: Utc::now().timestamp_millis(),
        unread: HashMap::new(),
        partner_rows: 0,
        user_rows: 0,
        tally: Tally::default(),
    };

    // The generated day before t0, then every history read once from its start (the first
    // sync, not measured).
    for k in (1 - STEPS_PER_DAY as i64)..=0 {
        sim.add_step_rows(k)?;
    }
    sim.sync(&Owner::Partner).await?;
    for id in &ids {
        sim.sync(&Owner::User(id.clone())).await?;
    }
    let warmup = u64::from(args.warmup_hours) * STEPS_PER_HOUR;
    for k in 1..=warmup {
        sim.step(k).await?;
    }
    sim.tally = Tally::default();
    sim.sandbox.sandbox().reset_stats();

    let steps = u64::from(hours) * STEPS_PER_HOUR;
    for k in warmup + 1..=warmup + steps {
        sim.step(k).await?;
    }
    let steady = std::mem::take(&mut sim.tally);

    // The nightly chain: every owner synced, then one reconciliation reading each balance.
    sim.sync(&Owner::Partner).await?;
    for id in &ids {
        sim.sync(&Owner::User(id.clone())).await?;
    }
    let nightly_syncs = std::mem::take(&mut sim.tally);
    let stats_before = sim.sandbox.sandbox().request_stats();
    let ctx = jobs::JobContext {
        pool: pool.clone(),
        p100: Some(client),
        schedule: Arc::default(),
        p100_health: Arc::default(),
        report_dir: std::env::temp_dir(),
        runs: Default::default(),
    };
    jobs::reconcile::reconcile(&ctx, &jobs::reconcile::ReconcileArgs::default())
        .await
        .map_err(|e| anyhow::anyhow!("reconciling: {e}"))?;
    let stats = sim.sandbox.sandbox().request_stats();
    let route =
        |s: &p100_sandbox::RequestStats, key: &str| s.by_route.get(key).copied().unwrap_or(0);
    let balance_calls = route(&stats, "GET /v1/partner/balances")
        + route(&stats, "GET /v1/user/balances")
        - route(&stats_before, "GET /v1/partner/balances")
        - route(&stats_before, "GET /v1/user/balances");
    let history_served =
        route(&stats, "GET /v1/partner/transactions") + route(&stats, "GET /v1/user/transactions");
    let owners = 1 + args.users as u64;

    // Syncs scale with the hours simulated; the nightly chain runs once a day whatever H.
    let scale = 24.0 / f64::from(hours);
    let nightly_requests =
        nightly_syncs.partner.requests + nightly_syncs.users.requests + balance_calls;
    let nightly_bound = nightly_syncs.partner.bound + nightly_syncs.users.bound + owners;
    let steady_requests = steady.partner.requests + steady.users.requests;
    let steady_bound = steady.partner.bound + steady.users.bound;
    let per_day = (steady_requests as f64 * scale).round() as u64 + nightly_requests;
    let bound_per_day = (steady_bound as f64 * scale).round() as u64 + nightly_bound;
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok(serde_json::json!({
        "bench": "cycle",
        "mode": "steady",
        "runs": "in process (tx_sync::sync and reconcile called as the jobs call them)",
        "overlap": match args.overlap { BenchOverlap::Policy => "policy", BenchOverlap::Fixed => "fixed_24h" },
        "steady_hours": hours,
        "warmup_hours": args.warmup_hours,
        "users": args.users,
        "partner_rows_per_day": args.partner_rows_per_day,
        "user_rows_per_day": args.user_rows_per_day,
        "requests_per_sim_day": per_day,
        "bound_per_sim_day": bound_per_day,
        "ratio": ratio(per_day, bound_per_day),
        "partner": steady.partner.json(scale),
        "user_sweeps": steady.users.json(scale),
        "deep_reads": steady.deep.json(scale),
        "nightly": {
            "history_requests": nightly_syncs.partner.requests + nightly_syncs.users.requests,
            "balance_requests": balance_calls,
            "bound": nightly_bound,
        },
        // Cross-check: what the sandbox served over the measured hours and the nightly chain.
        "history_requests_served": history_served,
        "history_requests_counted": steady_requests + nightly_syncs.partner.requests + nightly_syncs.users.requests,
        "wall_s": round(started.elapsed().as_secs_f64()),
    }))
}
