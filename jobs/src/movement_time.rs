//! P100's time of a movement that a detail endpoint reported settled (A37, SPEC §5.1).
//!
//! SEPA details carry no completion time and exchange details only `createdAt`, yet a posting
//! must be dated when P100's balance took the movement, or a balance read between the two
//! instants shows a false mismatch. P100's history row of the movement carries that time (the
//! `updatedAt` of the version that completed it, A23), so before posting, the job reads the
//! owner's history narrowly: rows updated since it last saw the movement unsettled, less a
//! margin for the two clocks. When the row is not there (history lags, or P100 never shows it)
//! or the history cannot be read, the time the job saw it settled is used: an upper bound, and
//! the posting says which it is.

use std::time::Duration;

use chrono::{DateTime, Utc};
use p100::enums::{TransactionStatus, TransactionType};
use p100::model::Transaction;
use p100::{HistoryQuery, Scope};

use crate::in_run_retry::{p100_transient, retrying};

/// Allowance for P100's clock running behind ours.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(300);
/// History pages read at most (100 rows each): the window is minutes, not days.
pub const MAX_PAGES: u32 = 5;

/// Where a posting's `effective_at` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `updatedAt` of P100's history row of the movement.
    History,
    /// The time this job saw the movement settled (P100's history did not show it).
    Observed,
}

impl Source {
    /// As recorded in job results and posting metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::History => "p100_history",
            Source::Observed => "observed",
        }
    }
}

/// The `COMPLETED` rows of `kind` whose `reference` is `reference`, updated since `since`
/// less [`CLOCK_MARGIN`]. Transient failures are retried within the run; what still fails is
/// returned, and the caller falls back to its own observation.
pub async fn completed_rows(
    client: &p100::Client,
    scope: &Scope,
    kind: TransactionType,
    reference: &str,
    since: DateTime<Utc>,
) -> Result<Vec<Transaction>, p100::Error> {
    let margin = chrono::Duration::from_std(CLOCK_MARGIN).unwrap_or_default();
    let query = HistoryQuery {
        from: Some(since - margin),
        ..HistoryQuery::default()
    };
    let mut found = Vec::new();
    for page_no in 1..=MAX_PAGES {
        let (page, _) = retrying(p100_transient, || {
            client.transactions_page(scope, &query, page_no)
        })
        .await;
        let page = page?;
        found.extend(
            page.transactions
                .iter()
                .filter(|t| {
                    t.kind == kind
                        && t.status == TransactionStatus::Completed
                        && t.reference.as_deref() == Some(reference)
                })
                .cloned(),
        );
        if page.is_last(page_no, query.size) {
            break;
        }
    }
    Ok(found)
}

/// The time of the first row `pick` accepts, or `observed` when there is none.
pub fn effective_at(
    rows: &[Transaction],
    pick: impl Fn(&Transaction) -> bool,
    observed: DateTime<Utc>,
) -> (DateTime<Utc>, Source) {
    rows.iter()
        .filter(|t| pick(t))
        .map(|t| t.updated_at)
        .min()
        .map_or((observed, Source::Observed), |at| (at, Source::History))
}
