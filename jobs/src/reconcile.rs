//! `reconcile`: compares P100's balances with the ledger (SPEC §5) and records what differs.
//!
//! A run covers the partner, one user, or (`all`) the partner plus the tracked users that had
//! activity since their last reconciliation or were not reconciled within the rolling window,
//! as many as the P100 call budget allows. With `sync`, each owner's history is synced first
//! (the nightly chain); a failed sync makes the run, and its report, incomplete with the
//! reason. Balances are read in concurrent batches; each account is compared with the ledger
//! at the instant its balance was read. The comparison is `recon::check` (pure); this module
//! loads, stores and counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use ledger::Owner;
use ledger::discrepancies::Finding;
use queue::Outcome;
use recon::check::{
    AccountInput, AccountStatus, Class, LocalOp, OpKind, OpState, ProviderRow, TxFinding, TxRules,
};
use recon::report::{CurrencyTotal, Explanation, UnmatchedTransaction};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::context::JobContext;

/// Who the run's discrepancy events are attributed to.
const ACTOR: &str = "reconcile";
/// Owners whose balances are read and compared together.
const BATCH: usize = 500;
/// Balance reads in flight at once (the client's rate limit still applies).
const CONCURRENCY: usize = 32;

/// Payload of `reconcile`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconcileArgs {
    /// Payload version.
    #[serde(default)]
    pub v: u32,
    /// Only the partner.
    #[serde(default)]
    pub partner: bool,
    /// Only this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Sync each owner's history first (the nightly chain).
    #[serde(default)]
    pub sync: bool,
    /// Queue the day's report when the run is recorded.
    #[serde(default)]
    pub report: bool,
    /// Every tracked user is reconciled at least once per this many hours (default 168).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_hours: Option<u64>,
    /// P100 calls the run may spend (default: `P100_MAX_RPS` × 3600, one hour's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_calls: Option<u64>,
    /// Tolerance per currency (default zero), e.g. `{"eur": "0.01"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tolerance: BTreeMap<String, Decimal>,
    /// How long a settled local operation may be absent from P100's history (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
    /// How long something may stay pending (default 72 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after_seconds: Option<u64>,
    /// A follow-up of this run: exactly the owners it left unchecked (`partner` and `users`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up_of: Option<i64>,
    /// With `follow_up_of`: the users to cover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// With `follow_up_of`: how many follow-ups came before this one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub follow_up_depth: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Follow-ups in a chain at most: P100 unavailable for this long is an outage a person
/// should see, not something to keep retrying quietly.
const MAX_FOLLOW_UPS: u32 = 12;
/// A follow-up runs this long after the run that queued it.
const FOLLOW_UP_AFTER: chrono::Duration = chrono::Duration::minutes(5);

impl ReconcileArgs {
    /// `all`, `partner` or `user:<id>`.
    pub fn scope(&self) -> String {
        if let Some(run) = self.follow_up_of {
            return format!("follow-up:{run}");
        }
        match (&self.user, self.partner) {
            (Some(id), _) => format!("user:{id}"),
            (None, true) => "partner".to_owned(),
            (None, false) => "all".to_owned(),
        }
    }
}

/// What a run recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: i64,
    /// When it started (its report is the report of that day).
    pub started_at: DateTime<Utc>,
    /// Accounts compared.
    pub accounts_checked: i64,
    /// Matched.
    pub matched: i64,
    /// Matched in flight.
    pub matched_in_flight: i64,
    /// Discrepancies found.
    pub discrepancies: i64,
    /// Discrepancies resolved because they match again.
    pub auto_resolved: u64,
    /// P100 requests the run made.
    pub p100_calls: u64,
    /// Whether it was complete.
    pub complete: bool,
}

/// One run, as the queue calls it.
pub async fn run(ctx: &JobContext, args: ReconcileArgs) -> Outcome {
    match reconcile(ctx, &args).await {
        Ok(summary) => Outcome::Done(serde_json::to_value(&summary).unwrap_or_default()),
        Err(e) => Outcome::retry(e),
    }
}

fn owner_key(o: &Owner) -> Option<String> {
    o.external_user_id().map(str::to_owned)
}

/// Runs a reconciliation and records it; returns its summary.
pub async fn reconcile(ctx: &JobContext, args: &ReconcileArgs) -> Result<RunSummary, String> {
    let client = ctx.p100.as_ref().ok_or("this process has no P100 client")?;
    let budget = args
        .budget_calls
        .unwrap_or_else(|| u64::from(client.max_rps()) * 3600);
    let run_id =
        ledger::reconciliation::start_run(&ctx.pool, &args.scope(), budget as i64, args.report)
            .await
            .map_err(failed("starting the run"))?;
    match reconcile_run(ctx, client, args, run_id, budget).await {
        Ok(summary) => Ok(summary),
        Err(e) => {
            if let Err(record) = ledger::reconciliation::fail_run(&ctx.pool, run_id, &e).await {
                tracing::error!(run_id, error = %record, "cannot record that reconciliation run {run_id} failed: {record}");
            }
            Err(e)
        }
    }
}

/// What a run accumulates besides its comparisons.
#[derive(Default)]
struct Tally {
    /// P100 requests made.
    calls: u64,
    /// Why the run is incomplete.
    reasons: Vec<String>,
    /// Tracked users P100 does not know.
    unknown: Vec<String>,
    /// Owners left unchecked because P100 stayed unavailable (transiently): a follow-up run
    /// covers exactly them.
    follow_up: Vec<Owner>,
    /// Users P100 answered for (any that were marked unknown are known again).
    answered: Vec<String>,
}

/// One owner's balances as P100 reported them, and when they were read (its cut-off).
struct Read {
    owner: Owner,
    at: DateTime<Utc>,
    balances: Vec<ledger::snapshots::ProviderBalance>,
}

/// The ledger's settled balances per owner (`None` = the partner) and currency.
type LedgerBalances = HashMap<Option<String>, BTreeMap<String, Decimal>>;

/// What comparing every account found. Only accounts that have an unresolved discrepancy are
/// remembered as checked: memory stays proportional to the discrepancies, not the accounts.
#[derive(Default)]
struct Comparison {
    findings: Vec<Finding>,
    /// Accounts with an unresolved account-level discrepancy, as (user, currency).
    watched: BTreeSet<(Option<String>, String)>,
    /// Those of them this run compared.
    checked: BTreeSet<(Option<String>, String)>,
    /// Users with an unresolved `unknown_user` discrepancy.
    watched_users: BTreeSet<String>,
    /// Those of them P100 answered for.
    answered_users: BTreeSet<String>,
    accounts: i64,
    matched: i64,
    matched_in_flight: i64,
    totals: BTreeMap<String, (Decimal, Decimal)>,
    cutoff: Option<DateTime<Utc>>,
}

async fn reconcile_run(
    ctx: &JobContext,
    client: &p100::Client,
    args: &ReconcileArgs,
    run_id: i64,
    budget: u64,
) -> Result<RunSummary, String> {
    let started = Utc::now();
    let mut tally = Tally::default();
    let owners = select_owners(ctx, args, budget).await?;
    // The nightly chain: history first, so the comparison sees what P100 has shown. An owner
    // whose history could not be read is left unchecked (its balance would be compared with an
    // incomplete ledger and differ for no reason).
    let owners = if args.sync {
        sync_all(ctx, client, owners, &mut tally).await
    } else {
        owners
    };
    let (rows, ops) = transactions_to_match(ctx, &owners, started).await?;
    let rules = TxRules {
        grace: args
            .grace_seconds
            .map_or(TxRules::default().grace, Duration::from_secs),
        stale_after: args
            .stale_after_seconds
            .map_or(TxRules::default().stale_after, Duration::from_secs),
    };
    let tx_check = recon::check::check_transactions(&rows, &ops, Utc::now(), rules);
    let in_flight = recon::check::in_flight(&rows, &ops);
    let existing = ledger::discrepancies::unresolved(&ctx.pool)
        .await
        .map_err(failed("loading unresolved discrepancies"))?;
    let mut comparison = Comparison::default();
    for d in &existing {
        match (Class::parse(&d.class), &d.currency, &d.external_user_id) {
            (Some(Class::BalanceMismatch | Class::UnknownAccount), Some(c), user) => {
                comparison.watched.insert((user.clone(), c.clone()));
            }
            (Some(Class::UnknownUser), _, Some(user)) => {
                comparison.watched_users.insert(user.clone());
            }
            _ => {}
        }
    }
    // Owners stream through in batches: P100's balances of the next batch are read while this
    // one is stored, loaded from the ledger and compared; only counters, totals and findings
    // are kept.
    let mut covered: Vec<Owner> = Vec::with_capacity(owners.len());
    let (batches, mut fetched) = tokio::sync::mpsc::channel(1);
    let fetcher = tokio::spawn(p100::calls::propagate(fetch_balances(
        client.clone(),
        owners,
        batches,
    )));
    while let Some(answers) = fetched.recv().await {
        let mut reads = record_reads(ctx, answers, &mut tally).await?;
        let mut ledger = settled_balances(ctx, &reads).await?;
        // SPEC §5.1: compare at T with a ledger synced to at least T. Each owner was synced
        // before its balance was read at T; money P100 moved in between makes its accounts
        // differ. Those owners are synced again (now > T) and compared at the same T.
        if args.sync {
            let late = differing(&reads, &ledger, &in_flight, &args.tolerance);
            if !late.is_empty() {
                let resynced = sync_all(ctx, client, late.clone(), &mut tally).await;
                // One whose second sync failed is left unchecked (and followed up), not
                // compared with a ledger that may lack a movement.
                reads.retain(|r| !late.contains(&r.owner) || resynced.contains(&r.owner));
                ledger = settled_balances(ctx, &reads).await?;
            }
        }
        compare(
            &mut comparison,
            &reads,
            &ledger,
            &in_flight,
            &tx_check,
            &args.tolerance,
        );
        covered.extend(reads.into_iter().map(|r| r.owner));
    }
    fetcher
        .await
        .map_err(failed("reading balances (the reader stopped)"))?;
    comparison
        .findings
        .extend(tx_check.findings.iter().map(tx_finding));
    tally.unknown.sort();
    tally.unknown.dedup();
    comparison
        .findings
        .extend(tally.unknown.iter().map(|id| unknown_user(id)));

    // Store: raise what was found, resolve what matches again, record the run, together.
    let mut tx = ctx
        .pool
        .begin()
        .await
        .map_err(failed("opening the transaction"))?;
    let mut raised_ids = Vec::with_capacity(comparison.findings.len());
    for f in &comparison.findings {
        let (id, _) = crate::findings::raise(&mut tx, f, ACTOR, Some(run_id))
            .await
            .map_err(failed(format!(
                "recording discrepancy {} of {}",
                f.class, f.owner
            )))?;
        raised_ids.push(id);
    }
    let raised: BTreeSet<i64> = raised_ids.iter().copied().collect();
    let resolvable: Vec<i64> = existing
        .iter()
        .filter(|d| !raised.contains(&d.id))
        .filter(|d| {
            let user = d.external_user_id.clone();
            match (Class::parse(&d.class), &d.currency, &d.subject) {
                // The account was compared and did not differ.
                (Some(Class::BalanceMismatch | Class::UnknownAccount), Some(c), None) => {
                    comparison.checked.contains(&(user, c.clone()))
                }
                // P100 answered for the user (and it was not raised again above).
                (Some(Class::UnknownUser), _, _) => user
                    .as_ref()
                    .is_some_and(|u| comparison.answered_users.contains(u)),
                // The transaction or operation was examined and nothing was found.
                (Some(_), _, Some(subject)) => tx_check.examined.contains(&(user, subject.clone())),
                _ => false,
            }
        })
        .map(|d| d.id)
        .collect();
    let auto_resolved = ledger::discrepancies::auto_resolve(
        &mut tx,
        &resolvable,
        ACTOR,
        &format!("reconciliation run {run_id} found it matching again"),
    )
    .await
    .map_err(failed("resolving discrepancies that match again"))?;
    let by_currency: Vec<CurrencyTotal> = comparison
        .totals
        .iter()
        .map(|(currency, (provider_total, ledger_total))| CurrencyTotal {
            currency: currency.clone(),
            provider_total: *provider_total,
            ledger_total: *ledger_total,
            delta: provider_total.saturating_sub(*ledger_total),
        })
        .collect();
    let unmatched: Vec<UnmatchedTransaction> = tx_check.findings.iter().map(unmatched_of).collect();
    let complete = tally.reasons.is_empty();
    let record = ledger::reconciliation::Run {
        id: run_id,
        scope: args.scope(),
        state: "finished".into(),
        started_at: started,
        finished_at: None,
        cutoff: comparison.cutoff,
        accounts_checked: comparison.accounts,
        matched: comparison.matched,
        matched_in_flight: comparison.matched_in_flight,
        discrepancies: raised_ids.len() as i64,
        by_currency: serde_json::to_value(&by_currency).unwrap_or_default(),
        unmatched: serde_json::to_value(&unmatched).unwrap_or_default(),
        discrepancy_ids: raised_ids.clone(),
        p100_calls: tally.calls as i64,
        p100_budget: budget as i64,
        complete,
        incomplete_reasons: serde_json::json!(tally.reasons),
        error: None,
    };
    ledger::reconciliation::finish_run(&mut *tx, &record)
        .await
        .map_err(failed("recording the run"))?;
    // The day's report is queued with the run it describes: a run is never recorded without
    // it, and a failure to queue it cannot make the whole run repeat.
    if args.report {
        let report = crate::report::job_for(&ctx.schedule, started.date_naive())?;
        queue::store::enqueue_many(&mut tx, &[report])
            .await
            .map_err(|e| format!("queueing the report of run {run_id}: {e}"))?;
    }
    if !tally.follow_up.is_empty() && args.follow_up_depth < MAX_FOLLOW_UPS {
        let job = follow_up(ctx, args, run_id, &tally.follow_up)?;
        queue::store::enqueue_many(&mut tx, &[job])
            .await
            .map_err(|e| format!("queueing the follow-up of run {run_id}: {e}"))?;
    }
    ledger::users::mark_known(&mut *tx, &tally.answered)
        .await
        .map_err(failed("recording the users P100 knows again"))?;
    covered.extend(tally.unknown.iter().cloned().map(Owner::User));
    ledger::reconciliation::mark_reconciled(&mut *tx, &covered, started)
        .await
        .map_err(failed("recording when owners were reconciled"))?;
    tx.commit().await.map_err(failed("committing the run"))?;
    metrics::counter!("reconciliation_runs_total", "complete" => complete.to_string()).increment(1);
    Ok(RunSummary {
        run_id,
        started_at: started,
        accounts_checked: comparison.accounts,
        matched: comparison.matched,
        matched_in_flight: comparison.matched_in_flight,
        discrepancies: raised_ids.len() as i64,
        auto_resolved,
        p100_calls: tally.calls,
        complete,
    })
}

/// A run for exactly the owners `run_id` left unchecked, in a few minutes, syncing first if
/// the run did; it writes no report (the day's report is the nightly run's).
fn follow_up(
    ctx: &JobContext,
    args: &ReconcileArgs,
    run_id: i64,
    owners: &[Owner],
) -> Result<queue::NewJob, String> {
    let args = ReconcileArgs {
        partner: owners.contains(&Owner::Partner),
        users: owners
            .iter()
            .filter_map(|o| o.external_user_id().map(str::to_owned))
            .collect(),
        follow_up_of: Some(run_id),
        follow_up_depth: args.follow_up_depth + 1,
        user: None,
        report: false,
        ..args.clone()
    };
    let payload = serde_json::to_value(&args).map_err(|e| e.to_string())?;
    crate::enqueue::new_job(
        crate::kinds::Kind::Reconcile,
        payload,
        &ctx.schedule,
        Some(Utc::now() + FOLLOW_UP_AFTER),
    )
}

/// The owners a run covers: the partner, one user, or (all) the partner and the users due,
/// as many as the budget allows, and every user P100 did not know (asked again); or exactly
/// the owners a run left unchecked (a follow-up).
async fn select_owners(
    ctx: &JobContext,
    args: &ReconcileArgs,
    budget: u64,
) -> Result<Vec<Owner>, String> {
    if args.follow_up_of.is_some() {
        let partner = args.partner.then_some(Owner::Partner);
        let users = args
            .users
            .iter()
            .map(|id| Owner::user(id))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(partner.into_iter().chain(users).collect());
    }
    Ok(match (&args.user, args.partner) {
        (Some(id), _) => vec![Owner::User(id.clone())],
        (None, true) => vec![Owner::Partner],
        (None, false) => {
            let per_owner = if args.sync { 2 } else { 1 };
            let room = budget.saturating_sub(per_owner) / per_owner;
            let window = Duration::from_secs(args.window_hours.unwrap_or(168).min(876_000) * 3600);
            let users = ledger::reconciliation::select_users(&ctx.pool, window, room as i64)
                .await
                .map_err(failed("selecting the users due"))?;
            // Users P100 did not know are asked again on every run: P100 may know them now.
            let unknown = ledger::reconciliation::unknown_users(&ctx.pool)
                .await
                .map_err(failed("listing users unknown at P100"))?;
            std::iter::once(Owner::Partner)
                .chain(users.into_iter().map(Owner::User))
                .chain(unknown.into_iter().map(Owner::User))
                .collect()
        }
    })
}

/// Syncs each owner's history, retrying transient failures within the run; returns the
/// owners whose balances can be compared (synced, or unknown at P100 and so re-asked).
async fn sync_all(
    ctx: &JobContext,
    client: &p100::Client,
    owners: Vec<Owner>,
    tally: &mut Tally,
) -> Vec<Owner> {
    use crate::tx_sync::SyncError;
    let mut synced = Vec::with_capacity(owners.len());
    for owner in owners {
        let (result, attempts) = crate::in_run_retry::retrying(
            |e: &SyncError| matches!(e, SyncError::P100(e) if crate::in_run_retry::p100_transient(e)),
            || crate::tx_sync::sync(client, &ctx.pool, &owner, crate::tx_sync::Overlap::Policy),
        )
        .await;
        // Each failed attempt made at least one call; a success made one per page.
        tally.calls += u64::from(attempts - 1);
        match result {
            Ok(summary) => {
                tally.calls += summary.pages.max(1) as u64;
                synced.push(owner);
            }
            // A user P100 does not know: its balance read says so again (and says when P100
            // knows it after all).
            Err(SyncError::P100(e)) if e.code() == Some("P412") => {
                tally.calls += 1;
                synced.push(owner);
            }
            Err(e) => {
                tally.calls += 1;
                if matches!(&e, SyncError::P100(e) if crate::in_run_retry::p100_transient(e)) {
                    tally.follow_up.push(owner.clone());
                }
                tally.reasons.push(format!(
                    "{owner} left unchecked: its history could not be synced after {attempts} attempts: {e}"
                ));
            }
        }
    }
    synced
}

/// One owner's answer to a balance read, with its time and the calls it took.
type Answer = (
    Owner,
    DateTime<Utc>,
    Result<p100::model::Balances, p100::Error>,
    u32,
);

/// Reads the owners' balances, a batch at a time with up to `CONCURRENCY` requests in flight,
/// handing each batch on; stops when the receiver is gone.
async fn fetch_balances(
    client: p100::Client,
    owners: Vec<Owner>,
    batches: tokio::sync::mpsc::Sender<Vec<Answer>>,
) {
    for chunk in owners.chunks(BATCH) {
        let answers: Vec<Answer> = futures::stream::iter(chunk.iter().cloned())
            .map(|owner| {
                let client = &client;
                async move {
                    let scope = crate::balances::scope_of(&owner);
                    let (answer, calls) =
                        crate::in_run_retry::retrying(crate::in_run_retry::p100_transient, || {
                            client.balances(&scope)
                        })
                        .await;
                    (owner, Utc::now(), answer, calls)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        if batches.send(answers).await.is_err() {
            return;
        }
    }
}

/// Records a batch of answers: balances become reads (stored as snapshots), P412s unknown
/// users, other errors reasons the run is incomplete.
async fn record_reads(
    ctx: &JobContext,
    answers: Vec<Answer>,
    tally: &mut Tally,
) -> Result<Vec<Read>, String> {
    let mut reads = Vec::with_capacity(answers.len());
    for (owner, at, answer, calls) in answers {
        tally.calls += u64::from(calls);
        match answer {
            Ok(balances) => {
                tally
                    .answered
                    .extend(owner.external_user_id().map(str::to_owned));
                reads.push(Read {
                    balances: crate::balances::to_snapshots(&owner, &balances, at),
                    owner,
                    at,
                })
            }
            Err(e) if e.code() == Some("P412") => {
                tally
                    .unknown
                    .extend(owner.external_user_id().map(str::to_owned));
            }
            Err(e) => {
                if crate::in_run_retry::p100_transient(&e) {
                    tally.follow_up.push(owner.clone());
                }
                tally.reasons.push(format!(
                    "{owner} left unchecked: its balances could not be read after {calls} attempts: {e}"
                ));
            }
        }
    }
    let snapshots: Vec<_> = reads
        .iter()
        .flat_map(|r| r.balances.iter().cloned())
        .collect();
    ledger::snapshots::insert_provider_balances(&ctx.pool, &snapshots)
        .await
        .map_err(failed(format!(
            "storing {} balance snapshots",
            snapshots.len()
        )))?;
    Ok(reads)
}

/// The ledger's settled balances of a batch of owners, each at its own cut-off.
async fn settled_balances(ctx: &JobContext, reads: &[Read]) -> Result<LedgerBalances, String> {
    let owners: Vec<(Owner, DateTime<Utc>)> =
        reads.iter().map(|r| (r.owner.clone(), r.at)).collect();
    let rows = ledger::reconciliation::settled_balances(&ctx.pool, &owners)
        .await
        .map_err(failed(format!(
            "loading the ledger's balances of {} owners",
            owners.len()
        )))?;
    let mut out = LedgerBalances::new();
    for b in rows {
        out.entry(b.external_user_id)
            .or_default()
            .insert(b.currency, b.balance);
    }
    Ok(out)
}

/// History rows and local operations worth matching, limited to the covered owners.
async fn transactions_to_match(
    ctx: &JobContext,
    owners: &[Owner],
    started: DateTime<Utc>,
) -> Result<(Vec<ProviderRow>, Vec<LocalOp>), String> {
    let since = started - chrono::Duration::days(30);
    let ops_data = ledger::reconciliation::operations_to_match(&ctx.pool, since)
        .await
        .map_err(failed("loading local operations to match"))?;
    let references: Vec<String> = ops_data.iter().map(|o| o.key.clone()).collect();
    let rows_data = ledger::reconciliation::rows_to_match(&ctx.pool, since, &references)
        .await
        .map_err(failed("loading P100 transactions to match"))?;
    let covered: BTreeSet<Option<String>> = owners.iter().map(owner_key).collect();
    let rows = rows_data
        .into_iter()
        .map(|r| ProviderRow {
            user: r.external_user_id,
            id: r.provider_tx_id,
            kind: r.kind,
            status: r.status,
            currency: r.currency,
            amount: r.amount,
            fee: r.fee,
            reference: r.reference,
            updated_at: r.updated_at,
            posted: r.posted,
            unreadable: r.unreadable,
        })
        .filter(|r| covered.contains(&r.user))
        .collect();
    let ops = ops_data
        .into_iter()
        .map(|o| LocalOp {
            user: o.external_user_id,
            kind: if o.op == "sepa" {
                OpKind::Sepa
            } else {
                OpKind::Exchange
            },
            state: op_state(&o.op, &o.status),
            key: o.key,
            status: o.status,
            currency: o.currency,
            amount: o.amount,
            fee: o.fee,
            since: o.since,
        })
        .filter(|o| covered.contains(&o.user))
        .collect();
    Ok((rows, ops))
}

/// Compares every account read with the ledger.
/// The account comparisons of one owner's read, by currency.
fn account_inputs(
    read: &Read,
    ledger: &LedgerBalances,
    in_flight: &BTreeMap<(Option<String>, String), Vec<recon::check::InFlight>>,
    tolerance: &BTreeMap<String, Decimal>,
) -> Vec<(String, AccountInput)> {
    let empty = BTreeMap::new();
    let key = owner_key(&read.owner);
    let ours = ledger.get(&key).unwrap_or(&empty);
    let mut currencies: BTreeSet<&str> =
        read.balances.iter().map(|b| b.currency.as_str()).collect();
    currencies.extend(ours.keys().map(String::as_str));
    currencies
        .into_iter()
        .map(|currency| {
            let slot = (key.clone(), currency.to_owned());
            let input = AccountInput {
                provider: read
                    .balances
                    .iter()
                    .find(|b| b.currency == currency)
                    .map(|b| b.amount),
                ledger: ours.get(currency).copied(),
                in_flight: in_flight.get(&slot).cloned().unwrap_or_default(),
                tolerance: tolerance.get(currency).copied().unwrap_or_default(),
            };
            (currency.to_owned(), input)
        })
        .collect()
}

/// Owners of `reads` with an account that does not match the ledger as it stands.
fn differing(
    reads: &[Read],
    ledger: &LedgerBalances,
    in_flight: &BTreeMap<(Option<String>, String), Vec<recon::check::InFlight>>,
    tolerance: &BTreeMap<String, Decimal>,
) -> Vec<Owner> {
    reads
        .iter()
        .filter(|read| {
            account_inputs(read, ledger, in_flight, tolerance)
                .iter()
                .any(|(_, input)| {
                    matches!(
                        recon::check::check_account(input).status,
                        AccountStatus::Discrepancy(_)
                    )
                })
        })
        .map(|read| read.owner.clone())
        .collect()
}

fn compare(
    out: &mut Comparison,
    reads: &[Read],
    ledger: &LedgerBalances,
    in_flight: &BTreeMap<(Option<String>, String), Vec<recon::check::InFlight>>,
    tx_check: &recon::check::TxCheck,
    tolerance: &BTreeMap<String, Decimal>,
) {
    for read in reads {
        out.cutoff = out.cutoff.max(Some(read.at));
        let key = owner_key(&read.owner);
        if let Some(user) = read.owner.external_user_id()
            && out.watched_users.contains(user)
        {
            out.answered_users.insert(user.to_owned());
        }
        for (currency, input) in account_inputs(read, ledger, in_flight, tolerance) {
            let currency = currency.as_str();
            let slot = (key.clone(), currency.to_owned());
            let result = recon::check::check_account(&input);
            out.accounts += 1;
            let total = out.totals.entry(currency.to_owned()).or_default();
            total.0 = total.0.saturating_add(result.provider);
            total.1 = total.1.saturating_add(result.ledger);
            match &result.status {
                AccountStatus::Matched => out.matched += 1,
                AccountStatus::MatchedInFlight(_) => out.matched_in_flight += 1,
                AccountStatus::Discrepancy(class) => {
                    let explanations: Vec<Explanation> = input
                        .in_flight
                        .iter()
                        .map(|f| Explanation {
                            provider_tx_id: f.key.clone(),
                            class: "in_flight".into(),
                            amount: f.amount,
                        })
                        .chain(
                            tx_check
                                .findings
                                .iter()
                                .filter(|f| f.user == key && f.currency == currency)
                                .map(|f| Explanation {
                                    provider_tx_id: f
                                        .provider_tx_id
                                        .clone()
                                        .unwrap_or_else(|| f.subject.clone()),
                                    class: f.class.as_str().into(),
                                    amount: f.amount,
                                }),
                        )
                        .collect();
                    out.findings.push(Finding {
                        owner: read.owner.clone(),
                        currency: Some(currency.to_owned()),
                        subject: None,
                        class: class.as_str().into(),
                        provider_balance: Some(result.provider),
                        ledger_balance: input.ledger,
                        delta: Some(result.delta),
                        amount: None,
                        explanations: serde_json::to_value(&explanations).unwrap_or_default(),
                        detail: Some(format!(
                            "P100 {} vs ledger {} {currency} at {}: delta {}",
                            result.provider,
                            result.ledger,
                            read.at.to_rfc3339(),
                            result.delta
                        )),
                    });
                }
            }
            if out.watched.contains(&slot) {
                out.checked.insert(slot);
            }
        }
    }
}

fn unknown_user(id: &str) -> Finding {
    Finding {
        owner: Owner::User(id.to_owned()),
        currency: None,
        subject: None,
        class: Class::UnknownUser.as_str().into(),
        provider_balance: None,
        ledger_balance: None,
        delta: None,
        amount: None,
        explanations: serde_json::json!([]),
        detail: Some(format!("P100 does not know tracked user {id} (P412)")),
    }
}

/// Names the step that failed, for the run's recorded error and the job's log.
fn failed<E: std::fmt::Display>(step: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("reconciliation failed while {step}: {e}")
}

/// Where a stored operation stands, for matching.
fn op_state(op: &str, status: &str) -> OpState {
    match (op, status) {
        ("sepa", "SUCCESSFUL") | ("exchange", "COMPLETED") => OpState::Settled,
        ("sepa", "FAILED" | "RELEASED") | ("exchange", "FAILED" | "EXPIRED") => OpState::Failed,
        ("sepa", "MISSING_AT_PROVIDER") => OpState::Missing,
        _ => OpState::Pending,
    }
}

fn tx_finding(f: &TxFinding) -> Finding {
    Finding {
        owner: f.user.clone().map_or(Owner::Partner, Owner::User),
        currency: Some(f.currency.clone()),
        subject: Some(f.subject.clone()),
        class: f.class.as_str().into(),
        provider_balance: None,
        ledger_balance: None,
        delta: None,
        amount: Some(f.amount),
        explanations: serde_json::to_value(
            f.provider_tx_id
                .iter()
                .map(|id| Explanation {
                    provider_tx_id: id.clone(),
                    class: f.class.as_str().into(),
                    amount: f.amount,
                })
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default(),
        detail: Some(f.detail.clone()),
    }
}

fn unmatched_of(f: &TxFinding) -> UnmatchedTransaction {
    UnmatchedTransaction {
        provider_tx_id: f.provider_tx_id.clone(),
        reference: (f.provider_tx_id.as_deref() != Some(f.subject.as_str()))
            .then(|| f.subject.clone()),
        owner: if f.user.is_some() { "user" } else { "partner" }.into(),
        external_user_id: f.user.clone(),
        currency: f.currency.clone(),
        amount: f.amount,
        class: f.class.as_str().into(),
        status: f.status.clone(),
    }
}

/// `reconcile`: compares P100's balances with the ledger and records discrepancies.
pub struct ReconcileJob;

impl crate::handler::Job for ReconcileJob {
    type Args = ReconcileArgs;
    const KIND: crate::kinds::Kind = crate::kinds::Kind::Reconcile;
    const NAME: &'static str = "reconcile";

    fn default_limits() -> crate::schedule::KindLimits {
        use crate::schedule::KindLimits;
        use std::time::Duration;
        KindLimits {
            timeout: Duration::from_secs(4 * 3600),
            max_attempts: 3,
            concurrency: 1,
            max_deferrals: 50,
            from_budget: false,
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(1800),
            ..KindLimits::default()
        }
    }

    fn dedup_key(args: &Self::Args) -> Result<Option<String>, String> {
        for user in args.user.iter().chain(&args.users) {
            ledger::owner::check_external_user_id(user)
                .map_err(|e| format!("reconcile \"user\": {e}"))?;
        }
        Ok(Some(args.scope()))
    }

    fn unit(args: &Self::Args) -> Option<String> {
        args.user.clone()
    }

    async fn run(
        ctx: &crate::context::JobContext,
        args: Self::Args,
        _attempt: u32,
    ) -> queue::Outcome {
        run(ctx, args).await
    }
}
