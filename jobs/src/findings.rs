//! Raising a discrepancy with its severity: the one way every job records a finding, so a
//! finding raised by `sepa_status` and the same one found by `reconcile` carry the same
//! figures and the same severity rule.

use ledger::PgConnection;
use ledger::discrepancies::{Finding, Raised};

/// Records `f` for `actor` (and the reconciliation `run`, if any); severity from the amount at
/// stake (the delta, else the amount), its currency, and the discrepancy's age.
pub async fn raise(
    conn: &mut PgConnection,
    f: &Finding,
    actor: &str,
    run: Option<i64>,
) -> Result<(i64, Raised), ledger::Error> {
    let at_stake = f.delta.or(f.amount).unwrap_or_default();
    let currency = f.currency.as_deref();
    ledger::discrepancies::raise(conn, f, actor, run, |age| {
        recon::severity::of(at_stake, currency, age)
            .as_str()
            .to_owned()
    })
    .await
}
