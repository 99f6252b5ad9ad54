//! Every P100 path the project calls, in one place.
//!
//! Several of these are assumptions (SPEC §8, `docs/p100-assumptions.md`): when P100 confirms
//! or corrects them, this is the file that changes.

use crate::lane::Lane;

/// Which history or balance owner a call is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The partner's own balances.
    Partner,
    /// One user, by the partner's `externalUserId`.
    User(String),
}

impl Scope {
    /// `partner` or the user id, for logs.
    pub fn label(&self) -> &str {
        match self {
            Scope::Partner => "partner",
            Scope::User(id) => id,
        }
    }
}

/// A path as segments; the client percent-encodes each one, so ids are opaque strings.
pub(crate) struct PathSpec {
    /// Metric/log label, e.g. `kyc_status`.
    pub endpoint: &'static str,
    pub segments: Vec<String>,
    /// The endpoint's own priority (a task may raise it, [`Lane::scope`]).
    pub lane: Lane,
}

fn spec(endpoint: &'static str, lane: Lane, segments: &[&str]) -> PathSpec {
    PathSpec {
        endpoint,
        segments: segments.iter().map(|s| (*s).to_owned()).collect(),
        lane,
    }
}

pub(crate) fn kyc_status(external_user_id: &str) -> PathSpec {
    spec(
        "kyc_status",
        Lane::Interactive,
        &["v1", "kyc", "status", external_user_id],
    )
}

/// The FAQ's path. Older pages write `/v1/user/{externalUserId}/balances`; see the assumptions.
pub(crate) fn balances(scope: &Scope) -> PathSpec {
    match scope {
        Scope::Partner => spec(
            "partner_balances",
            Lane::Reconcile,
            &["v1", "partner", "balances"],
        ),
        Scope::User(id) => spec(
            "user_balances",
            Lane::Reconcile,
            &["v1", "user", "balances", id],
        ),
    }
}

/// Assumed (SPEC §8).
pub(crate) fn transactions(scope: &Scope) -> PathSpec {
    match scope {
        Scope::Partner => spec(
            "partner_transactions",
            Lane::Bulk,
            &["v1", "partner", "transactions"],
        ),
        Scope::User(id) => spec(
            "user_transactions",
            Lane::Bulk,
            &["v1", "user", "transactions", id],
        ),
    }
}

/// Assumed (SPEC §8).
pub(crate) fn exchange_lock() -> PathSpec {
    spec(
        "exchange_lock",
        Lane::Deadline,
        &["v1", "partner", "exchange", "lock"],
    )
}

/// Documented by the curl example of Create and Finalize an Exchange.
pub(crate) fn exchange_create() -> PathSpec {
    spec(
        "exchange_create",
        Lane::Deadline,
        &["v1", "partner", "exchange"],
    )
}

/// Assumed (SPEC §8).
pub(crate) fn exchange_details(exchange_id: &str) -> PathSpec {
    spec(
        "exchange_details",
        Lane::Deadline,
        &["v1", "partner", "exchange", exchange_id],
    )
}

pub(crate) fn sepa_transfer(transfer_id: &str) -> PathSpec {
    spec(
        "sepa_transfer_details",
        Lane::Interactive,
        &["v1", "sepa-transfer", "details", transfer_id],
    )
}
