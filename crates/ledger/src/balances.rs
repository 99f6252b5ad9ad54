//! Balances: at any past instant, current, and the self-audit.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgExecutor;

use crate::accounts::AccountRef;
use crate::{Error, Owner};

/// An owner's balance in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// Lowercase currency.
    pub currency: String,
    /// Sum of the entries.
    pub amount: Decimal,
}

/// The balance of one account from its entries effective at or before `at`.
pub async fn balance_at(
    db: impl PgExecutor<'_>,
    account: &AccountRef,
    at: DateTime<Utc>,
) -> Result<Decimal, Error> {
    let sum: Option<Decimal> = sqlx::query_scalar(
        r#"
        SELECT sum(e.amount) FROM ledger_entries e
          JOIN ledger_accounts a ON a.id = e.account_id
         WHERE a.owner_kind = $1 AND a.external_user_id IS NOT DISTINCT FROM $2 AND a.currency = $3
           AND e.effective_at <= $4
        "#,
    )
    .bind(account.kind.as_str())
    .bind(&account.external_user_id)
    .bind(&account.currency)
    .bind(at)
    .fetch_one(db)
    .await?;
    Ok(sum.unwrap_or_default())
}

/// The maintained current balances of an owner, per currency.
pub async fn current(db: impl PgExecutor<'_>, owner: &Owner) -> Result<Vec<Balance>, Error> {
    let rows: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT currency, balance FROM ledger_accounts WHERE owner_kind = $1 AND external_user_id IS NOT DISTINCT FROM $2 ORDER BY currency",
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(currency, amount)| Balance { currency, amount })
        .collect())
}

/// A broken ledger invariant found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A posting's entries do not sum to zero in a currency.
    Unbalanced {
        /// The posting.
        posting_id: i64,
        /// The currency.
        currency: String,
        /// What they sum to.
        sum: Decimal,
    },
    /// An account's maintained balance differs from the sum of its entries.
    BalanceDrift {
        /// The account.
        account_id: i64,
        /// Maintained balance.
        balance: Decimal,
        /// Sum of entries.
        entries: Decimal,
    },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Unbalanced {
                posting_id,
                currency,
                sum,
            } => {
                write!(
                    f,
                    "posting {posting_id} does not balance in {currency}: entries sum to {sum}"
                )
            }
            Violation::BalanceDrift {
                account_id,
                balance,
                entries,
            } => {
                write!(
                    f,
                    "account {account_id} holds {balance} but its entries sum to {entries}"
                )
            }
        }
    }
}

/// The self-audit: every posting balanced, every maintained balance equal to its entries.
/// Returns (postings checked, accounts checked, violations).
pub async fn verify(pool: &sqlx::PgPool) -> Result<(i64, i64, Vec<Violation>), Error> {
    let unbalanced: Vec<(i64, String, Decimal)> = sqlx::query_as(
        "SELECT posting_id, currency, sum(amount) FROM ledger_entries GROUP BY posting_id, currency HAVING sum(amount) <> 0 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let drift: Vec<(i64, Decimal, Decimal)> = sqlx::query_as(
        r#"
        SELECT a.id, a.balance, COALESCE(s.total, 0)
          FROM ledger_accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger_entries GROUP BY account_id) s ON s.account_id = a.id
         WHERE a.balance <> COALESCE(s.total, 0)
         ORDER BY a.id
        "#,
    )
    .fetch_all(pool)
    .await?;
    let postings: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
        .fetch_one(pool)
        .await?;
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_accounts")
        .fetch_one(pool)
        .await?;
    let mut violations: Vec<Violation> = unbalanced
        .into_iter()
        .map(|(posting_id, currency, sum)| Violation::Unbalanced {
            posting_id,
            currency,
            sum,
        })
        .collect();
    violations.extend(drift.into_iter().map(|(account_id, balance, entries)| {
        Violation::BalanceDrift {
            account_id,
            balance,
            entries,
        }
    }));
    Ok((postings, accounts, violations))
}
