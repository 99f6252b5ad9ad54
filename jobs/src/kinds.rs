//! The job kinds: stable names, payloads, and per-kind defaults.
//!
//! A kind's name is its queue name and is part of the contract with queued rows, the CLI and
//! `jobs/schedule.toml`: once deployed it never changes. Payloads are versioned serde structs;
//! new fields get `#[serde(default)]` and unknown fields are ignored, so rows written by an
//! older or newer version still decode.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::schedule::KindLimits;
use crate::tx_sync::TxSyncArgs;

/// Every job kind this build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Does nothing (or what its arguments ask for): measurement and tests of the queue.
    Noop,
    /// Copies P100 transaction history into the ledger (partner or one user).
    TxSync,
    /// Enqueues `tx_sync` for tracked users, spread over time.
    SyncSweep,
    /// Follows one user through P100's KYC.
    KycPoll,
    /// Executes a locked exchange at most once and follows it.
    ExchangeFinalize,
    /// Follows one outgoing SEPA transfer to its end.
    SepaStatus,
    /// Queues the first job of intake rows the partner's application inserted directly.
    IntakeSweep,
    /// Compares P100's balances with the ledger and records discrepancies.
    Reconcile,
    /// Writes a day's reconciliation report.
    Report,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: &'static [Kind] = &[
        Kind::Noop,
        Kind::TxSync,
        Kind::SyncSweep,
        Kind::KycPoll,
        Kind::ExchangeFinalize,
        Kind::SepaStatus,
        Kind::IntakeSweep,
        Kind::Reconcile,
        Kind::Report,
    ];

    /// The queue name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Noop => "noop",
            Kind::TxSync => "tx_sync",
            Kind::SyncSweep => "sync_sweep",
            Kind::KycPoll => "kyc_poll",
            Kind::ExchangeFinalize => "exchange_finalize",
            Kind::SepaStatus => "sepa_status",
            Kind::IntakeSweep => "intake_sweep",
            Kind::Reconcile => "reconcile",
            Kind::Report => "report",
        }
    }

    /// Looks a kind up by its queue name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// Limits used when `jobs/schedule.toml` does not set them.
    pub fn default_limits(self) -> KindLimits {
        match self {
            Kind::Noop => KindLimits {
                timeout: Duration::from_secs(60),
                max_attempts: 3,
                concurrency: 64,
                max_deferrals: 5,
                from_budget: false,
                backoff_base: Duration::from_secs(5),
                backoff_max: Duration::from_secs(300),
            },
            Kind::TxSync => KindLimits {
                timeout: Duration::from_secs(1800),
                max_attempts: 8,
                concurrency: 4,
                max_deferrals: 50,
                from_budget: true,
                backoff_base: Duration::from_secs(10),
                backoff_max: Duration::from_secs(3600),
            },
            // A 401 defers every poll until the key is fixed: deferrals must outlast that.
            Kind::KycPoll => KindLimits {
                timeout: Duration::from_secs(60),
                max_attempts: 10,
                concurrency: 16,
                max_deferrals: 10_000,
                from_budget: false,
                backoff_base: Duration::from_secs(30),
                backoff_max: Duration::from_secs(3600),
            },
            Kind::ExchangeFinalize => KindLimits {
                timeout: Duration::from_secs(120),
                max_attempts: 20,
                concurrency: 4,
                max_deferrals: 1_000,
                from_budget: false,
                backoff_base: Duration::from_secs(5),
                backoff_max: Duration::from_secs(300),
            },
            // Like kyc_poll: a 401 defers every read until the key is fixed.
            Kind::SepaStatus => KindLimits {
                timeout: Duration::from_secs(60),
                max_attempts: 10,
                concurrency: 8,
                max_deferrals: 10_000,
                from_budget: false,
                backoff_base: Duration::from_secs(30),
                backoff_max: Duration::from_secs(3600),
            },
            Kind::Reconcile => KindLimits {
                timeout: Duration::from_secs(4 * 3600),
                max_attempts: 3,
                concurrency: 1,
                max_deferrals: 50,
                from_budget: false,
                backoff_base: Duration::from_secs(60),
                backoff_max: Duration::from_secs(1800),
            },
            Kind::Report => KindLimits {
                timeout: Duration::from_secs(600),
                max_attempts: 5,
                concurrency: 1,
                max_deferrals: 5,
                from_budget: false,
                backoff_base: Duration::from_secs(30),
                backoff_max: Duration::from_secs(600),
            },
            Kind::SyncSweep | Kind::IntakeSweep => KindLimits {
                timeout: Duration::from_secs(120),
                max_attempts: 3,
                concurrency: 1,
                max_deferrals: 5,
                from_budget: false,
                backoff_base: Duration::from_secs(30),
                backoff_max: Duration::from_secs(600),
            },
        }
    }

    /// Checks that `args` of a new job decode as this kind's payload and name no field it does
    /// not know (a typo would otherwise be dropped silently). Stored payloads are read
    /// leniently instead (a job queued by a newer build may carry fields this one lacks).
    pub fn validate_args(self, args: &serde_json::Value) -> Result<(), String> {
        match self {
            Kind::Noop => known_fields_only::<NoopArgs>(args),
            Kind::TxSync => known_fields_only::<TxSyncArgs>(args),
            Kind::KycPoll => known_fields_only::<crate::kyc_poll::KycPollArgs>(args),
            Kind::ExchangeFinalize => {
                known_fields_only::<crate::exchange_finalize::ExchangeFinalizeArgs>(args)
            }
            Kind::SepaStatus => known_fields_only::<crate::sepa_status::SepaStatusArgs>(args),
            Kind::Reconcile => known_fields_only::<crate::reconcile::ReconcileArgs>(args),
            Kind::Report => known_fields_only::<crate::report::ReportArgs>(args),
            Kind::IntakeSweep => known_fields_only::<crate::intake_sweep::IntakeSweepArgs>(args),
            Kind::SyncSweep => known_fields_only::<crate::sync_sweep::SyncSweepArgs>(args),
        }
        .map_err(|e| format!("{self}: {e}"))?;
        self.dedup_key(args).map(drop)
    }

    /// The unit a job of this kind works on, if at most one live job per unit is allowed.
    pub fn dedup_key(self, args: &serde_json::Value) -> Result<Option<String>, String> {
        match self {
            Kind::Noop => Ok(NoopArgs::deserialize(args).map_err(|e| e.to_string())?.unit),
            Kind::TxSync => {
                let owner = TxSyncArgs::deserialize(args)
                    .map_err(|e| e.to_string())?
                    .owner()?;
                Ok(Some(match owner {
                    ledger::Owner::Partner => "partner".to_owned(),
                    ledger::Owner::User(id) => format!("user:{id}"),
                }))
            }
            Kind::KycPoll => {
                let args =
                    crate::kyc_poll::KycPollArgs::deserialize(args).map_err(|e| e.to_string())?;
                ledger::owner::check_external_user_id(&args.user)
                    .map_err(|e| format!("kyc_poll needs \"user\": \"<externalUserId>\": {e}"))?;
                Ok(Some(format!("user:{}", args.user)))
            }
            Kind::ExchangeFinalize => {
                let args = crate::exchange_finalize::ExchangeFinalizeArgs::deserialize(args)
                    .map_err(|e| e.to_string())?;
                if args.exchange.trim().is_empty() {
                    return Err(
                        "exchange_finalize needs \"exchange\": \"<local id or lockId>\"".to_owned(),
                    );
                }
                Ok(Some(format!("exchange:{}", args.exchange)))
            }
            Kind::SepaStatus => {
                let args = crate::sepa_status::SepaStatusArgs::deserialize(args)
                    .map_err(|e| e.to_string())?;
                if args.transfer.trim().is_empty() {
                    return Err("sepa_status needs \"transfer\": \"<transferId>\"".to_owned());
                }
                Ok(Some(format!("transfer:{}", args.transfer)))
            }
            Kind::Reconcile => {
                let args = crate::reconcile::ReconcileArgs::deserialize(args)
                    .map_err(|e| e.to_string())?;
                for user in args.user.iter().chain(&args.users) {
                    ledger::owner::check_external_user_id(user)
                        .map_err(|e| format!("reconcile \"user\": {e}"))?;
                }
                Ok(Some(args.scope()))
            }
            Kind::Report => {
                let args =
                    crate::report::ReportArgs::deserialize(args).map_err(|e| e.to_string())?;
                Ok(Some(args.day()?.to_string()))
            }
            Kind::IntakeSweep => {
                crate::intake_sweep::IntakeSweepArgs::deserialize(args)
                    .map_err(|e| e.to_string())?;
                Ok(Some("sweep".to_owned()))
            }
            // One live sweep at a time.
            Kind::SyncSweep => {
                crate::sync_sweep::SyncSweepArgs::deserialize(args).map_err(|e| e.to_string())?;
                Ok(Some("sweep".to_owned()))
            }
        }
    }
}

/// Decodes `args` as `T`, failing on any field `T` does not have.
fn known_fields_only<T: serde::de::DeserializeOwned>(
    args: &serde_json::Value,
) -> Result<(), String> {
    let mut unknown = Vec::new();
    let _: T = serde_ignored::deserialize(args, |path| unknown.push(path.to_string()))
        .map_err(|e| e.to_string())?;
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!("unknown field(s): {}", unknown.join(", ")))
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Payload of `noop`. Every field is optional; tests use them to make the job misbehave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoopArgs {
    /// Payload version.
    #[serde(default)]
    pub v: u32,
    /// Dedup unit (at most one live `noop` per unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Sleep this long before answering.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sleep_ms: u64,
    /// Fail (retryably) on attempts up to and including this number.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub fail_attempts: u32,
    /// Fail permanently.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent_failure: bool,
    /// Ask to be deferred by this many seconds (as a 429 would) on every run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub defer_seconds: u64,
    /// Free text, shown in `jobs show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_stable() {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            vec![
                "noop",
                "tx_sync",
                "sync_sweep",
                "kyc_poll",
                "exchange_finalize",
                "sepa_status",
                "intake_sweep",
                "reconcile",
                "report"
            ]
        );
        assert_eq!(Kind::parse("noop"), Some(Kind::Noop));
        assert_eq!(Kind::parse("Noop"), None);
    }

    /// Security review: unknown `--args` fields were accepted and dropped.
    #[test]
    fn a_new_job_naming_an_unknown_field_is_refused() {
        let e = Kind::TxSync
            .validate_args(&serde_json::json!({"partner": true, "overlap_secs": 60}))
            .unwrap_err();
        assert!(e.contains("overlap_secs"), "{e}");
        assert!(
            Kind::TxSync
                .validate_args(&serde_json::json!({"partner": true, "overlap_seconds": 60}))
                .is_ok()
        );
    }

    #[test]
    fn payloads_tolerate_unknown_and_missing_fields() {
        let args: NoopArgs =
            serde_json::from_value(serde_json::json!({"from_the_future": 1})).unwrap();
        assert_eq!(args, NoopArgs::default());
        assert_eq!(
            serde_json::to_string(&NoopArgs {
                unit: Some("u".into()),
                ..NoopArgs::default()
            })
            .unwrap(),
            r#"{"v":0,"unit":"u"}"#
        );
    }
}
