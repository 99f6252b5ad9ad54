//! Jobs: each one reads P100 through the `p100` client and writes the `ledger`.
//!
//! This crate is the only place where P100's types meet the ledger's; the mapping between them
//! is done here, in pure functions.

#![warn(missing_docs)]

pub mod balances;
