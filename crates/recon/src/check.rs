//! The comparison itself (SPEC §5), as pure functions over loaded data.
//!
//! Per account: P100's balance at its read time against the ledger's settled balance at the
//! same instant → `matched`, `matched_in_flight` (the difference is exactly some operations
//! still in flight) or a discrepancy. Per transaction: every provider row matched to a local
//! operation or accepted as provider-originated, every settled local operation found at P100
//! after a grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// Sum that says when it cannot be represented instead of panicking. Inputs are bounded where
/// they enter (P100 decoding, the CLI, the tables' `CHECK`s); this is the last line for data
/// stored before the bounds existed.
fn checked_sum(amounts: impl IntoIterator<Item = Decimal>) -> Option<Decimal> {
    amounts
        .into_iter()
        .try_fold(Decimal::ZERO, |acc, a| acc.checked_add(a))
}

/// Discrepancy classes (SPEC §5.2, plus `balance_mismatch` for an unexplained account delta).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// An account's delta that in-flight operations do not explain.
    BalanceMismatch,
    /// P100 moved money the ledger does not have (or we have no operation for).
    MissingLocally,
    /// A local operation P100 does not show.
    MissingAtProvider,
    /// The same operation with different amounts.
    AmountMismatch,
    /// The same operation in different currencies.
    CurrencyMismatch,
    /// The same operation settled on one side and failed (or pending) on the other.
    StatusMismatch,
    /// One operation seen more than once at P100.
    Duplicate,
    /// A non-zero P100 balance with no local account.
    UnknownAccount,
    /// A tracked user P100 does not know (P412).
    UnknownUser,
    /// Pending for longer than it should be.
    StalePending,
}

impl Class {
    /// Every class.
    pub const ALL: [Class; 10] = [
        Class::BalanceMismatch,
        Class::MissingLocally,
        Class::MissingAtProvider,
        Class::AmountMismatch,
        Class::CurrencyMismatch,
        Class::StatusMismatch,
        Class::Duplicate,
        Class::UnknownAccount,
        Class::UnknownUser,
        Class::StalePending,
    ];

    /// Stored and reported spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::BalanceMismatch => "balance_mismatch",
            Class::MissingLocally => "missing_locally",
            Class::MissingAtProvider => "missing_at_provider",
            Class::AmountMismatch => "amount_mismatch",
            Class::CurrencyMismatch => "currency_mismatch",
            Class::StatusMismatch => "status_mismatch",
            Class::Duplicate => "duplicate",
            Class::UnknownAccount => "unknown_account",
            Class::UnknownUser => "unknown_user",
            Class::StalePending => "stale_pending",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// An operation that moves an account but is not settled yet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InFlight {
    /// The operation (transferId, lockId) or P100 transaction id.
    pub key: String,
    /// `p100_pending`, `sepa` or `exchange`.
    pub source: &'static str,
    /// Signed amount it will move the balance by.
    pub amount: Decimal,
}

/// One (owner, currency) to compare.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountInput {
    /// P100's balance; `None` when P100 does not list the currency for the owner.
    pub provider: Option<Decimal>,
    /// The ledger's settled balance at P100's read time; `None` when there is no account.
    pub ledger: Option<Decimal>,
    /// Operations in flight for this account.
    pub in_flight: Vec<InFlight>,
    /// Differences up to this are equal.
    pub tolerance: Decimal,
}

/// What an account comparison found.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountStatus {
    /// Equal within tolerance.
    Matched,
    /// Equal once these in-flight operations are counted.
    MatchedInFlight(Vec<InFlight>),
    /// Not equal: `balance_mismatch` or `unknown_account`.
    Discrepancy(Class),
}

/// The result for one account.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountResult {
    /// The verdict.
    pub status: AccountStatus,
    /// P100's balance as compared (zero when P100 does not list it).
    pub provider: Decimal,
    /// The ledger's balance as compared (zero without an account).
    pub ledger: Decimal,
    /// `provider − ledger`.
    pub delta: Decimal,
}

/// Largest number of in-flight operations whose subsets are searched for an explanation
/// (2^12 sums); beyond it only "all of them" is tried.
const MAX_SUBSET_SEARCH: usize = 12;

/// Compares one account.
pub fn check_account(a: &AccountInput) -> AccountResult {
    let provider = a.provider.unwrap_or_default();
    let ledger = a.ledger.unwrap_or_default();
    // Beyond Decimal's range only with data stored before amounts were bounded: the delta
    // shown saturates, and such an account is never called matched.
    let exact_delta = provider.checked_sub(ledger);
    let delta = exact_delta.unwrap_or_else(|| provider.saturating_sub(ledger));
    let result = |status| AccountResult {
        status,
        provider,
        ledger,
        delta,
    };
    if a.ledger.is_none() && !provider.is_zero() && a.in_flight.is_empty() {
        return result(AccountStatus::Discrepancy(Class::UnknownAccount));
    }
    let tolerance = a.tolerance.abs();
    if exact_delta.is_none() {
        return result(AccountStatus::Discrepancy(Class::BalanceMismatch));
    }
    if delta.abs() <= tolerance {
        return result(AccountStatus::Matched);
    }
    if let Some(explained) = explain(delta, &a.in_flight, tolerance) {
        return result(AccountStatus::MatchedInFlight(explained));
    }
    if a.ledger.is_none() {
        return result(AccountStatus::Discrepancy(Class::UnknownAccount));
    }
    result(AccountStatus::Discrepancy(Class::BalanceMismatch))
}

/// The in-flight operations whose sum equals `delta` (within tolerance): all of them, or the
/// smallest subset when there are few enough to search.
fn explain(delta: Decimal, in_flight: &[InFlight], tolerance: Decimal) -> Option<Vec<InFlight>> {
    if in_flight.is_empty() {
        return None;
    }
    let matches = |sum: Option<Decimal>| {
        sum.and_then(|s| delta.checked_sub(s))
            .is_some_and(|d| d.abs() <= tolerance)
    };
    if matches(checked_sum(in_flight.iter().map(|f| f.amount))) {
        return Some(in_flight.to_vec());
    }
    if in_flight.len() > MAX_SUBSET_SEARCH {
        return None;
    }
    let n = in_flight.len();
    let mut best: Option<u32> = None;
    for mask in 1u32..(1 << n) {
        let sum = checked_sum(
            (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| in_flight[i].amount),
        );
        if matches(sum) && best.is_none_or(|b| mask.count_ones() < b.count_ones()) {
            best = Some(mask);
        }
    }
    best.map(|mask| {
        (0..n)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| in_flight[i].clone())
            .collect()
    })
}

/// A P100 history row as reconciliation needs it (its latest version).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRow {
    /// The user, or `None` for the partner's history.
    pub user: Option<String>,
    /// P100's transaction id.
    pub id: String,
    /// `type`.
    pub kind: String,
    /// `status`.
    pub status: String,
    /// Currency.
    pub currency: String,
    /// Signed movement.
    pub amount: Decimal,
    /// Fee on top.
    pub fee: Decimal,
    /// `reference` (transferId, lockId, …).
    pub reference: Option<String>,
    /// `updatedAt`.
    pub updated_at: DateTime<Utc>,
    /// Whether the ledger has a posting for it.
    pub posted: bool,
    /// Why P100's latest version could not be read (`None` for a readable row): its movement
    /// is unknown to the ledger, and a person must look at what P100 sent.
    pub unreadable: Option<String>,
}

/// Which kind of local operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// An outgoing SEPA transfer (key: transferId).
    Sepa,
    /// An exchange (key: lockId).
    Exchange,
}

impl OpKind {
    fn row_type(self) -> &'static str {
        match self {
            OpKind::Sepa => "SEPA_TRANSFER",
            OpKind::Exchange => "EXCHANGE",
        }
    }
}

/// Where a local operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpState {
    /// Not terminal yet.
    Pending,
    /// Settled (SEPA `SUCCESSFUL`, exchange `COMPLETED`).
    Settled,
    /// Ended without moving money (SEPA `FAILED`, exchange `FAILED`/`EXPIRED`).
    Failed,
    /// P100 said it does not know it.
    Missing,
}

/// A local operation as reconciliation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalOp {
    /// The user, or `None` for the partner.
    pub user: Option<String>,
    /// Which kind.
    pub kind: OpKind,
    /// transferId or lockId.
    pub key: String,
    /// Where it stands.
    pub state: OpState,
    /// Its status as stored, for the report.
    pub status: String,
    /// Currency it debits.
    pub currency: String,
    /// Amount it debits (positive, without fees).
    pub amount: Decimal,
    /// Fee P100 reported, if known.
    pub fee: Option<Decimal>,
    /// Since when it is in its state (tracking start for pending ones).
    pub since: DateTime<Utc>,
}

/// Time limits of the transaction-level checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TxRules {
    /// How long a settled local operation may be absent from P100's history.
    pub grace: Duration,
    /// How long something may stay pending.
    pub stale_after: Duration,
}

impl Default for TxRules {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(3600),
            stale_after: Duration::from_secs(72 * 3600),
        }
    }
}

/// A transaction-level finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TxFinding {
    /// The user, or `None` for the partner.
    pub user: Option<String>,
    /// Currency.
    pub currency: String,
    /// What it is about: the operation's key, or P100's transaction id.
    pub subject: String,
    /// Class.
    pub class: Class,
    /// Signed amount at stake.
    pub amount: Decimal,
    /// P100's transaction id, if a row is involved.
    pub provider_tx_id: Option<String>,
    /// The row's or the operation's status.
    pub status: String,
    /// One line for a person.
    pub detail: String,
}

/// What the transaction-level checks looked at and found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TxCheck {
    /// Findings, in a stable order.
    pub findings: Vec<TxFinding>,
    /// (user, subject) pairs examined: a stored finding about one of these that is not found
    /// again is resolved.
    pub examined: BTreeSet<(Option<String>, String)>,
}

fn age(now: DateTime<Utc>, since: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or_default()
}

/// Matches provider rows and local operations.
pub fn check_transactions(
    rows: &[ProviderRow],
    ops: &[LocalOp],
    now: DateTime<Utc>,
    rules: TxRules,
) -> TxCheck {
    let mut out = TxCheck::default();
    let mut matched_rows: BTreeSet<(Option<String>, &str)> = BTreeSet::new();
    // Rows by (owner, type, reference): each operation finds its rows without a scan.
    let mut by_reference: BTreeMap<(&Option<String>, &str, &str), Vec<&ProviderRow>> =
        BTreeMap::new();
    for r in rows {
        if let Some(reference) = &r.reference {
            by_reference
                .entry((&r.user, r.kind.as_str(), reference.as_str()))
                .or_default()
                .push(r);
        }
    }
    for op in ops {
        let candidates: &[&ProviderRow] = by_reference
            .get(&(&op.user, op.kind.row_type(), op.key.as_str()))
            .map_or(&[], Vec::as_slice);
        // A settled operation not yet in the history, within its grace, proves nothing
        // either way: it is not examined (so nothing about it is resolved).
        if !(candidates.is_empty()
            && op.state == OpState::Settled
            && age(now, op.since) <= rules.grace)
        {
            out.examined.insert((op.user.clone(), op.key.clone()));
        }
        for r in candidates {
            matched_rows.insert((r.user.clone(), r.id.as_str()));
        }
        // For an exchange the debit is the negative leg; a SEPA transfer has one row.
        let debits: Vec<&ProviderRow> = candidates
            .iter()
            .copied()
            .filter(|r| op.kind == OpKind::Sepa || r.amount.is_sign_negative())
            .collect();
        let finding =
            |class: Class, row: Option<&ProviderRow>, amount: Decimal, detail: String| TxFinding {
                user: op.user.clone(),
                currency: op.currency.clone(),
                subject: op.key.clone(),
                class,
                amount,
                provider_tx_id: row.map(|r| r.id.clone()),
                status: row.map_or_else(|| op.status.clone(), |r| r.status.clone()),
                detail,
            };
        let what = match op.kind {
            OpKind::Sepa => "SEPA transfer",
            OpKind::Exchange => "exchange",
        };
        if debits.len() > 1 {
            let ids: Vec<&str> = debits.iter().map(|r| r.id.as_str()).collect();
            out.findings.push(finding(
                Class::Duplicate,
                debits.first().copied(),
                debits
                    .iter()
                    .fold(Decimal::ZERO, |acc, r| acc.saturating_add(r.amount)),
                format!(
                    "{what} {} appears {} times at P100: {ids:?}",
                    op.key,
                    debits.len()
                ),
            ));
            continue;
        }
        let row = debits.first().copied();
        match (op.state, row) {
            (OpState::Settled, None) if age(now, op.since) > rules.grace => {
                out.findings.push(finding(
                    Class::MissingAtProvider,
                    None,
                    -op.amount,
                    format!(
                        "{what} {} is settled locally but not in P100's history",
                        op.key
                    ),
                ));
            }
            (OpState::Missing, None) => out.findings.push(finding(
                Class::MissingAtProvider,
                None,
                -op.amount,
                format!("P100 does not know {what} {}", op.key),
            )),
            (OpState::Missing, Some(r)) => out.findings.push(finding(
                Class::StatusMismatch,
                Some(r),
                r.amount,
                format!(
                    "{what} {} was reported unknown by P100 but its history shows it {}",
                    op.key, r.status
                ),
            )),
            (OpState::Settled, Some(r)) => {
                if r.currency != op.currency {
                    out.findings.push(finding(
                        Class::CurrencyMismatch,
                        Some(r),
                        r.amount,
                        format!(
                            "{what} {} is in {} locally and in {} at P100",
                            op.key, op.currency, r.currency
                        ),
                    ));
                } else if r.amount.abs() != op.amount {
                    out.findings.push(finding(
                        Class::AmountMismatch,
                        Some(r),
                        r.amount,
                        format!(
                            "{what} {} is {} locally and {} at P100",
                            op.key,
                            op.amount,
                            r.amount.abs()
                        ),
                    ));
                }
                if r.status == "FAILED"
                    || (r.status != "COMPLETED" && age(now, r.updated_at) > rules.grace)
                {
                    out.findings.push(finding(
                        Class::StatusMismatch,
                        Some(r),
                        r.amount,
                        format!(
                            "{what} {} is settled locally but {} at P100",
                            op.key, r.status
                        ),
                    ));
                }
            }
            (OpState::Failed, Some(r)) if r.status == "COMPLETED" => {
                out.findings.push(finding(
                    Class::StatusMismatch,
                    Some(r),
                    r.amount,
                    format!("{what} {} failed locally but is COMPLETED at P100", op.key),
                ));
            }
            (OpState::Pending, _) if age(now, op.since) > rules.stale_after => {
                out.findings.push(finding(
                    Class::StalePending,
                    row,
                    -op.amount,
                    format!(
                        "{what} {} has been {} for {} h",
                        op.key,
                        op.status,
                        age(now, op.since).as_secs() / 3600
                    ),
                ));
            }
            _ => {}
        }
    }
    for r in rows {
        if matched_rows.contains(&(r.user.clone(), r.id.as_str())) {
            continue;
        }
        out.examined.insert((r.user.clone(), r.id.clone()));
        let finding = |class: Class, detail: String| TxFinding {
            user: r.user.clone(),
            currency: r.currency.clone(),
            subject: r.id.clone(),
            class,
            amount: r.amount.saturating_sub(r.fee),
            provider_tx_id: Some(r.id.clone()),
            status: r.status.clone(),
            detail,
        };
        if let Some(error) = &r.unreadable {
            out.findings.push(finding(
                Class::MissingLocally,
                format!(
                    "P100 sent transaction {} in a form that cannot be read ({error}); its movement \
                     is not in the ledger (kept as sent in provider_transactions_undecodable)",
                    r.id
                ),
            ));
            continue;
        }
        match r.status.as_str() {
            "COMPLETED" if !r.posted => out.findings.push(finding(
                Class::MissingLocally,
                format!(
                    "P100 transaction {} ({} {} {}) has no ledger posting",
                    r.id, r.kind, r.amount, r.currency
                ),
            )),
            "COMPLETED" if r.kind == "SEPA_TRANSFER" || r.kind == "EXCHANGE" => {
                out.findings.push(finding(
                    Class::MissingLocally,
                    format!(
                        "P100 shows {} {} (reference {}) that no local operation started",
                        r.kind,
                        r.id,
                        r.reference.as_deref().unwrap_or("none")
                    ),
                ))
            }
            // A status we do not know on a row the ledger holds as settled: whether the money
            // still moved cannot be told, so a person must look.
            status
                if r.posted && !matches!(status, "COMPLETED" | "PENDING" | "FAILED") =>
            {
                out.findings.push(finding(
                    Class::StatusMismatch,
                    format!(
                        "P100 now reports status {status:?} for transaction {}, which the ledger holds as posted",
                        r.id
                    ),
                ))
            }
            "PENDING" if age(now, r.updated_at) > rules.stale_after => out.findings.push(finding(
                Class::StalePending,
                format!(
                    "P100 transaction {} has been PENDING for {} h",
                    r.id,
                    age(now, r.updated_at).as_secs() / 3600
                ),
            )),
            _ => {}
        }
    }
    out.findings.sort();
    out
}

/// Operations in flight per (user, currency): P100 rows still `PENDING` and local operations
/// not yet terminal, each operation counted once (a pending SEPA_TRANSFER row and the
/// transfer we track are the same money).
pub fn in_flight(
    rows: &[ProviderRow],
    ops: &[LocalOp],
) -> BTreeMap<(Option<String>, String), Vec<InFlight>> {
    let mut out: BTreeMap<(Option<String>, String), BTreeMap<String, InFlight>> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.status == "PENDING" && r.unreadable.is_none())
    {
        let key = match (&r.kind[..], &r.reference) {
            ("SEPA_TRANSFER" | "EXCHANGE", Some(reference)) => reference.clone(),
            _ => r.id.clone(),
        };
        let slot = out.entry((r.user.clone(), r.currency.clone())).or_default();
        let entry = slot.entry(key.clone()).or_insert(InFlight {
            key,
            source: "p100_pending",
            amount: Decimal::ZERO,
        });
        entry.amount = entry.amount.saturating_add(r.amount.saturating_sub(r.fee));
    }
    for op in ops.iter().filter(|o| o.state == OpState::Pending) {
        let slot = out
            .entry((op.user.clone(), op.currency.clone()))
            .or_default();
        slot.entry(op.key.clone()).or_insert(InFlight {
            key: op.key.clone(),
            source: match op.kind {
                OpKind::Sepa => "sepa",
                OpKind::Exchange => "exchange",
            },
            amount: -(op.amount.saturating_add(op.fee.unwrap_or_default())),
        });
    }
    out.into_iter()
        .map(|(k, v)| (k, v.into_values().collect()))
        .collect()
}
