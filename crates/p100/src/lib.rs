//! Typed client for the P100 Partner API.
//!
//! Owns: HTTP calls to P100, request and response bodies mirroring P100's JSON, the
//! `x-api-key` header, timeouts, the client-side rate limit, paging, and the classification
//! of failures ([`ErrorClass`]). Knows nothing of the database, the ledger, apalis or how
//! settings are read: the caller hands it a [`Config`].
//!
//! Main types: [`Client`] (one method per endpoint), [`Error`] (path, HTTP status, P-code,
//! P100's message, class), the models in [`model`], exact amounts in [`amount`].

#![warn(missing_docs)]

pub mod amount;
pub mod calls;
mod client;
mod config;
pub mod enums;
mod error;
mod lane;
pub mod model;
mod paths;
mod rate;
pub mod text;
pub mod webhook;

pub use amount::Currency;
pub use client::{BuildError, Client, HistoryQuery, MAX_PAGE_SIZE};
pub use config::{ApiKey, Config, PRODUCTION_URL, STAGING_URL};
pub use error::{Error, ErrorClass, Failure, classify};
pub use lane::Lane;
pub use paths::Scope;
