//! Priority lanes inside the request budget (SPEC §9 "Priority"): when requests wait for a
//! slot, the most urgent lane goes first; within a lane, first come first served. Bulk work
//! takes every slot nothing more urgent wants.
//!
//! A request's lane is the more urgent of its endpoint's own lane and the lane of the task that
//! makes it ([`Lane::scope`]): an exchange finalization's history read is as urgent as the
//! finalization, a reconciliation's history sync is bulk.

use std::future::Future;

/// Lanes from most to least urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// Work with a deadline: an exchange lock expires in seconds.
    Deadline,
    /// Work a person or a counterparty waits for: KYC polls, SEPA transfer checks.
    Interactive,
    /// Reconciliation's balance reads.
    Reconcile,
    /// History sync.
    Bulk,
}

impl Lane {
    /// Every lane, most urgent first.
    pub const ALL: [Lane; 4] = [
        Lane::Deadline,
        Lane::Interactive,
        Lane::Reconcile,
        Lane::Bulk,
    ];

    /// Stable name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Deadline => "deadline",
            Lane::Interactive => "interactive",
            Lane::Reconcile => "reconcile",
            Lane::Bulk => "bulk",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Runs `f` with every request it makes in this lane at least.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        TASK_LANE.scope(self, f).await
    }

    /// The lane of a request to an endpoint whose own lane is `endpoint`, made from here.
    pub(crate) fn current(endpoint: Lane) -> Lane {
        TASK_LANE
            .try_with(|task| endpoint.min(*task))
            .unwrap_or(endpoint)
    }
}

tokio::task_local! {
    static TASK_LANE: Lane;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_more_urgent_of_the_endpoints_and_the_tasks_lane_applies() {
        assert_eq!(Lane::current(Lane::Bulk), Lane::Bulk);
        let inside = Lane::Deadline
            .scope(async { (Lane::current(Lane::Bulk), Lane::current(Lane::Interactive)) })
            .await;
        assert_eq!(inside, (Lane::Deadline, Lane::Deadline));
        let reconcile = Lane::Bulk
            .scope(async { Lane::current(Lane::Reconcile) })
            .await;
        assert_eq!(reconcile, Lane::Reconcile);
    }
}
