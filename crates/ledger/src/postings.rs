//! Postings: balanced sets of entries, written once under an idempotency key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::Error;
use crate::accounts::{self, AccountRef};

/// Where a posting comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A P100 transaction-history row.
    ProviderTransaction,
    /// An operation of ours (exchange, SEPA hold, …).
    LocalOperation,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::ProviderTransaction => "p100_transaction",
            Source::LocalOperation => "local_operation",
        }
    }
}

/// One line of a posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The account.
    pub account: AccountRef,
    /// Signed amount, never zero.
    pub amount: Decimal,
}

/// A posting that is known to balance: build it with [`NewPosting::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewPosting {
    key: String,
    source: Source,
    provider_tx_id: Option<String>,
    provider_status: Option<String>,
    description: String,
    effective_at: DateTime<Utc>,
    entries: Vec<NewEntry>,
}

/// A posting that would not balance, or is empty.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("posting {key} is invalid: {reason}")]
pub struct Unbalanced {
    /// The posting's idempotency key.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// Facts about a posting besides its entries.
#[derive(Debug, Clone)]
pub struct PostingMeta {
    /// Unique: the same fact is never posted twice.
    pub key: String,
    /// Where it comes from.
    pub source: Source,
    /// P100's transaction id, if any.
    pub provider_tx_id: Option<String>,
    /// P100's status that caused it, if any.
    pub provider_status: Option<String>,
    /// Human-readable description.
    pub description: String,
    /// P100's time of the movement.
    pub effective_at: DateTime<Utc>,
}

impl NewPosting {
    /// Validates that entries are non-zero and sum to zero per currency. Zero entries are
    /// dropped (a zero fee is not a movement).
    pub fn new(meta: PostingMeta, entries: Vec<NewEntry>) -> Result<NewPosting, Unbalanced> {
        let entries: Vec<NewEntry> = entries
            .into_iter()
            .filter(|e| !e.amount.is_zero())
            .collect();
        let fail = |reason: String| Unbalanced {
            key: meta.key.clone(),
            reason,
        };
        if entries.is_empty() {
            return Err(fail("no non-zero entries".into()));
        }
        let mut sums: BTreeMap<&str, Decimal> = BTreeMap::new();
        for e in &entries {
            *sums.entry(e.account.currency.as_str()).or_default() += e.amount;
        }
        if let Some((currency, sum)) = sums.iter().find(|(_, s)| !s.is_zero()) {
            return Err(fail(format!("entries in {currency} sum to {sum}")));
        }
        Ok(NewPosting {
            key: meta.key,
            source: meta.source,
            provider_tx_id: meta.provider_tx_id,
            provider_status: meta.provider_status,
            description: meta.description,
            effective_at: meta.effective_at,
            entries,
        })
    }

    /// The idempotency key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The entries.
    pub fn entries(&self) -> &[NewEntry] {
        &self.entries
    }
}

/// Whether any of `keys` is already posted.
pub async fn any_posted(conn: &mut PgConnection, keys: &[String]) -> Result<bool, Error> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledger_postings WHERE idempotency_key = ANY($1))",
    )
    .bind(keys)
    .fetch_one(&mut *conn)
    .await?)
}

/// Writes postings whose keys are new; returns how many were written. The caller holds the
/// write lock of the owner whose accounts the postings touch ([`crate::owner_lock`]), taken
/// first in its transaction. Postings already
/// present (same key) are skipped, so replaying is a no-op.
pub async fn post(conn: &mut PgConnection, postings: &[NewPosting]) -> Result<u64, Error> {
    if postings.is_empty() {
        return Ok(0);
    }
    let refs: Vec<AccountRef> = postings
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.account.clone()))
        .collect();
    let account_ids = accounts::ensure(conn, &refs).await?;

    let keys: Vec<&str> = postings.iter().map(|p| p.key.as_str()).collect();
    let sources: Vec<&str> = postings.iter().map(|p| p.source.as_str()).collect();
    let tx_ids: Vec<Option<&str>> = postings
        .iter()
        .map(|p| p.provider_tx_id.as_deref())
        .collect();
    let statuses: Vec<Option<&str>> = postings
        .iter()
        .map(|p| p.provider_status.as_deref())
        .collect();
    let descriptions: Vec<&str> = postings.iter().map(|p| p.description.as_str()).collect();
    let effective: Vec<DateTime<Utc>> = postings.iter().map(|p| p.effective_at).collect();
    let inserted: Vec<(i64, String)> = sqlx::query_as(
        r#"
        INSERT INTO ledger_postings (idempotency_key, source, provider_tx_id, provider_status, description, effective_at)
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, idempotency_key
        "#,
    )
    .bind(&keys)
    .bind(&sources)
    .bind(&tx_ids)
    .bind(&statuses)
    .bind(&descriptions)
    .bind(&effective)
    .fetch_all(&mut *conn)
    .await?;
    if inserted.is_empty() {
        return Ok(0);
    }
    let by_key: BTreeMap<&str, &NewPosting> =
        postings.iter().map(|p| (p.key.as_str(), p)).collect();
    let (mut posting_ids, mut account, mut currency, mut amount, mut at) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (id, key) in &inserted {
        let Some(posting) = by_key.get(key.as_str()) else {
            continue;
        };
        for e in &posting.entries {
            posting_ids.push(*id);
            account.push(account_ids[&e.account]);
            currency.push(e.account.currency.as_str());
            amount.push(e.amount);
            at.push(posting.effective_at);
        }
    }
    sqlx::query(
        r#"
        INSERT INTO ledger_entries (posting_id, account_id, currency, amount, effective_at)
        SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::numeric[], $5::timestamptz[])
        "#,
    )
    .bind(&posting_ids)
    .bind(&account)
    .bind(&currency)
    .bind(&amount)
    .bind(&at)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.len() as u64)
}

/// Reverses postings (the caller holds the owner's write lock, as for [`post`]): for each
/// (original key, reversal key, effective time), a new posting
/// with the original's entries negated, unless the reversal key exists already. Returns how
/// many were written. An original that does not exist is an error, not a no-op.
pub async fn reverse(
    conn: &mut PgConnection,
    reversals: &[(String, String, DateTime<Utc>)],
    description: &str,
) -> Result<u64, Error> {
    if reversals.is_empty() {
        return Ok(0);
    }
    let originals: Vec<&str> = reversals.iter().map(|(o, _, _)| o.as_str()).collect();
    let keys: Vec<&str> = reversals.iter().map(|(_, r, _)| r.as_str()).collect();
    // Reversing a posting that does not exist would record nothing and let the caller believe
    // the money was taken back.
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT u.key FROM UNNEST($1::text[]) AS u(key)
          WHERE NOT EXISTS (SELECT 1 FROM ledger_postings p WHERE p.idempotency_key = u.key)",
    )
    .bind(&originals)
    .fetch_all(&mut *conn)
    .await?;
    if !missing.is_empty() {
        return Err(Error::Corrupt(format!(
            "cannot reverse postings that do not exist: {missing:?}"
        )));
    }
    let times: Vec<DateTime<Utc>> = reversals.iter().map(|(_, _, at)| *at).collect();
    let inserted: Vec<(i64, i64)> = sqlx::query_as(
        r#"
        INSERT INTO ledger_postings (idempotency_key, source, provider_tx_id, provider_status, description, reverses, effective_at)
        SELECT u.key, p.source, p.provider_tx_id, 'REVERSED', $3, p.id, u.at
          FROM UNNEST($1::text[], $2::text[], $4::timestamptz[]) AS u(original, key, at)
          JOIN ledger_postings p ON p.idempotency_key = u.original
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, reverses
        "#,
    )
    .bind(&originals)
    .bind(&keys)
    .bind(description)
    .bind(&times)
    .fetch_all(&mut *conn)
    .await?;
    if inserted.is_empty() {
        return Ok(0);
    }
    let new_ids: Vec<i64> = inserted.iter().map(|(id, _)| *id).collect();
    let original_ids: Vec<i64> = inserted.iter().map(|(_, orig)| *orig).collect();
    sqlx::query(
        r#"
        INSERT INTO ledger_entries (posting_id, account_id, currency, amount, effective_at)
        SELECT u.new_id, e.account_id, e.currency, -e.amount, r.effective_at
          FROM UNNEST($1::bigint[], $2::bigint[]) AS u(new_id, original_id)
          JOIN ledger_entries e ON e.posting_id = u.original_id
          JOIN ledger_postings r ON r.id = u.new_id
        "#,
    )
    .bind(&new_ids)
    .bind(&original_ids)
    .execute(&mut *conn)
    .await?;
    Ok(inserted.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Owner;
    use crate::accounts::AccountKind;
    use std::str::FromStr;

    fn meta(key: &str) -> PostingMeta {
        PostingMeta {
            key: key.into(),
            source: Source::ProviderTransaction,
            provider_tx_id: Some(key.into()),
            provider_status: Some("COMPLETED".into()),
            description: "test".into(),
            effective_at: Utc::now(),
        }
    }

    fn e(account: AccountRef, amount: &str) -> NewEntry {
        NewEntry {
            account,
            amount: Decimal::from_str(amount).unwrap(),
        }
    }

    #[test]
    fn a_posting_must_balance_per_currency() {
        let user = Owner::User("u".into());
        let ok = NewPosting::new(
            meta("a"),
            vec![
                e(AccountRef::of(&user, "eur"), "0.1"),
                e(AccountRef::of(&user, "eur"), "0.2"),
                e(AccountRef::counter(AccountKind::External, "eur"), "-0.3"),
                e(AccountRef::counter(AccountKind::P100Fees, "eur"), "0"),
            ],
        )
        .unwrap();
        assert_eq!(ok.entries().len(), 3, "zero entries are dropped");
        let err = NewPosting::new(
            meta("b"),
            vec![
                e(AccountRef::of(&user, "eur"), "1"),
                e(AccountRef::counter(AccountKind::External, "btc"), "-1"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.reason, "entries in btc sum to -1", "{err}");
        assert!(NewPosting::new(meta("c"), vec![]).is_err());
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn the_database_refuses_unbalanced_entries_and_changes_to_history(pool: sqlx::PgPool) {
        let mut conn = pool.acquire().await.unwrap();
        let user = Owner::User("u".into());
        let posting = NewPosting::new(
            meta("k1"),
            vec![
                e(AccountRef::of(&user, "eur"), "10.00"),
                e(AccountRef::counter(AccountKind::External, "eur"), "-10.00"),
            ],
        )
        .unwrap();
        assert_eq!(
            post(&mut conn, std::slice::from_ref(&posting))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            post(&mut conn, &[posting]).await.unwrap(),
            0,
            "same key, no second posting"
        );

        // Bypass the Rust check: the database refuses the statement.
        let mut tx = pool.begin().await.unwrap();
        let pid: i64 = sqlx::query_scalar("INSERT INTO ledger_postings (idempotency_key, source, description, effective_at) VALUES ('bad', 'local_operation', 'x', now()) RETURNING id").fetch_one(&mut *tx).await.unwrap();
        let account: i64 =
            sqlx::query_scalar("SELECT id FROM ledger_accounts WHERE owner_kind = 'user'")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        let err = sqlx::query("INSERT INTO ledger_entries (posting_id, account_id, currency, amount, effective_at) VALUES ($1, $2, 'eur', 5, now())").bind(pid).bind(account).execute(&mut *tx).await.unwrap_err().to_string();
        assert!(err.contains("does not balance"), "{err}");
        drop(tx);

        let err = sqlx::query("UPDATE ledger_entries SET amount = 1")
            .execute(&pool)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("append-only"), "{err}");
        let err = sqlx::query("DELETE FROM ledger_postings")
            .execute(&pool)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("append-only"), "{err}");
        let err = sqlx::query("INSERT INTO ledger_entries (posting_id, account_id, currency, amount, effective_at) SELECT id, $1, 'btc', 1, now() FROM ledger_postings LIMIT 1").bind(account).execute(&pool).await.unwrap_err().to_string();
        assert!(err.contains("does not match the currency"), "{err}");
        // No foreign key (it made every writer lock the shared counter-accounts), yet an
        // entry for a missing account is refused, and accounts are never removed.
        let err = sqlx::query("INSERT INTO ledger_entries (posting_id, account_id, currency, amount, effective_at) SELECT id, 999999, 'eur', 1, now() FROM ledger_postings LIMIT 1").execute(&pool).await.unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let err = sqlx::query("DELETE FROM ledger_accounts")
            .execute(&pool)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("never removed"), "{err}");
        let err = sqlx::query("UPDATE ledger_accounts SET currency = 'btc'")
            .execute(&pool)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("never re-keyed"), "{err}");
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_reversal_negates_the_original_once(pool: sqlx::PgPool) {
        let mut conn = pool.acquire().await.unwrap();
        let user = Owner::User("u".into());
        let posting = NewPosting::new(
            meta("p"),
            vec![
                e(AccountRef::of(&user, "eur"), "-5.00"),
                e(AccountRef::counter(AccountKind::External, "eur"), "4.00"),
                e(AccountRef::counter(AccountKind::P100Fees, "eur"), "1.00"),
            ],
        )
        .unwrap();
        post(&mut conn, &[posting]).await.unwrap();
        let pair = [("p".to_owned(), "p:reversal".to_owned(), Utc::now())];
        assert_eq!(reverse(&mut conn, &pair, "failed").await.unwrap(), 1);
        assert_eq!(reverse(&mut conn, &pair, "failed").await.unwrap(), 0);
        // Every account's entries sum to zero again; the owner's maintained balance too
        // (counter-accounts carry none: they are nobody's hot row).
        let balances: Vec<(String, Option<Decimal>, Decimal)> = sqlx::query_as(
            "SELECT a.owner_kind, a.balance, COALESCE((SELECT sum(amount) FROM ledger_entries e WHERE e.account_id = a.id), 0)
               FROM ledger_accounts a ORDER BY owner_kind",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(
            balances
                .iter()
                .all(|(kind, maintained, entries)| entries.is_zero()
                    && maintained.is_some() == (kind == "user")
                    && maintained.unwrap_or_default().is_zero()),
            "{balances:?}"
        );
    }
}
