//! P100 balances as read, kept as the provider side of reconciliation.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgExecutor;

use crate::{Error, Owner};

/// One balance as P100 reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderBalance {
    /// Whose balance.
    pub owner: Owner,
    /// Lowercase currency code.
    pub currency: String,
    /// The amount, exact.
    pub amount: Decimal,
    /// P100's id of the balance object, if it sent one.
    pub provider_balance_id: Option<String>,
    /// When the balance was read: the reconciliation cut-off.
    pub read_at: DateTime<Utc>,
}

/// Stores a set of balances read together; returns how many rows were written.
pub async fn insert_provider_balances(
    db: impl PgExecutor<'_>,
    balances: &[ProviderBalance],
) -> Result<u64, Error> {
    if balances.is_empty() {
        return Ok(0);
    }
    let kinds: Vec<&str> = balances.iter().map(|b| b.owner.kind()).collect();
    let users: Vec<Option<&str>> = balances
        .iter()
        .map(|b| b.owner.external_user_id())
        .collect();
    let currencies: Vec<&str> = balances.iter().map(|b| b.currency.as_str()).collect();
    let amounts: Vec<Decimal> = balances.iter().map(|b| b.amount).collect();
    let ids: Vec<Option<&str>> = balances
        .iter()
        .map(|b| b.provider_balance_id.as_deref())
        .collect();
    let read_at: Vec<DateTime<Utc>> = balances.iter().map(|b| b.read_at).collect();
    let result = sqlx::query(
        r#"
        INSERT INTO provider_balance_snapshots
            (owner_kind, external_user_id, currency, amount, provider_balance_id, read_at)
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], $5::text[], $6::timestamptz[])
        "#,
    )
    .bind(&kinds)
    .bind(&users)
    .bind(&currencies)
    .bind(&amounts)
    .bind(&ids)
    .bind(&read_at)
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// The most recent balance of each currency of an owner.
pub async fn latest_provider_balances(
    db: impl PgExecutor<'_>,
    owner: &Owner,
) -> Result<Vec<ProviderBalance>, Error> {
    let rows: Vec<(String, Decimal, Option<String>, DateTime<Utc>)> = sqlx::query_as(
        r#"
        SELECT DISTINCT ON (currency) currency, amount, provider_balance_id, read_at
          FROM provider_balance_snapshots
         WHERE owner_kind = $1 AND external_user_id IS NOT DISTINCT FROM $2
         ORDER BY currency, read_at DESC, id DESC
        "#,
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(currency, amount, provider_balance_id, read_at)| ProviderBalance {
                owner: owner.clone(),
                currency,
                amount,
                provider_balance_id,
                read_at,
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn latest_balances_are_exact_and_per_currency(pool: sqlx::PgPool) {
        let t0 = DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
            .unwrap()
            .to_utc();
        let t1 = DateTime::parse_from_rfc3339("2026-11-26T01:00:00Z")
            .unwrap()
            .to_utc();
        let user = Owner::User("u-1".into());
        let row = |owner: &Owner, currency: &str, amount: &str, at| ProviderBalance {
            owner: owner.clone(),
            currency: currency.into(),
            amount: Decimal::from_str(amount).unwrap(),
            provider_balance_id: None,
            read_at: at,
        };
        let written = insert_provider_balances(
            &pool,
            &[
                row(&user, "eur", "10.00", t0),
                row(&user, "eur", "0.30", t1),
                row(&user, "btc", "0.00000001", t0),
                row(&Owner::Partner, "eur", "99.99", t1),
            ],
        )
        .await
        .unwrap();
        assert_eq!(written, 4);

        let latest = latest_provider_balances(&pool, &user).await.unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0].currency, "btc");
        assert_eq!(latest[0].amount.to_string(), "0.00000001");
        assert_eq!(latest[1].currency, "eur");
        assert_eq!(latest[1].amount.to_string(), "0.30");
        assert_eq!(latest[1].read_at, t1);
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn uppercase_currency_is_refused_by_the_database(pool: sqlx::PgPool) {
        let bad = ProviderBalance {
            owner: Owner::Partner,
            currency: "EUR".into(),
            amount: Decimal::ONE,
            provider_balance_id: None,
            read_at: Utc::now(),
        };
        assert!(insert_provider_balances(&pool, &[bad]).await.is_err());
    }
}
