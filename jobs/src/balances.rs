//! Reading P100 balances into the ledger's provider-side snapshots.

use chrono::Utc;
use ledger::Owner;
use ledger::snapshots::ProviderBalance;

/// Reads the balances of one owner from P100 and stores them; returns what was stored.
///
/// The read time is taken when P100's answer arrives: it is the cut-off reconciliation uses.
pub async fn snapshot_balances(
    client: &p100::Client,
    pool: &ledger::PgPool,
    owner: &Owner,
) -> Result<Vec<ProviderBalance>, SnapshotError> {
    let balances = client.balances(&scope_of(owner)).await?;
    let rows = to_snapshots(owner, &balances, Utc::now());
    ledger::snapshots::insert_provider_balances(pool, &rows).await?;
    Ok(rows)
}

/// P100's balances of `owner`, read at `read_at`, as the ledger stores them.
pub fn to_snapshots(
    owner: &Owner,
    balances: &p100::model::Balances,
    read_at: chrono::DateTime<Utc>,
) -> Vec<ProviderBalance> {
    balances
        .all()
        .map(|b| ProviderBalance {
            owner: owner.clone(),
            currency: b.name.as_str().to_owned(),
            amount: b.amount,
            provider_balance_id: Some(b.id.clone()),
            read_at,
        })
        .collect()
}

/// The P100 scope that holds an owner's balances and history.
pub fn scope_of(owner: &Owner) -> p100::Scope {
    match owner {
        Owner::Partner => p100::Scope::Partner,
        Owner::User(id) => p100::Scope::User(id.clone()),
    }
}

/// Reading or storing balances failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// P100 call failed.
    #[error(transparent)]
    P100(#[from] p100::Error),
    /// Database write failed.
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
}
