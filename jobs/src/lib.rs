//! Jobs: each one reads P100 through the `p100` client and writes the `ledger`.
//!
//! This crate is the only place where P100's types meet the ledger's; the mapping between them
//! is done here, in pure functions. Job kinds and their payloads are in [`kinds`], per-kind
//! limits and periodic schedules in [`schedule`] (read from `jobs/schedule.toml`), the apalis
//! handler adapter in [`handler`], the tick producer in [`scheduler`].
//!
//! Job catalogue:
//! - `noop` ([`noop`]): no effect; measurement and queue tests.
//! - `tx_sync` ([`tx_sync`]): partner or user transaction history into the ledger.
//! - `sync_sweep` ([`sync_sweep`]): `tx_sync` for tracked users, spread over time.
//! - `kyc_poll` ([`kyc_poll`]): one user's KYC, re-polled with a growing delay.
//! - `exchange_finalize` ([`exchange_finalize`]): a locked exchange executed at most once.
//! - `sepa_status` ([`sepa_status`]): an outgoing SEPA transfer followed to its end; holds.
//! - `intake_sweep` ([`intake_sweep`]): first jobs for rows inserted into the intake tables.
//! - `reconcile` ([`reconcile`]): P100's balances against the ledger; discrepancies recorded.
//! - `report` ([`report`]): a day's report files.

#![warn(missing_docs)]

pub mod balances;
pub mod context;
pub mod enqueue;
pub mod exchange_finalize;
pub mod findings;
pub mod handler;
pub mod in_run_retry;
pub mod intake_sweep;
pub mod kinds;
pub mod kyc_poll;
pub mod mapping;
pub mod movement_time;
pub mod noop;
pub mod p100_outcome;
pub mod reconcile;
pub mod report;
pub mod schedule;
pub mod scheduler;
pub mod sepa_status;
pub mod sync_sweep;
pub mod tx_sync;
pub mod webhooks;

pub use context::JobContext;
pub use kinds::Kind;
