//! `tx_sync`: copies the partner's or one user's P100 transaction history into the ledger.
//!
//! Triggered by schedules (partner), sweeps (users) or `enqueue tx_sync`. Reads pages from the
//! stored cursor minus an overlap ([`Overlap`]: a minute behind where the previous run's read
//! ended, and a day behind it once a day of P100's time, assumption A38), and commits each
//! page in one transaction: the transactions, their change
//! history, the postings or reversals their status implies, and the cursor. Safe to run any
//! number of times: every fact is keyed (P100's id, payload hash, posting idempotency key), so
//! replays, overlaps and restarts change nothing.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ledger::Owner;
use ledger::postings::NewPosting;
use ledger::provider::{LedgerState, ObservedTx, Posted, StoredTx, TxChange, UndecodableRow};
use p100::HistoryQuery;
use queue::Outcome;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::context::JobContext;
use crate::mapping;

/// How far behind the cursor a routine sync starts (assumption A38). Rows move forward when
/// they change (a new `updatedAt`), so only a row P100 commits after a later one was served
/// can appear behind the cursor; a commit is milliseconds to seconds late, and the clocks of
/// P100's writers agree within milliseconds. A minute is ten times the worst we expect, and
/// costs a 200,000-rows-a-day history 139 rows (1.4 pages) a run.
pub const RECENT_OVERLAP: Duration = Duration::from_secs(60);

/// How far behind the cursor a deep re-read starts: a row that appears later than
/// [`RECENT_OVERLAP`] is still found within a day.
pub const DEEP_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// A busy day is checked per window of this length.
pub const CHECK_WINDOW: Duration = Duration::from_secs(3600);
/// A day that differs with at most this many rows is read again whole (ten pages: cheaper
/// than counting it hour by hour).
const REREAD_ROWS: u64 = 1_000;

/// P100 time (the cursor's clock) between deep re-reads: measured on the history's own
/// `updatedAt`, so a history that is idle costs nothing and a simulated clock behaves.
pub const DEEP_EVERY: Duration = DEEP_OVERLAP;

/// How far behind the cursor a run starts reading again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// [`RECENT_OVERLAP`], or [`DEEP_OVERLAP`] when the last deep re-read is [`DEEP_EVERY`]
    /// behind the cursor (or none is recorded).
    Policy,
    /// This far, whatever the last deep re-read (an operator's `overlap_seconds`); from
    /// [`DEEP_OVERLAP`] up it counts as a deep re-read.
    Fixed(Duration),
}

/// What a run read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// The whole history (no cursor yet).
    #[default]
    Full,
    /// [`RECENT_OVERLAP`] behind the cursor.
    Recent,
    /// [`DEEP_OVERLAP`] behind the cursor.
    Deep,
    /// An explicit overlap.
    Fixed,
}

impl Overlap {
    /// The job argument: an explicit overlap wins over the policy. Clamped: a window beyond
    /// ten years means "from the beginning" anyway.
    pub fn from_seconds(overlap_seconds: Option<u64>) -> Overlap {
        overlap_seconds.map_or(Overlap::Policy, |s| {
            Overlap::Fixed(Duration::from_secs(s.min(10 * 365 * 86_400)))
        })
    }

    /// Where a run starts (`None`: the beginning), what kind of read it is, and whether it
    /// counts as a deep re-read.
    pub fn plan(
        self,
        position: ledger::provider::SyncPosition,
    ) -> (Option<DateTime<Utc>>, Window, bool) {
        let Some(cursor) = position.cursor_at else {
            return (None, Window::Full, true);
        };
        let behind = |by: Duration| {
            let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
            Some(
                cursor
                    .checked_sub_signed(by)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
            )
        };
        match self {
            Overlap::Fixed(by) => (behind(by), Window::Fixed, by >= DEEP_OVERLAP),
            Overlap::Policy => {
                let every = chrono::Duration::from_std(DEEP_EVERY).unwrap_or(chrono::Duration::MAX);
                let due = position
                    .deep_read_cursor_at
                    .is_none_or(|deep| cursor.signed_duration_since(deep) >= every);
                if due {
                    (behind(DEEP_OVERLAP), Window::Deep, true)
                } else {
                    (behind(RECENT_OVERLAP), Window::Recent, false)
                }
            }
        }
    }
}

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
    /// Overlap in seconds; without it, [`Overlap::Policy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_seconds: Option<u64>,
}

impl TxSyncArgs {
    /// The history this job reads; exactly one of `partner` and `user` must be set.
    pub fn owner(&self) -> Result<Owner, String> {
        match (self.partner, &self.user) {
            (true, None) => Ok(Owner::Partner),
            (false, Some(id)) => Owner::user(id),
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

/// The figures of a version in the terms a posting records them.
fn figures_of(key: String, tx: &ObservedTx) -> Posted {
    Posted {
        key,
        amount: tx.amount,
        fee: tx.fee,
        currency: tx.currency.clone(),
    }
}

fn same_figures(posted: &Posted, tx: &ObservedTx) -> bool {
    posted.amount == tx.amount && posted.fee == tx.fee && posted.currency == tx.currency
}

/// What the ledger holds for a row after one version is planned.
struct RowLedger {
    state: LedgerState,
    posted: Option<Posted>,
}

/// Decides what a page changes, given what is stored and the local postings a row may adopt.
/// Rows are taken in page order; a row older than the stored version (by `updatedAt`) never
/// rolls it back. What was posted for a row is recorded with it, so a reversal undoes exactly
/// that posting, and a change of amount, fee or currency of a settled row is a reversal plus
/// a new posting.
pub fn plan_page(
    owner: &Owner,
    stored: &HashMap<String, StoredTx>,
    mut adoptable: HashMap<String, Posted>,
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
        let before = RowLedger {
            state: previous
                .as_ref()
                .map_or(LedgerState::None, |p| p.ledger_state),
            posted: previous.as_ref().and_then(|p| p.posted.clone()),
        };
        let after = plan_row(owner, &tx, before, &mut adoptable, &mut flags, &mut plan);
        working.insert(
            tx.provider_tx_id.clone(),
            StoredTx {
                status: tx.status.clone(),
                updated_at: tx.updated_at,
                payload_hash: tx.payload_hash.clone(),
                ledger_state: after.state,
                flags: flags.clone(),
                posted: after.posted.clone(),
            },
        );
        plan.changes.push(TxChange {
            tx,
            change,
            ledger_state: after.state,
            flags,
            posted: after.posted,
        });
    }
    plan
}

/// The ledger side of one new version of a row.
fn plan_row(
    owner: &Owner,
    tx: &ObservedTx,
    before: RowLedger,
    adoptable: &mut HashMap<String, Posted>,
    flags: &mut Vec<String>,
    plan: &mut PagePlan,
) -> RowLedger {
    match (tx.status.as_str(), before.state, &before.posted) {
        // Settled and already posted with these figures: nothing to do.
        ("COMPLETED", LedgerState::Posted, Some(posted)) if same_figures(posted, tx) => before,
        // Settled, posted with other figures: a correction.
        ("COMPLETED", LedgerState::Posted, Some(posted)) => {
            let posted = posted.clone();
            correct(owner, tx, posted, flags, plan)
        }
        ("COMPLETED", _, _) => {
            // A local operation may have posted this movement already: stand for it.
            // Whenever the row holds no live posting (new, or reversed earlier): a local
            // operation's posting is only adoptable while nothing else stands for it.
            let local = mapping::local_operation_keys(owner, tx)
                .iter()
                .find_map(|key| adoptable.remove(key));
            match local {
                Some(posted) if same_figures(&posted, tx) => RowLedger {
                    state: LedgerState::Posted,
                    posted: Some(posted),
                },
                Some(posted) => correct(owner, tx, posted, flags, plan),
                None => {
                    let key = if before.posted.is_none() {
                        mapping::row_key(owner, &tx.provider_tx_id)
                    } else {
                        raise(flags, "reposted");
                        mapping::version_key(owner, tx)
                    };
                    let after = post_version(owner, tx, key, flags, plan);
                    if after.state == LedgerState::None {
                        // Nothing was posted for this version: keep what stood before.
                        before
                    } else {
                        after
                    }
                }
            }
        }
        // No longer settled: undo exactly what was posted.
        ("PENDING" | "FAILED", LedgerState::Posted, Some(posted)) => {
            reverse(plan, tx, posted);
            RowLedger {
                state: LedgerState::Reversed,
                posted: before.posted,
            }
        }
        // A status we do not know on a posted row: we cannot tell whether the money moved.
        // Keep the posting and say so.
        (status, LedgerState::Posted, _) if !KNOWN_STATUSES.contains(&status) => {
            raise(flags, "unknown_status_on_posted");
            before
        }
        _ => before,
    }
}

fn reverse(plan: &mut PagePlan, tx: &ObservedTx, posted: &Posted) {
    plan.reversals.push((
        posted.key.clone(),
        format!("{}:reversal", posted.key),
        tx.updated_at,
    ));
}

/// A settled row whose posting holds other figures than the new version: the old posting is
/// reversed and the version posted under its own key.
fn correct(
    owner: &Owner,
    tx: &ObservedTx,
    old: Posted,
    flags: &mut Vec<String>,
    plan: &mut PagePlan,
) -> RowLedger {
    raise(flags, "corrected");
    reverse(plan, tx, &old);
    let after = post_version(owner, tx, mapping::version_key(owner, tx), flags, plan);
    if after.state == LedgerState::None {
        RowLedger {
            state: LedgerState::Reversed,
            posted: Some(old),
        }
    } else {
        after
    }
}

fn post_version(
    owner: &Owner,
    tx: &ObservedTx,
    key: String,
    flags: &mut Vec<String>,
    plan: &mut PagePlan,
) -> RowLedger {
    match mapping::to_posting(owner, tx, key.clone()) {
        Ok(Some(posting)) => {
            plan.postings.push(posting);
            RowLedger {
                state: LedgerState::Posted,
                posted: Some(figures_of(key, tx)),
            }
        }
        Ok(None) => RowLedger {
            state: LedgerState::None,
            posted: None,
        },
        Err(_) => {
            raise(flags, "unpostable");
            RowLedger {
                state: LedgerState::None,
                posted: None,
            }
        }
    }
}

fn hash_hex(payload: &serde_json::Value) -> String {
    let hash = Sha256::digest(payload.to_string().as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Converts P100's row into the ledger's plain form, with a hash of its canonical JSON.
pub fn observe(t: &p100::model::Transaction) -> ObservedTx {
    let payload = serde_json::to_value(t).unwrap_or(serde_json::Value::Null);
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
        payload_hash: hash_hex(&payload),
        payload,
    }
}

/// Keeps a row P100 sent that is not a valid transaction, with the reason.
pub fn observe_undecodable(row: &p100::model::UndecodableTransaction) -> UndecodableRow {
    UndecodableRow {
        provider_tx_id: row.id.clone(),
        payload: row.raw.clone(),
        payload_hash: hash_hex(&row.raw),
        error: row.error.chars().take(500).collect(),
    }
}

/// Applies the rows of one or more consecutive pages, in page order, in one database
/// transaction, cursor included. The owner's write lock is
/// taken first, so a second writer of the same owner (another sync, a SEPA settlement, an
/// exchange posting) waits and then plans against what this one committed.
pub async fn apply_page(
    pool: &ledger::PgPool,
    owner: &Owner,
    page: Vec<ObservedTx>,
    undecodable: Vec<UndecodableRow>,
) -> Result<PageStats, ledger::Error> {
    let mut tx = pool.begin().await?;
    ledger::owner_lock::acquire(&mut tx, owner).await?;
    let ids: Vec<String> = page.iter().map(|t| t.provider_tx_id.clone()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let stored = ledger::provider::load_for_update(&mut tx, owner, &id_refs).await?;
    let local_keys: Vec<String> = page
        .iter()
        .filter(|t| t.status == "COMPLETED")
        .flat_map(|t| mapping::local_operation_keys(owner, t))
        .collect();
    let adoptable = ledger::provider::adoptable_postings(&mut tx, &local_keys).await?;
    let rows = page.len() + undecodable.len();
    let plan = plan_page(owner, &stored, adoptable, page);
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
    // Postings first: a row posted and undone on the same page reverses a posting of this page.
    let posted = ledger::postings::post(&mut tx, &plan.postings).await?;
    let reversed = ledger::postings::reverse(
        &mut tx,
        &plan.reversals,
        "P100 transaction no longer completed as posted",
    )
    .await?;
    // Every key planned is new (replays were recognised as unchanged): a key that exists
    // already means the stored row and the ledger disagree, and recording the row as posted
    // would hide a movement the ledger does not hold.
    if posted != plan.postings.len() as u64 || reversed != plan.reversals.len() as u64 {
        return Err(ledger::Error::Corrupt(format!(
            "{owner}: {} of {} postings and {} of {} reversals were new; the stored rows do \
             not match the ledger (a person must look before this history is synced on)",
            posted,
            plan.postings.len(),
            reversed,
            plan.reversals.len()
        )));
    }
    let unreadable = ledger::provider::store_undecodable(&mut tx, owner, &undecodable).await?;
    if unreadable > 0 {
        // Kept raw in provider_transactions_undecodable; said whenever a page brings one not
        // kept before, with P100's id and the reason (serde's, bounded at observe time).
        metrics::counter!("p100_undecodable_rows_total").increment(unreadable);
        for row in &undecodable {
            tracing::warn!(
                p100.transaction_id = row.provider_tx_id.as_deref().unwrap_or("(none)"),
                error = %row.error,
                "{owner}: P100 sent a history row that cannot be read; it is kept in \
                 provider_transactions_undecodable and its movement is not in the ledger"
            );
        }
    }
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
        flagged: plan.changes.iter().filter(|c| !c.flags.is_empty()).count() + undecodable.len(),
    })
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncSummary {
    /// What the run read.
    pub window: Window,
    /// Where it started (`None`: the beginning).
    pub read_from: Option<DateTime<Utc>>,
    /// Pages read.
    pub pages: usize,
    /// Times a block of rows sharing one `updatedAt` was read again from its first page
    /// because its size changed while it was being read.
    pub block_restarts: usize,
    /// Totals over the pages.
    pub totals: PageStats,
    /// Windows of the day behind the cursor whose row count was compared with P100's (the
    /// daily check: the day, then its hours when it differs and is busy).
    pub windows_checked: usize,
    /// Of those, windows whose counts differed and were read again.
    pub windows_reread: usize,
}

/// Rows sharing one `updatedAt` that fill a whole page: read with `from = to = at` by page
/// number, and again from the first page whenever their number changes.
#[derive(Debug, Clone, Copy)]
struct SameInstantBlock {
    at: DateTime<Utc>,
    total: Option<u64>,
}

/// The smallest step of P100's `updatedAt` (assumption A3): the instant after a block.
const TIME_STEP: chrono::Duration = chrono::Duration::milliseconds(1);

/// Where the walk through a history stands: which request comes next.
#[derive(Debug, Clone, Copy)]
struct Walk {
    from: Option<DateTime<Utc>>,
    /// The last instant read (inclusive); `None`: to the end of the history.
    until: Option<DateTime<Utc>>,
    block: Option<SameInstantBlock>,
    page_no: u32,
    block_restarts: usize,
}

impl Walk {
    fn query(&self) -> HistoryQuery {
        HistoryQuery {
            from: self.block.map(|b| b.at).or(self.from),
            to: self.block.map(|b| b.at).or(self.until),
            size: p100::MAX_PAGE_SIZE,
        }
    }

    /// Moves on past `page` (read with [`Walk::query`]); `false` when the history has ended.
    /// Decided from the page alone, so the next request can leave while this page is stored.
    fn advance(&mut self, page: &p100::model::TransactionPage) -> Result<bool, String> {
        let served = page.size.clamp(1, p100::MAX_PAGE_SIZE) as usize;
        // A short page ends the history. `total` is not trusted to end it: a stale or capped
        // count would stop the walk early and silently (one empty request after a full last
        // page is the price).
        let last = page.rows() < served;
        if let Some(b) = &mut self.block {
            if b.total.is_none() && page.rows() < served {
                // The previous page showed a full page at this instant; `from = to = instant`
                // showing fewer means `to` is not inclusive or times are finer than a
                // millisecond (assumption A3 broken): stop rather than skip rows.
                return Err(format!(
                    "P100 served {} rows for updatedAt = {} after a full page of them: the \
                     history paging contract (assumption A3) does not hold",
                    page.rows(),
                    b.at.to_rfc3339()
                ));
            }
            if b.total.is_some_and(|t| t != page.total) {
                self.block_restarts += 1;
                b.total = Some(page.total);
                self.page_no = 1;
            } else if last {
                self.from = b.at.checked_add_signed(TIME_STEP);
                self.block = None;
                self.page_no = 1;
            } else {
                b.total = Some(page.total);
                self.page_no += 1;
            }
            return Ok(true);
        }
        if last {
            return Ok(false);
        }
        let times = page
            .transactions
            .iter()
            .map(|t| t.updated_at)
            .chain(page.undecodable.iter().filter_map(|u| u.updated_at));
        match (times.clone().min(), times.max()) {
            (Some(min), Some(max)) if min == max => {
                self.block = Some(SameInstantBlock {
                    at: max,
                    total: None,
                });
                self.page_no = 1;
            }
            (_, Some(max)) => {
                self.from = Some(max);
                self.page_no = 1;
            }
            // Nothing on the page had a readable time: move on by page number.
            (_, None) => self.page_no += 1,
        }
        Ok(true)
    }
}

/// Pages stored in one transaction at most. When P100 answers faster than the ledger stores
/// (a backfill, a generous budget), the pages already fetched are stored together: one owner
/// lock, one round of statements and one commit for all of them. When P100 is the slower side
/// each page arrives alone and is stored alone. Bounded so the owner's lock is held briefly.
const MAX_PAGES_PER_COMMIT: usize = 8;

/// Reads every page from the cursor minus the overlap and applies them in order. Pages
/// applied before a failure stay applied (their cursor too), so the next run resumes from
/// there. Fetching runs ahead of storing (the walk depends on each page's content only), so
/// P100's answer time and ours overlap; the pages fetched ahead of a failed store (at most
/// [`MAX_PAGES_PER_COMMIT`] and one in flight) are the only requests that can be wasted.
///
/// Paging cannot skip a row (assumption A3): each request starts at the latest `updatedAt`
/// seen (inclusive), so a row that changes mid-run moves behind the read position and shifts
/// nothing unread. Only a whole page of one instant needs page numbers; that block is read
/// with `from = to = instant`, and its `total` is compared on every page: a row leaving the
/// block (the only way positions inside it can shift) changes the total, and the block is
/// read again from its first page. A pass with a constant total saw every row that stayed.
pub async fn sync(
    client: &p100::Client,
    pool: &ledger::PgPool,
    owner: &Owner,
    overlap: Overlap,
) -> Result<SyncSummary, SyncError> {
    let position = ledger::provider::position(pool, owner).await?;
    let (read_from, window, deep) = overlap.plan(position);
    // The policy's daily deep re-read is a check: the recent window is read as usual, then
    // each hour of the day behind the cursor is counted at P100 (one request) and read again
    // only where P100 counts other rows than the ledger holds.
    let check = match (overlap, window, position.cursor_at) {
        (Overlap::Policy, Window::Deep, Some(cursor)) => Some(cursor),
        _ => None,
    };
    let read_from = match check {
        Some(cursor) => Some(behind(cursor, RECENT_OVERLAP)),
        None => read_from,
    };
    let (mut summary, read_to) = walk(client, pool, owner, read_from, None).await?;
    // The cursor stands where it stood when nothing newer was read.
    let read_to = read_to.max(position.cursor_at);
    summary.window = window;
    summary.read_from = read_from;
    if let Some(cursor) = check {
        check_day(client, pool, owner, cursor, &mut summary).await?;
    }
    // Recorded only once every page is committed: a deep run that fails part-way leaves the
    // next run deep too.
    ledger::provider::mark_synced(pool, owner, read_to.filter(|_| deep)).await?;
    Ok(summary)
}

/// `at` less `by`, or the beginning of time.
fn behind(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|by| at.checked_sub_signed(by))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The daily check of the day behind `cursor`: P100's row count for the day (a one-row page's
/// `total`) against the ledger's; when they differ, a day of few rows is read again whole, a
/// busy one per [`CHECK_WINDOW`] the same way, reading again only the windows that differ.
/// A row that changed moves to a later window at P100 and, once synced, here too; a row the
/// sync never saw leaves its window short. Undecodable rows are not counted here, so their
/// window is read again every day (harmless: reads are idempotent).
async fn check_day(
    client: &p100::Client,
    pool: &ledger::PgPool,
    owner: &Owner,
    cursor: DateTime<Utc>,
    summary: &mut SyncSummary,
) -> Result<(), SyncError> {
    let day = (behind(cursor, DEEP_OVERLAP), cursor);
    let Some(rows) = differs(client, pool, owner, day, summary).await? else {
        return Ok(());
    };
    if rows <= REREAD_ROWS {
        return reread(client, pool, owner, day, summary).await;
    }
    let step = chrono::Duration::from_std(CHECK_WINDOW).unwrap_or(chrono::Duration::hours(1));
    let mut from = day.0;
    // Windows of `step` tile [day.0, cursor]; the last one ends at the cursor itself (a
    // separate window for that one instant cost a request per busy owner per day).
    while from <= cursor {
        let end = from + step - TIME_STEP;
        let window = (from, if end + step > cursor { cursor } else { end });
        if differs(client, pool, owner, window, summary)
            .await?
            .is_some()
        {
            reread(client, pool, owner, window, summary).await?;
        }
        from = window.1 + TIME_STEP;
    }
    Ok(())
}

/// P100's row count for `[from, to]` when it differs from the ledger's.
async fn differs(
    client: &p100::Client,
    pool: &ledger::PgPool,
    owner: &Owner,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    summary: &mut SyncSummary,
) -> Result<Option<u64>, SyncError> {
    let query = HistoryQuery {
        from: Some(from),
        to: Some(to),
        size: 1,
    };
    let scope = crate::balances::scope_of(owner);
    let theirs = client.transactions_page(&scope, &query, 1).await?.total;
    let ours = ledger::provider::rows_updated_between(pool, owner, from, to).await?;
    summary.windows_checked += 1;
    if theirs == ours {
        return Ok(None);
    }
    tracing::info!(
        %owner,
        from = %from,
        to = %to,
        p100_rows = theirs,
        ledger_rows = ours,
        "P100's history counts other rows than the ledger holds; reading them again"
    );
    Ok(Some(theirs))
}

/// Reads `[from, to]` again whole.
async fn reread(
    client: &p100::Client,
    pool: &ledger::PgPool,
    owner: &Owner,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    summary: &mut SyncSummary,
) -> Result<(), SyncError> {
    let (part, _) = walk(client, pool, owner, Some(from), Some(to)).await?;
    summary.windows_reread += 1;
    summary.pages += part.pages;
    summary.block_restarts += part.block_restarts;
    summary.totals.add(&part.totals);
    Ok(())
}

/// Reads every page of `[from, until]` (`None`: the beginning, the end) and applies them in
/// order; returns the totals and the latest `updatedAt` committed.
async fn walk(
    client: &p100::Client,
    pool: &ledger::PgPool,
    owner: &Owner,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<(SyncSummary, Option<DateTime<Utc>>), SyncError> {
    let scope = crate::balances::scope_of(owner);
    let mut walk = Walk {
        from,
        until,
        block: None,
        page_no: 1,
        block_restarts: 0,
    };
    let (pages_tx, mut pages_rx) = tokio::sync::mpsc::channel(MAX_PAGES_PER_COMMIT);
    let fetch = async move {
        loop {
            let (item, more) = match client
                .transactions_page(&scope, &walk.query(), walk.page_no)
                .await
            {
                Ok(page) => match walk.advance(&page) {
                    Ok(more) => (Ok(page), more),
                    Err(e) => (Err(SyncError::Contract(e)), false),
                },
                Err(e) => (Err(SyncError::from(e)), false),
            };
            // A closed channel: storing failed, and what it said is the run's outcome.
            if pages_tx.send(item).await.is_err() || !more {
                break;
            }
        }
        walk.block_restarts
    };
    let store = async move {
        let mut summary = SyncSummary::default();
        let mut read_to = None;
        while let Some(first) = pages_rx.recv().await {
            let mut batch = vec![first?];
            let mut failure = None;
            while batch.len() < MAX_PAGES_PER_COMMIT {
                match pages_rx.try_recv() {
                    Ok(Ok(page)) => batch.push(page),
                    Ok(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let rows: Vec<ObservedTx> = batch
                .iter()
                .flat_map(|p| p.transactions.iter().map(observe))
                .collect();
            read_to = read_to.max(rows.iter().map(|r| r.updated_at).max());
            let undecodable = batch
                .iter()
                .flat_map(|p| p.undecodable.iter().map(observe_undecodable))
                .collect();
            let stats = apply_page(pool, owner, rows, undecodable).await?;
            summary.pages += batch.len();
            summary.totals.add(&stats);
            if let Some(e) = failure {
                return Err(e);
            }
        }
        Ok((summary, read_to))
    };
    let (stored, block_restarts) = tokio::join!(store, fetch);
    let (mut summary, read_to) = stored?;
    summary.block_restarts = block_restarts;
    Ok((summary, read_to))
}

impl PageStats {
    fn add(&mut self, other: &PageStats) {
        self.rows += other.rows;
        self.new += other.new;
        self.changed += other.changed;
        self.posted += other.posted;
        self.reversed += other.reversed;
        self.flagged += other.flagged;
    }
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
    /// P100's answers break an assumption the sync relies on; a person must look.
    #[error("{0}")]
    Contract(String),
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
    match sync(
        client,
        &ctx.pool,
        &owner,
        Overlap::from_seconds(args.overlap_seconds),
    )
    .await
    {
        Ok(summary) => {
            tracing::info!(
                window = ?summary.window,
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
        Err(SyncError::Contract(e)) => Outcome::dead(format!("syncing {owner}: {e}")),
    }
}

/// `tx_sync`: copies P100 transaction history into the ledger (partner or one user).
pub struct TxSyncJob;

impl crate::handler::Job for TxSyncJob {
    type Args = TxSyncArgs;
    const KIND: crate::kinds::Kind = crate::kinds::Kind::TxSync;
    const NAME: &'static str = "tx_sync";

    fn default_limits() -> crate::schedule::KindLimits {
        use crate::schedule::KindLimits;
        use std::time::Duration;
        KindLimits {
            timeout: Duration::from_secs(1800),
            max_attempts: 8,
            concurrency: 4,
            max_deferrals: 50,
            from_budget: true,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(3600),
            ..KindLimits::default()
        }
    }

    fn dedup_key(args: &Self::Args) -> Result<Option<String>, String> {
        Ok(Some(match args.owner()? {
            Owner::Partner => "partner".to_owned(),
            Owner::User(id) => format!("user:{id}"),
        }))
    }

    fn unit(args: &Self::Args) -> Option<String> {
        args.user
            .clone()
            .or_else(|| args.partner.then(|| "partner".to_owned()))
    }

    async fn run(
        ctx: &crate::context::JobContext,
        args: Self::Args,
        _attempt: u32,
    ) -> queue::Outcome {
        run(ctx, args).await
    }
}
