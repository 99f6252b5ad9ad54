//! The job kinds: one registration list, generated lookups.
//!
//! Each kind lives in its own module: its payload (a versioned serde struct), its name (the
//! queue name, part of the contract with queued rows, the CLI and `jobs/schedule.toml`: once
//! deployed it never changes), its default limits, its dedup key and its handler, as an
//! implementation of [`Job`]. The [`registry!`] list below is the one place a kind is
//! registered; the `Kind` enum and every per-kind lookup are generated from it. Payloads
//! are read leniently (unknown fields ignored, new fields defaulted) so rows written by an
//! older or newer build still decode; a *new* job naming an unknown field is refused.

use serde::{Deserialize, Serialize};

use crate::handler::Job;
use crate::schedule::KindLimits;

/// Visits the job type of a kind (the worker wiring registers each kind's apalis worker).
pub trait KindVisitor {
    /// Called with the kind's job type.
    fn visit<J: Job>(&mut self);
}

/// Generates `Kind` and its lookups from the list of (variant, job type).
macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident => $job:ty ),+ $(,)?) => {
        /// Every job kind this build runs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Kind {
            $( $(#[$doc])* $variant, )+
        }

        impl Kind {
            /// Every kind, in a stable order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),+];

            /// The queue name.
            pub fn name(self) -> &'static str {
                match self { $(Kind::$variant => <$job as Job>::NAME),+ }
            }

            /// Limits used when `jobs/schedule.toml` does not set them.
            pub fn default_limits(self) -> KindLimits {
                match self { $(Kind::$variant => <$job as Job>::default_limits()),+ }
            }

            /// Checks that `args` of a new job decode as this kind's payload and name no field
            /// it does not know (a typo would otherwise be dropped silently).
            pub fn validate_args(self, args: &serde_json::Value) -> Result<(), String> {
                match self { $(Kind::$variant => known_fields_only::<<$job as Job>::Args>(args)),+ }
                    .map_err(|e| format!("{self}: {e}"))?;
                self.dedup_key(args).map(drop)
            }

            /// The unit a job of this kind works on, if at most one live job per unit is
            /// allowed.
            pub fn dedup_key(self, args: &serde_json::Value) -> Result<Option<String>, String> {
                match self { $(Kind::$variant => dedup_of::<$job>(args)),+ }
            }

            /// Calls `visitor` with this kind's job type.
            pub fn visit<V: KindVisitor>(self, visitor: &mut V) {
                match self { $(Kind::$variant => visitor.visit::<$job>()),+ }
            }
        }
    };
}

registry! {
    /// Does nothing (or what its arguments ask for): measurement and tests of the queue.
    Noop => crate::noop::NoopJob,
    /// Copies P100 transaction history into the ledger (partner or one user).
    TxSync => crate::tx_sync::TxSyncJob,
    /// Enqueues `tx_sync` for tracked users, spread over time.
    SyncSweep => crate::sync_sweep::SyncSweepJob,
    /// Follows one user through P100's KYC.
    KycPoll => crate::kyc_poll::KycPollJob,
    /// Executes a locked exchange at most once and follows it.
    ExchangeFinalize => crate::exchange_finalize::ExchangeFinalizeJob,
    /// Follows one outgoing SEPA transfer to its end.
    SepaStatus => crate::sepa_status::SepaStatusJob,
    /// Queues the first job of intake rows the partner's application inserted directly.
    IntakeSweep => crate::intake_sweep::IntakeSweepJob,
    /// Compares P100's balances with the ledger and records discrepancies.
    Reconcile => crate::reconcile::ReconcileJob,
    /// Writes a day's reconciliation report.
    Report => crate::report::ReportJob,
}

impl Kind {
    /// Looks a kind up by its queue name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

fn dedup_of<J: Job>(args: &serde_json::Value) -> Result<Option<String>, String> {
    let args = J::Args::deserialize(args).map_err(|e| e.to_string())?;
    J::dedup_key(&args)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noop::NoopArgs;

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

    /// Each registered job type names its own kind back: the list cannot pair a variant with
    /// another kind's job.
    #[test]
    fn every_kind_is_registered_with_its_own_job() {
        struct Check(Vec<(Kind, &'static str)>);
        impl KindVisitor for Check {
            fn visit<J: Job>(&mut self) {
                self.0.push((J::KIND, J::NAME));
            }
        }
        for kind in Kind::ALL {
            let mut check = Check(Vec::new());
            kind.visit(&mut check);
            assert_eq!(check.0, vec![(*kind, kind.name())]);
        }
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
