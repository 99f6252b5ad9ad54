//! `tx_sync`: copies the partner's or one user's P100 transaction history into the ledger.
//!
//! Triggered by schedules (partner), sweeps (users) or `enqueue tx_sync`. Reads pages from the
//! stored cursor minus an overlap window (rows change status later and come back with a newer
//! `updatedAt`), and commits each page in one transaction: the transactions, their change
//! history, the postings or reversals their status implies, and the cursor. Safe to run any
//! number of times: every fact is keyed (P100's id, payload hash, posting idempotency key), so
//! replays, overlaps and restarts change nothing.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ledger::Owner;
use ledger::postings::NewPosting;
use ledger::provider::{LedgerState, ObservedTx, StoredTx, TxChange};
use p100::HistoryQuery;
use queue::Outcome;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::context::JobContext;
use crate::mapping;

/// How far before the cursor each sync starts reading again.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Payload of `tx_sync`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TxSyncArgs {
    /// Payload version.
    #[serde(default)]
    pub v: u32,
    /// The partner's history.
    #[serde(default)]
    pub partner: bool,
    /// One user's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Overlap window in seconds (default 24 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_seconds: Option<u64>,
}

impl TxSyncArgs {
    /// The history this job reads; exactly one of `partner` and `user` must be set.
    pub fn owner(&self) -> Result<Owner, String> {
        match (self.partner, &self.user) {
            (true, None) => Ok(Owner::Partner),
            (false, Some(id)) if !id.trim().is_empty() => Ok(Owner::User(id.clone())),
            _ => Err(
                "tx_sync needs exactly one of \"partner\": true or \"user\": \"<externalUserId>\""
                    .to_owned(),
            ),
        }
    }
}

/// What one page did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PageStats {
    /// Rows on the page.
    pub rows: usize,
    /// Rows stored as new transactions.
    pub new: usize,
    /// Rows stored as a status or payload change.
    pub changed: usize,
    /// Postings written.
    pub posted: u64,
    /// Reversals written.
    pub reversed: u64,
    /// Rows flagged (unknown type or status, changed payload).
    pub flagged: usize,
}

/// Everything a page changes, decided without I/O.
#[derive(Debug, Default)]
pub struct PagePlan {
    /// Versions to store.
    pub changes: Vec<TxChange>,
    /// Seen again, unchanged (or older than what we hold).
    pub unchanged: Vec<String>,
    /// Postings to write.
    pub postings: Vec<NewPosting>,
    /// (original key, reversal key, effective time: the `updatedAt` of the undoing version).
    pub reversals: Vec<(String, String, DateTime<Utc>)>,
    /// Latest `updatedAt` on the page.
    pub max_updated_at: Option<DateTime<Utc>>,
}

const KNOWN_STATUSES: [&str; 3] = ["PENDING", "COMPLETED", "FAILED"];

fn raise(flags: &mut Vec<String>, flag: &str) {
    if !flags.iter().any(|f| f == flag) {
        flags.push(flag.to_owned());
    }
}

/// Decides what a page changes, given what is stored. Rows are taken in page order; a row
/// older than the stored version (by `updatedAt`) never rolls it back.
pub fn plan_page(
    owner: &Owner,
    stored: &HashMap<String, StoredTx>,
    page: Vec<ObservedTx>,
) -> PagePlan {
    let mut plan = PagePlan::default();
    let mut working: HashMap<String, StoredTx> = HashMap::new();
    for tx in page {
        plan.max_updated_at = plan.max_updated_at.max(Some(tx.updated_at));
        let previous = working
            .get(&tx.provider_tx_id)
            .or_else(|| stored.get(&tx.provider_tx_id))
            .cloned();
        let change = match &previous {
            None => "new",
            Some(p) if tx.updated_at < p.updated_at || tx.payload_hash == p.payload_hash => {
                plan.unchanged.push(tx.provider_tx_id.clone());
                continue;
            }
            Some(p) if p.status != tx.status => "status_change",
            Some(_) => "payload_change",
        };
        let mut flags = previous
            .as_ref()
            .map(|p| p.flags.clone())
            .unwrap_or_default();
        if mapping::counter_kind(&tx.kind).is_none() {
            raise(&mut flags, "unknown_type");
        }
        if !KNOWN_STATUSES.contains(&tx.status.as_str()) {
            raise(&mut flags, "unknown_status");
        }
        if change == "payload_change" {
            raise(&mut flags, "payload_changed");
        }
        let key = mapping::posting_key(owner, &tx);
        let repost_key = format!("{key}:repost");
        let reposted = flags.iter().any(|f| f == "reposted");
        let state_before = previous
            .as_ref()
            .map_or(LedgerState::None, |p| p.ledger_state);
        let state = match (tx.status.as_str(), state_before) {
            ("COMPLETED", LedgerState::None) => {
                match mapping::to_posting(owner, &tx, key.clone()) {
                    Ok(Some(posting)) => {
                        plan.postings.push(posting);
                        LedgerState::Posted
                    }
                    Ok(None) => LedgerState::None,
                    Err(_) => {
                        raise(&mut flags, "unpostable");
                        LedgerState::None
                    }
                }
            }
            // Completed again after a reversal: once, under its own key; later flips are flagged.
            ("COMPLETED", LedgerState::Reversed) if !reposted => {
                match mapping::to_posting(owner, &tx, repost_key.clone()) {
                    Ok(Some(posting)) => {
                        plan.postings.push(posting);
                        raise(&mut flags, "reposted");
                        LedgerState::Posted
                    }
                    _ => LedgerState::Reversed,
                }
            }
            ("COMPLETED", LedgerState::Reversed) => {
                raise(&mut flags, "status_flips");
                LedgerState::Reversed
            }
            ("PENDING" | "FAILED", LedgerState::Posted) => {
                let original = if reposted {
                    repost_key.clone()
                } else {
                    key.clone()
                };
                plan.reversals.push((
                    original.clone(),
                    format!("{original}:reversal"),
                    tx.updated_at,
                ));
                LedgerState::Reversed
            }
            (_, state) => state,
        };
        working.insert(
            tx.provider_tx_id.clone(),
            StoredTx {
                status: tx.status.clone(),
                updated_at: tx.updated_at,
                payload_hash: tx.payload_hash.clone(),
                ledger_state: state,
                flags: flags.clone(),
            },
        );
        plan.changes.push(TxChange {
            tx,
            change,
            ledger_state: state,
            flags,
        });
    }
    plan
}

/// Converts P100's row into the ledger's plain form, with a hash of its canonical JSON.
pub fn observe(t: &p100::model::Transaction) -> ObservedTx {
    let payload = serde_json::to_value(t).unwrap_or(serde_json::Value::Null);
    let hash = Sha256::digest(payload.to_string().as_bytes());
    ObservedTx {
        provider_tx_id: t.id.clone(),
        kind: t.kind.as_str().to_owned(),
        status: t.status.as_str().to_owned(),
        currency: t.currency.as_str().to_owned(),
        amount: t.amount,
        fee: t.fee.unwrap_or_default(),
        reference: t.reference.clone(),
        exchange_id: t.exchange_id.clone(),
        created_at: t.created_at,
        updated_at: t.updated_at,
        payload,
        payload_hash: hash.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Applies one page in one database transaction, cursor included.
pub async fn apply_page(
    pool: &ledger::PgPool,
    owner: &Owner,
    page: Vec<ObservedTx>,
) -> Result<PageStats, ledger::Error> {
    let mut tx = pool.begin().await?;
    let ids: Vec<String> = page.iter().map(|t| t.provider_tx_id.clone()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let stored = ledger::provider::load_for_update(&mut tx, owner, &id_refs).await?;
    let rows = page.len();
    let plan = plan_page(owner, &stored, page);
    // An upsert may touch a row once: a transaction changed twice on one page is stored in
    // rounds, its earlier version first, so its event history keeps both.
    let mut round_of: HashMap<&str, usize> = HashMap::new();
    let mut rounds: Vec<Vec<TxChange>> = Vec::new();
    for change in &plan.changes {
        let round = round_of
            .entry(change.tx.provider_tx_id.as_str())
            .or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(change.clone());
        *round += 1;
    }
    for round in &rounds {
        ledger::provider::store_changes(&mut tx, owner, round).await?;
    }
    let unchanged: Vec<&str> = plan.unchanged.iter().map(String::as_str).collect();
    ledger::provider::touch(&mut tx, owner, &unchanged).await?;
    let posted = ledger::postings::post(&mut tx, &plan.postings).await?;
    let reversed = ledger::postings::reverse(
        &mut tx,
        &plan.reversals,
        "P100 transaction no longer completed",
    )
    .await?;
    if let Some(at) = plan.max_updated_at {
        ledger::provider::advance_cursor(&mut tx, owner, at).await?;
    }
    tx.commit().await?;
    Ok(PageStats {
        rows,
        new: plan.changes.iter().filter(|c| c.change == "new").count(),
        changed: plan.changes.iter().filter(|c| c.change != "new").count(),
        posted,
        reversed,
        flagged: plan.changes.iter().filter(|c| !c.flags.is_empty()).count(),
    })
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncSummary {
    /// Pages read.
    pub pages: usize,
    /// Totals over the pages.
    pub totals: PageStats,
}

/// Reads every page from the cursor minus the overlap and applies each. Pages applied before a
/// failure stay applied (their cursor too), so the next run resumes from there.
pub async fn sync(
    client: &p100::Client,
    pool: &ledger::PgPool,
    owner: &Owner,
    overlap: Duration,
) -> Result<SyncSummary, SyncError> {
    let cursor = ledger::provider::cursor(pool, owner).await?;
    let overlap = chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::MAX);
    let scope = crate::balances::scope_of(owner);
    // Keyset paging: each request starts at the latest `updatedAt` seen so far (inclusive),
    // so a row that changes status during the run and moves to the end cannot shift another
    // row past a page boundary unseen. Only when a whole page shares one `updatedAt` does
    // the next request move on by page number. Re-read rows are recognised and skipped.
    let mut from = cursor.map(|c| {
        c.checked_sub_signed(overlap)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    });
    let mut page_no = 1;
    let mut summary = SyncSummary::default();
    loop {
        let query = HistoryQuery {
            from,
            to: None,
            size: p100::MAX_PAGE_SIZE,
        };
        let page = client.transactions_page(&scope, &query, page_no).await?;
        let served = page.size.clamp(1, query.size) as usize;
        let last = page.transactions.len() < served;
        let max = page.transactions.iter().map(|t| t.updated_at).max();
        let rows: Vec<ObservedTx> = page.transactions.iter().map(observe).collect();
        let stats = apply_page(pool, owner, rows).await?;
        summary.pages += 1;
        let t = &mut summary.totals;
        t.rows += stats.rows;
        t.new += stats.new;
        t.changed += stats.changed;
        t.posted += stats.posted;
        t.reversed += stats.reversed;
        t.flagged += stats.flagged;
        if last {
            break;
        }
        if max.is_some() && max != from {
            from = max;
            page_no = 1;
        } else {
            page_no += 1;
        }
    }
    ledger::provider::mark_synced(pool, owner).await?;
    Ok(summary)
}

/// A sync run failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading from P100 failed.
    #[error(transparent)]
    P100(#[from] p100::Error),
    /// Writing the ledger failed.
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
}

/// The job: one run of [`sync`].
pub async fn run(ctx: &JobContext, args: TxSyncArgs) -> Outcome {
    let owner = match args.owner() {
        Ok(owner) => owner,
        Err(e) => return Outcome::dead(e),
    };
    let Some(client) = &ctx.p100 else {
        return Outcome::dead("this process has no P100 client");
    };
    // Clamped: a window beyond ten years means "from the beginning" anyway.
    let overlap = args.overlap_seconds.map_or(DEFAULT_OVERLAP, |s| {
        Duration::from_secs(s.min(10 * 365 * 86_400))
    });
    match sync(client, &ctx.pool, &owner, overlap).await {
        Ok(summary) => {
            tracing::info!(
                pages = summary.pages,
                rows = summary.totals.rows,
                new = summary.totals.new,
                changed = summary.totals.changed,
                posted = summary.totals.posted,
                reversed = summary.totals.reversed,
                flagged = summary.totals.flagged,
                "synced {owner}: {} rows, {} new, {} postings, {} reversals",
                summary.totals.rows,
                summary.totals.new,
                summary.totals.posted,
                summary.totals.reversed
            );
            Outcome::Done(serde_json::to_value(&summary).unwrap_or_default())
        }
        Err(SyncError::P100(e)) => crate::p100_outcome::for_read_error(&e),
        Err(SyncError::Ledger(e)) => Outcome::retry(format!("syncing {owner}: {e}")),
    }
}
