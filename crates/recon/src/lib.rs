//! Reconciliation, pure: no database, no HTTP. Jobs load P100's balances and the ledger's
//! figures, hand them to [`reconcile`], store what it finds, and render the report with
//! [`report`]. Everything here is a function of its arguments, so it is tested by tables.

#![warn(missing_docs)]

pub mod check;
pub mod render;
pub mod report;
pub mod severity;
