//! The nightly report: the JSON contract of SPEC §6 (other tools read it; field names and
//! shapes never change), plus the figures the HTML page adds (trend of the last runs).
//!
//! Amounts are decimal strings, times RFC 3339 UTC. Fields beyond SPEC §6 (`scope`,
//! `complete`, `incomplete_reasons`, `p100`) are additions the schema lists explicitly.

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Serialize, Serializer};

/// Serialises a time as RFC 3339 UTC with a `Z` and milliseconds.
pub fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn decimal_opt<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&d.to_string()),
        None => s.serialize_none(),
    }
}

/// `reconciliation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Report {
    /// The reconciliation run described.
    pub run_id: String,
    /// The latest P100 balance read of the run (each account is compared at its own read).
    #[serde(serialize_with = "rfc3339")]
    pub cutoff: DateTime<Utc>,
    /// When the run started.
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    /// When the run finished.
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: DateTime<Utc>,
    /// Counts and totals.
    pub summary: Summary,
    /// Discrepancies the run found (with their current state).
    pub discrepancies: Vec<ReportDiscrepancy>,
    /// Transactions and local operations the run could not match.
    pub unmatched_transactions: Vec<UnmatchedTransaction>,
    /// The queue at report time.
    pub jobs: JobsSummary,
    /// `all`, `partner` or `user:<id>`. Addition to SPEC §6.
    pub scope: String,
    /// False when something the run depends on failed (e.g. the preceding sync). Addition.
    pub complete: bool,
    /// Why the report is incomplete (empty when complete). Addition.
    pub incomplete_reasons: Vec<String>,
    /// P100 calls the run spent against its budget. Addition.
    pub p100: P100Usage,
}

/// `summary`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Summary {
    /// (owner, currency) accounts compared.
    pub accounts_checked: u64,
    /// Equal within tolerance.
    pub matched: u64,
    /// Equal once in-flight operations are counted.
    pub matched_in_flight: u64,
    /// Discrepancies found by the run (account- and transaction-level).
    pub discrepancies: u64,
    /// Totals per currency over the accounts checked.
    pub by_currency: Vec<CurrencyTotal>,
}

/// One `summary.by_currency` entry.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CurrencyTotal {
    /// Lowercase currency.
    pub currency: String,
    /// Sum of P100's balances.
    #[serde(with = "rust_decimal::serde::str")]
    pub provider_total: Decimal,
    /// Sum of the ledger's settled balances.
    #[serde(with = "rust_decimal::serde::str")]
    pub ledger_total: Decimal,
    /// `provider_total − ledger_total`.
    #[serde(with = "rust_decimal::serde::str")]
    pub delta: Decimal,
}

/// One `discrepancies` entry.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReportDiscrepancy {
    /// Stored id (as a string).
    pub id: String,
    /// `partner` or `user`.
    pub owner: String,
    /// The user, or null for the partner.
    pub external_user_id: Option<String>,
    /// Currency, or null (e.g. `unknown_user`).
    pub currency: Option<String>,
    /// `balance_mismatch`, `missing_locally`, … .
    pub class: String,
    /// P100's balance (account-level classes), else null.
    #[serde(
        serialize_with = "decimal_opt",
        deserialize_with = "rust_decimal::serde::str_option::deserialize"
    )]
    pub provider_balance: Option<Decimal>,
    /// The ledger's settled balance (account-level classes), else null.
    #[serde(
        serialize_with = "decimal_opt",
        deserialize_with = "rust_decimal::serde::str_option::deserialize"
    )]
    pub ledger_balance: Option<Decimal>,
    /// `provider_balance − ledger_balance`, or the amount at stake for transaction-level ones.
    #[serde(
        serialize_with = "decimal_opt",
        deserialize_with = "rust_decimal::serde::str_option::deserialize"
    )]
    pub delta: Option<Decimal>,
    /// `open`, `acknowledged` or `resolved`.
    pub state: String,
    /// First found.
    #[serde(serialize_with = "rfc3339")]
    pub first_seen_at: DateTime<Utc>,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// Candidate explanations.
    pub explanations: Vec<Explanation>,
    /// The transaction or operation it is about, if any. Addition.
    pub subject: Option<String>,
    /// One line for a person. Addition.
    pub detail: Option<String>,
}

/// One candidate explanation of a discrepancy.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Explanation {
    /// P100 transaction id, or the local operation's id (transferId, lockId).
    pub provider_tx_id: String,
    /// Class of the explanation (`missing_locally`, `in_flight`, …).
    pub class: String,
    /// Signed amount it would move the balance by.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
}

/// One `unmatched_transactions` entry.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct UnmatchedTransaction {
    /// P100 transaction id (null for a local operation P100 does not show).
    pub provider_tx_id: Option<String>,
    /// The local operation (transferId, lockId), if any.
    pub reference: Option<String>,
    /// `partner` or `user`.
    pub owner: String,
    /// The user, or null.
    pub external_user_id: Option<String>,
    /// Currency.
    pub currency: String,
    /// Signed amount.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// Transaction-level class.
    pub class: String,
    /// P100's status of the row, or the local operation's.
    pub status: String,
}

/// `jobs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct JobsSummary {
    /// Jobs waiting for a retry.
    pub failed: u64,
    /// Jobs that ran out of attempts.
    pub dead: u64,
    /// Age of the oldest runnable pending job.
    pub oldest_pending_age_seconds: u64,
}

/// `p100`: the calls the run spent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct P100Usage {
    /// Requests made.
    pub calls: u64,
    /// Requests allowed.
    pub budget: u64,
}

/// One point of the HTML page's trend (not part of the JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendPoint {
    /// Run id.
    pub run_id: String,
    /// When it started.
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    /// Accounts compared.
    pub accounts_checked: u64,
    /// Discrepancies found.
    pub discrepancies: u64,
    /// Whether it was complete.
    pub complete: bool,
}
