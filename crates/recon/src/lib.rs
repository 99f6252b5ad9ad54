//! Reconciliation, pure: no database, no HTTP. The `reconcile` job loads P100's balances and
//! the ledger's figures, hands them to [`check`], stores what it finds; the `report` job fills
//! the [`report`] model and writes it with [`render`]. Everything here is a function of its
//! arguments, so it is tested by tables.

#![warn(missing_docs)]

pub mod check;
pub mod money;
mod page;
pub mod render;
pub mod report;
pub mod severity;
