//! What a handler tells the queue about one run.
//!
//! apalis's persistence layer turns handler *errors* into strings, so business outcomes travel
//! as the handler's `Ok` value. An `Err` (including a timeout or a caught panic) counts as a
//! retryable failure; an apalis `AbortError` counts as permanent.

use std::time::Duration;

use apalis_core::backend::codec::Codec;
use serde::{Deserialize, Serialize};

/// The result of one run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Finished; the value is kept for `jobs show`.
    Done(serde_json::Value),
    /// Failed; spend the attempt and retry after `after` (or the kind's backoff), or go dead
    /// when attempts are exhausted.
    Retry {
        /// Why, for the job's error history.
        reason: String,
        /// Override of the backoff delay.
        after: Option<Duration>,
    },
    /// Failed for good.
    Dead {
        /// Why.
        reason: String,
    },
    /// Not now (P100 rate limit): run again after `after` without spending the attempt.
    Defer {
        /// Why.
        reason: String,
        /// How long to wait.
        after: Duration,
    },
    /// Done for now; run the same job again after `after` with a fresh attempt budget (a
    /// polling job's next poll).
    Snooze {
        /// Result of this run.
        result: serde_json::Value,
        /// Time to the next run.
        after: Duration,
    },
}

impl Outcome {
    /// `Done` with no result.
    pub fn done() -> Outcome {
        Outcome::Done(serde_json::Value::Null)
    }

    /// A retryable failure with the kind's backoff.
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry {
            reason: reason.into(),
            after: None,
        }
    }

    /// A permanent failure.
    pub fn dead(reason: impl Into<String>) -> Outcome {
        Outcome::Dead {
            reason: reason.into(),
        }
    }

    /// Stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done(_) => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Defer { .. } => "defer",
            Outcome::Snooze { .. } => "snooze",
        }
    }
}

/// Identity codec: lets apalis's persistence layer hand the handler's `Outcome` to the
/// backend unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutcomeCodec;

/// Never produced; the codec cannot fail.
#[derive(Debug, thiserror::Error)]
#[error("outcome codec cannot fail")]
pub struct OutcomeCodecError;

impl Codec<Outcome> for OutcomeCodec {
    type Error = OutcomeCodecError;
    type Compact = Outcome;
    fn encode(&self, v: &Outcome) -> Result<Outcome, Self::Error> {
        Ok(v.clone())
    }
    fn decode(&self, v: &Outcome) -> Result<Outcome, Self::Error> {
        Ok(v.clone())
    }
}
