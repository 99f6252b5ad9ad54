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

/// One owner's balances as P100 reported them, with the read time.
type BalanceRead = (Owner, DateTime<Utc>, Vec<(String, Decimal)>);
/// A discrepancy's identity: (user, currency, subject, class).
type Identity = (Option<String>, Option<String>, Option<String>, String);

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
}

impl ReconcileArgs {
    /// `all`, `partner` or `user:<id>`.
    pub fn scope(&self) -> String {
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
    /// Whether it was complete.
    pub complete: bool,
}

/// One run, as the queue calls it.
pub async fn run(ctx: &JobContext, args: ReconcileArgs) -> Outcome {
    match reconcile(ctx, &args).await {
        Ok(summary) => {
            if args.report {
                let day = Utc::now().date_naive();
                if let Err(e) = crate::report::enqueue_for(ctx, day).await {
                    return Outcome::retry(format!(
                        "run {} recorded, but its report could not be queued: {e}",
                        summary.run_id
                    ));
                }
            }
            Outcome::Done(serde_json::to_value(&summary).unwrap_or_default())
        }
        Err(e) => Outcome::retry(e),
    }
}

fn owner_key(o: &Owner) -> Option<String> {
    o.external_user_id().map(str::to_owned)
}

fn owner_from(kind: &str, user: &str) -> Owner {
    if kind == "user" {
        Owner::User(user.to_owned())
    } else {
        Owner::Partner
    }
}

/// Runs a reconciliation and records it; returns its summary.
pub async fn reconcile(ctx: &JobContext, args: &ReconcileArgs) -> Result<RunSummary, String> {
    let client = ctx.p100.as_ref().ok_or("this process has no P100 client")?;
    let budget = args
        .budget_calls
        .unwrap_or_else(|| u64::from(client.max_rps()) * 3600);
    let db = |e: ledger::Error| e.to_string();
    let run_id = ledger::reconciliation::start_run(&ctx.pool, &args.scope(), budget as i64)
        .await
        .map_err(db)?;
    match reconcile_run(ctx, client, args, run_id, budget).await {
        Ok(summary) => Ok(summary),
        Err(e) => {
            let _ = ledger::reconciliation::fail_run(&ctx.pool, run_id, &e).await;
            Err(e)
        }
    }
}

async fn reconcile_run(
    ctx: &JobContext,
    client: &p100::Client,
    args: &ReconcileArgs,
    run_id: i64,
    budget: u64,
) -> Result<RunSummary, String> {
    let db = |e: ledger::Error| e.to_string();
    let started = Utc::now();
    let mut calls: u64 = 0;
    let mut reasons: Vec<String> = Vec::new();
    // Who is covered.
    let mut owners: Vec<Owner> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    match (&args.user, args.partner) {
        (Some(id), _) => owners.push(Owner::User(id.clone())),
        (None, true) => owners.push(Owner::Partner),
        (None, false) => {
            owners.push(Owner::Partner);
            let per_owner = if args.sync { 2 } else { 1 };
            let room = budget.saturating_sub(per_owner) / per_owner;
            let window = Duration::from_secs(args.window_hours.unwrap_or(168) * 3600);
            let users = ledger::reconciliation::select_users(&ctx.pool, window, room as i64)
                .await
                .map_err(db)?;
            owners.extend(users.into_iter().map(Owner::User));
            unknown = ledger::reconciliation::unknown_users(&ctx.pool)
                .await
                .map_err(db)?;
        }
    }
    // The nightly chain: history first, so the comparison sees what P100 has shown.
    if args.sync {
        for owner in &owners {
            match crate::tx_sync::sync(client, &ctx.pool, owner, crate::tx_sync::DEFAULT_OVERLAP)
                .await
            {
                Ok(summary) => calls += summary.pages.max(1) as u64,
                // A user P100 does not know is reported as such, not as a failed sync.
                Err(crate::tx_sync::SyncError::P100(e)) if e.code() == Some("P412") => calls += 1,
                Err(e) => {
                    calls += 1;
                    reasons.push(format!("sync of {owner} failed: {e}"));
                }
            }
        }
    }
    // Balances, in concurrent batches, each compared at its own read time.
    let mut read: Vec<BalanceRead> = Vec::new();
    for chunk in owners.chunks(BATCH) {
        let answers: Vec<_> = futures::stream::iter(chunk.iter().cloned())
            .map(|owner| async move {
                let answer = client.balances(&crate::balances::scope_of(&owner)).await;
                (owner, Utc::now(), answer)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut snapshots = Vec::new();
        for (owner, at, answer) in answers {
            calls += 1;
            match answer {
                Ok(balances) => {
                    let list: Vec<(String, Decimal)> = balances
                        .all()
                        .map(|b| (b.name.as_str().to_owned(), b.amount))
                        .collect();
                    snapshots.extend(balances.all().map(|b| ledger::snapshots::ProviderBalance {
                        owner: owner.clone(),
                        currency: b.name.as_str().to_owned(),
                        amount: b.amount,
                        provider_balance_id: Some(b.id.clone()),
                        read_at: at,
                    }));
                    read.push((owner, at, list));
                }
                Err(e) if e.code() == Some("P412") => {
                    if let Some(id) = owner.external_user_id() {
                        unknown.push(id.to_owned());
                    }
                }
                Err(e) => reasons.push(format!("balances of {owner} could not be read: {e}")),
            }
        }
        ledger::snapshots::insert_provider_balances(&ctx.pool, &snapshots)
            .await
            .map_err(db)?;
    }
    let owners_read: Vec<(Owner, DateTime<Utc>)> =
        read.iter().map(|(o, at, _)| (o.clone(), *at)).collect();
    let mut ledger_balances: HashMap<(Option<String>, String), Decimal> = HashMap::new();
    for chunk in owners_read.chunks(BATCH * 4) {
        for b in ledger::reconciliation::settled_balances(&ctx.pool, chunk)
            .await
            .map_err(db)?
        {
            let owner = owner_from(&b.owner_kind, &b.external_user_id);
            ledger_balances.insert((owner_key(&owner), b.currency), b.balance);
        }
    }
    // Transactions and local operations.
    let since = started - chrono::Duration::days(30);
    let ops_data = ledger::reconciliation::operations_to_match(&ctx.pool, since)
        .await
        .map_err(db)?;
    let references: Vec<String> = ops_data.iter().map(|o| o.key.clone()).collect();
    let rows_data = ledger::reconciliation::rows_to_match(&ctx.pool, since, &references)
        .await
        .map_err(db)?;
    let covered: BTreeSet<Option<String>> = owners.iter().map(owner_key).collect();
    let rows: Vec<ProviderRow> = rows_data
        .into_iter()
        .map(|r| ProviderRow {
            user: owner_key(&owner_from(&r.owner_kind, &r.external_user_id)),
            id: r.provider_tx_id,
            kind: r.kind,
            status: r.status,
            currency: r.currency,
            amount: r.amount,
            fee: r.fee,
            reference: r.reference,
            updated_at: r.updated_at,
            posted: r.posted,
        })
        .filter(|r| covered.contains(&r.user))
        .collect();
    let ops: Vec<LocalOp> = ops_data
        .into_iter()
        .map(|o| LocalOp {
            user: owner_key(&owner_from(&o.owner_kind, &o.external_user_id)),
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

    // Compare every account.
    let mut findings: Vec<Finding> = Vec::new();
    let mut checked_accounts: BTreeSet<(Option<String>, String)> = BTreeSet::new();
    let (mut accounts, mut matched, mut matched_in_flight) = (0i64, 0i64, 0i64);
    let mut totals: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    let mut cutoff = None;
    for (owner, at, provider) in &read {
        cutoff = cutoff.max(Some(*at));
        let key = owner_key(owner);
        let mut currencies: BTreeSet<String> = provider.iter().map(|(c, _)| c.clone()).collect();
        currencies.extend(
            ledger_balances
                .keys()
                .filter(|(u, _)| *u == key)
                .map(|(_, c)| c.clone()),
        );
        for currency in currencies {
            let slot = (key.clone(), currency.clone());
            let input = AccountInput {
                provider: provider
                    .iter()
                    .find(|(c, _)| *c == currency)
                    .map(|(_, a)| *a),
                ledger: ledger_balances.get(&slot).copied(),
                in_flight: in_flight.get(&slot).cloned().unwrap_or_default(),
                tolerance: args.tolerance.get(&currency).copied().unwrap_or_default(),
            };
            let result = recon::check::check_account(&input);
            accounts += 1;
            checked_accounts.insert(slot.clone());
            let total = totals.entry(currency.clone()).or_default();
            total.0 += result.provider;
            total.1 += result.ledger;
            match &result.status {
                AccountStatus::Matched => matched += 1,
                AccountStatus::MatchedInFlight(_) => matched_in_flight += 1,
                AccountStatus::Discrepancy(class) => {
                    let mut explanations: Vec<Explanation> = input
                        .in_flight
                        .iter()
                        .map(|f| Explanation {
                            provider_tx_id: f.key.clone(),
                            class: "in_flight".into(),
                            amount: f.amount,
                        })
                        .collect();
                    explanations.extend(
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
                    );
                    findings.push(Finding {
                        owner: owner.clone(),
                        currency: Some(currency.clone()),
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
                            at.to_rfc3339(),
                            result.delta
                        )),
                        severity: String::new(),
                    });
                }
            }
        }
    }
    for f in &tx_check.findings {
        findings.push(tx_finding(f));
    }
    unknown.sort();
    unknown.dedup();
    for id in &unknown {
        findings.push(Finding {
            owner: Owner::User(id.clone()),
            currency: None,
            subject: None,
            class: Class::UnknownUser.as_str().into(),
            provider_balance: None,
            ledger_balance: None,
            delta: None,
            amount: None,
            explanations: serde_json::json!([]),
            detail: Some(format!("P100 does not know tracked user {id} (P412)")),
            severity: String::new(),
        });
    }

    // Store: raise what was found, resolve what matches again, in one transaction.
    let mut tx = ctx.pool.begin().await.map_err(|e| e.to_string())?;
    let mut scope_owners: Vec<Owner> = read.iter().map(|(o, _, _)| o.clone()).collect();
    scope_owners.extend(unknown.iter().cloned().map(Owner::User));
    let existing = ledger::discrepancies::unresolved(&mut *tx, None)
        .await
        .map_err(db)?;
    let first_seen: HashMap<Identity, DateTime<Utc>> = existing
        .iter()
        .map(|d| {
            (
                (
                    d.external_user_id.clone(),
                    d.currency.clone(),
                    d.subject.clone(),
                    d.class.clone(),
                ),
                d.first_seen_at,
            )
        })
        .collect();
    let now = Utc::now();
    let mut raised_ids = Vec::new();
    for mut f in findings {
        let age = first_seen
            .get(&(
                owner_key(&f.owner),
                f.currency.clone(),
                f.subject.clone(),
                f.class.clone(),
            ))
            .map(|t| (now - *t).to_std().unwrap_or_default())
            .unwrap_or_default();
        let at_stake = f.delta.or(f.amount).unwrap_or_default();
        f.severity = recon::severity::of(at_stake, f.currency.as_deref(), age)
            .as_str()
            .to_owned();
        let (id, _) = ledger::discrepancies::raise(&mut tx, &f, ACTOR, Some(run_id))
            .await
            .map_err(db)?;
        raised_ids.push(id);
    }
    let raised: BTreeSet<i64> = raised_ids.iter().copied().collect();
    let read_owners: BTreeSet<Option<String>> = read.iter().map(|(o, _, _)| owner_key(o)).collect();
    let unknown_now: BTreeSet<&String> = unknown.iter().collect();
    let resolvable: Vec<i64> = existing
        .iter()
        .filter(|d| !raised.contains(&d.id))
        .filter(|d| {
            let user = d.external_user_id.clone();
            match (Class::parse(&d.class), &d.currency, &d.subject) {
                // The account was compared and did not differ.
                (Some(Class::BalanceMismatch | Class::UnknownAccount), Some(c), None) => {
                    checked_accounts.contains(&(user, c.clone()))
                }
                // The user was read (so P100 knows it) and is no longer flagged.
                (Some(Class::UnknownUser), _, _) => {
                    read_owners.contains(&user)
                        && !user.as_ref().is_some_and(|u| unknown_now.contains(u))
                }
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
    .map_err(db)?;
    let by_currency: Vec<CurrencyTotal> = totals
        .into_iter()
        .map(|(currency, (provider_total, ledger_total))| CurrencyTotal {
            currency,
            provider_total,
            ledger_total,
            delta: provider_total - ledger_total,
        })
        .collect();
    let unmatched: Vec<UnmatchedTransaction> = tx_check.findings.iter().map(unmatched_of).collect();
    let complete = reasons.is_empty();
    let record = ledger::reconciliation::Run {
        id: run_id,
        scope: args.scope(),
        state: "finished".into(),
        started_at: started,
        finished_at: None,
        cutoff,
        accounts_checked: accounts,
        matched,
        matched_in_flight,
        discrepancies: raised_ids.len() as i64,
        by_currency: serde_json::to_value(&by_currency).unwrap_or_default(),
        unmatched: serde_json::to_value(&unmatched).unwrap_or_default(),
        discrepancy_ids: raised_ids.clone(),
        p100_calls: calls as i64,
        p100_budget: budget as i64,
        complete,
        incomplete_reasons: serde_json::json!(reasons),
        error: None,
    };
    ledger::reconciliation::finish_run(&mut *tx, &record)
        .await
        .map_err(db)?;
    ledger::reconciliation::mark_reconciled(&mut *tx, &scope_owners, started)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(|e| e.to_string())?;
    metrics::counter!("reconciliation_runs_total", "complete" => complete.to_string()).increment(1);
    Ok(RunSummary {
        run_id,
        accounts_checked: accounts,
        matched,
        matched_in_flight,
        discrepancies: raised_ids.len() as i64,
        auto_resolved,
        complete,
    })
}

/// Where a stored operation stands, for matching.
fn op_state(op: &str, status: &str) -> OpState {
    match (op, status) {
        ("sepa", "SUCCESSFUL") | ("exchange", "COMPLETED") => OpState::Settled,
        ("sepa", "FAILED") | ("exchange", "FAILED" | "EXPIRED") => OpState::Failed,
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
        severity: String::new(),
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
