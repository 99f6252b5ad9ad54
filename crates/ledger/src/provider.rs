//! P100's transactions as observed, their change history, and the sync cursors.
//!
//! Plain data only: the job layer converts P100's JSON into [`ObservedTx`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor};

use crate::{Error, Owner};

/// One transaction as P100 reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedTx {
    /// P100's id.
    pub provider_tx_id: String,
    /// `type`, verbatim.
    pub kind: String,
    /// `status`, verbatim.
    pub status: String,
    /// Lowercase currency.
    pub currency: String,
    /// Signed movement.
    pub amount: Decimal,
    /// Fee on top (0 when absent).
    pub fee: Decimal,
    /// `reference`.
    pub reference: Option<String>,
    /// `exchangeId`.
    pub exchange_id: Option<String>,
    /// `createdAt`.
    pub created_at: DateTime<Utc>,
    /// `updatedAt`.
    pub updated_at: DateTime<Utc>,
    /// The row as received.
    pub payload: serde_json::Value,
    /// Hash of the payload's canonical form.
    pub payload_hash: String,
}

/// What the ledger holds for a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerState {
    /// Nothing posted.
    None,
    /// Its posting is in the ledger.
    Posted,
    /// Posted, then reversed.
    Reversed,
}

impl LedgerState {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerState::None => "none",
            LedgerState::Posted => "posted",
            LedgerState::Reversed => "reversed",
        }
    }

    fn parse(text: &str) -> Result<LedgerState, Error> {
        match text {
            "none" => Ok(LedgerState::None),
            "posted" => Ok(LedgerState::Posted),
            "reversed" => Ok(LedgerState::Reversed),
            other => Err(Error::Corrupt(format!("unknown ledger_state {other:?}"))),
        }
    }
}

/// What the ledger holds for a history row: the posting that stands for it, and the figures
/// that posting holds (in the row's terms), so a reversal undoes exactly that and a
/// correction of amount, fee or currency is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The posting's idempotency key.
    pub key: String,
    /// Signed movement the posting holds.
    pub amount: Decimal,
    /// Fee the posting holds.
    pub fee: Decimal,
    /// Its currency.
    pub currency: String,
}

/// The stored version of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTx {
    /// Status, verbatim.
    pub status: String,
    /// `updatedAt` of the stored version.
    pub updated_at: DateTime<Utc>,
    /// Payload hash of the stored version.
    pub payload_hash: String,
    /// What the ledger holds.
    pub ledger_state: LedgerState,
    /// Flags raised so far.
    pub flags: Vec<String>,
    /// The posting that stands (or, once reversed, stood) for this row.
    pub posted: Option<Posted>,
}

#[derive(sqlx::FromRow)]
struct StoredRow {
    provider_tx_id: String,
    status: String,
    updated_at: DateTime<Utc>,
    payload_hash: String,
    ledger_state: String,
    flags: Vec<String>,
    posting_key: Option<String>,
    posted_amount: Option<Decimal>,
    posted_fee: Option<Decimal>,
    posted_currency: Option<String>,
}

/// Loads the stored versions of some transactions of an owner, locking them for the caller's
/// transaction.
pub async fn load_for_update(
    conn: &mut PgConnection,
    owner: &Owner,
    ids: &[&str],
) -> Result<HashMap<String, StoredTx>, Error> {
    let rows: Vec<StoredRow> = sqlx::query_as(
        r#"
        SELECT provider_tx_id, status, updated_at, payload_hash, ledger_state, flags,
               posting_key, posted_amount, posted_fee, posted_currency
          FROM provider_transactions
         WHERE owner_kind = $1 AND COALESCE(external_user_id, '') = COALESCE($2, '') AND provider_tx_id = ANY($3)
         FOR UPDATE
        "#,
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let posted = match (r.posting_key, r.posted_amount, r.posted_currency) {
                (Some(key), Some(amount), Some(currency)) => Some(Posted {
                    key,
                    amount,
                    fee: r.posted_fee.unwrap_or_default(),
                    currency,
                }),
                _ => None,
            };
            Ok((
                r.provider_tx_id,
                StoredTx {
                    status: r.status,
                    updated_at: r.updated_at,
                    payload_hash: r.payload_hash,
                    ledger_state: LedgerState::parse(&r.ledger_state)?,
                    flags: r.flags,
                    posted,
                },
            ))
        })
        .collect()
}

/// A change to store: the new version of a transaction and why it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TxChange {
    /// The version to store.
    pub tx: ObservedTx,
    /// `new`, `status_change` or `payload_change`.
    pub change: &'static str,
    /// Ledger state after this page's postings.
    pub ledger_state: LedgerState,
    /// Flags to keep.
    pub flags: Vec<String>,
    /// The posting standing (or that stood) for the row after this change.
    pub posted: Option<Posted>,
}

/// Upserts changed transactions and records each change once in the event history. A stored
/// version is only ever replaced by one at least as new (by `updatedAt`): an older one is an
/// error that rolls the caller's transaction back, never a silent overwrite.
pub async fn store_changes(
    conn: &mut PgConnection,
    owner: &Owner,
    changes: &[TxChange],
) -> Result<(), Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let n = changes.len();
    let mut ids = Vec::with_capacity(n);
    let (mut kinds, mut statuses, mut currencies, mut amounts, mut fees) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut refs, mut exchange_ids, mut created, mut updated, mut payloads, mut hashes) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut states, mut flags, mut change_kinds) = (vec![], vec![], vec![]);
    let (mut posting_keys, mut posted_amounts, mut posted_fees, mut posted_currencies) =
        (vec![], vec![], vec![], vec![]);
    for c in changes {
        posting_keys.push(c.posted.as_ref().map(|p| p.key.as_str()));
        posted_amounts.push(c.posted.as_ref().map(|p| p.amount));
        posted_fees.push(c.posted.as_ref().map(|p| p.fee));
        posted_currencies.push(c.posted.as_ref().map(|p| p.currency.as_str()));
        let t = &c.tx;
        ids.push(t.provider_tx_id.as_str());
        kinds.push(t.kind.as_str());
        statuses.push(t.status.as_str());
        currencies.push(t.currency.as_str());
        amounts.push(t.amount);
        fees.push(t.fee);
        refs.push(t.reference.as_deref());
        exchange_ids.push(t.exchange_id.as_deref());
        created.push(t.created_at);
        updated.push(t.updated_at);
        payloads.push(&t.payload);
        hashes.push(t.payload_hash.as_str());
        states.push(c.ledger_state.as_str());
        flags.push(c.flags.join(","));
        change_kinds.push(c.change);
    }
    let stored: i64 = sqlx::query_scalar(
        r#"
        WITH up AS (
            INSERT INTO provider_transactions AS p
                (owner_kind, external_user_id, provider_tx_id, kind, status, currency, amount, fee, reference,
                 exchange_id, created_at, updated_at, payload, payload_hash, ledger_state, flags,
                 posting_key, posted_amount, posted_fee, posted_currency)
            SELECT $1, $2, u.id, u.kind, u.status, u.currency, u.amount, u.fee, u.ref, u.exid, u.created, u.updated,
                   u.payload, u.hash, u.state, COALESCE(string_to_array(NULLIF(u.flags, ''), ','), '{}'),
                   u.pkey, u.pamount, u.pfee, u.pcurrency
              FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::numeric[], $8::numeric[], $9::text[],
                          $10::text[], $11::timestamptz[], $12::timestamptz[], $13::jsonb[], $14::text[], $15::text[], $16::text[],
                          $18::text[], $19::numeric[], $20::numeric[], $21::text[])
                   AS u(id, kind, status, currency, amount, fee, ref, exid, created, updated, payload, hash, state, flags,
                        pkey, pamount, pfee, pcurrency)
            ON CONFLICT (provider_tx_id, owner_kind, (COALESCE(external_user_id, ''))) DO UPDATE SET
                kind = EXCLUDED.kind, status = EXCLUDED.status, currency = EXCLUDED.currency,
                amount = EXCLUDED.amount, fee = EXCLUDED.fee, reference = EXCLUDED.reference,
                exchange_id = EXCLUDED.exchange_id, created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at, payload = EXCLUDED.payload,
                payload_hash = EXCLUDED.payload_hash, ledger_state = EXCLUDED.ledger_state,
                flags = EXCLUDED.flags, posting_key = EXCLUDED.posting_key,
                posted_amount = EXCLUDED.posted_amount, posted_fee = EXCLUDED.posted_fee,
                posted_currency = EXCLUDED.posted_currency, last_seen_at = now()
            WHERE p.updated_at <= EXCLUDED.updated_at
            RETURNING p.id, p.provider_tx_id
        ), events AS (
            INSERT INTO provider_transaction_events (provider_transaction_id, change, status, payload_hash, payload, provider_updated_at)
            SELECT up.id, u.change, u.status, u.hash, u.payload, u.updated
              FROM up JOIN UNNEST($3::text[], $17::text[], $5::text[], $14::text[], $13::jsonb[], $12::timestamptz[])
                            AS u(id, change, status, hash, payload, updated) ON u.id = up.provider_tx_id
            ON CONFLICT (provider_transaction_id, payload_hash) DO NOTHING
        )
        SELECT count(*) FROM up
        "#,
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .bind(&ids)
    .bind(&kinds)
    .bind(&statuses)
    .bind(&currencies)
    .bind(&amounts)
    .bind(&fees)
    .bind(&refs)
    .bind(&exchange_ids)
    .bind(&created)
    .bind(&updated)
    .bind(&payloads)
    .bind(&hashes)
    .bind(&states)
    .bind(&flags)
    .bind(&change_kinds)
    .bind(&posting_keys)
    .bind(&posted_amounts)
    .bind(&posted_fees)
    .bind(&posted_currencies)
    .fetch_one(&mut *conn)
    .await?;
    if stored != n as i64 {
        return Err(Error::Corrupt(format!(
            "{owner}: {} of {n} transaction versions are older than the stored ones; a newer \
             version is never replaced by an older one (another writer of this owner?)",
            n as i64 - stored
        )));
    }
    Ok(())
}

/// Postings of local operations (an exchange's legs, a SEPA settlement) under `keys` that no
/// history row stands for yet, with the figures they hold in a row's terms: the movement
/// (owner entries plus fee), the fee, the currency. A history row of the same movement adopts
/// one of them instead of posting it again.
pub async fn adoptable_postings(
    conn: &mut PgConnection,
    keys: &[String],
) -> Result<HashMap<String, Posted>, Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, Decimal, Decimal, Option<String>)> = sqlx::query_as(
        r#"
        SELECT p.idempotency_key,
               COALESCE(sum(e.amount) FILTER (WHERE a.balance IS NOT NULL OR a.owner_kind = 'p100_fees'), 0),
               COALESCE(sum(e.amount) FILTER (WHERE a.owner_kind = 'p100_fees'), 0),
               min(a.currency) FILTER (WHERE a.balance IS NOT NULL)
          FROM ledger_postings p
          JOIN ledger_entries e ON e.posting_id = p.id
          JOIN ledger_accounts a ON a.id = e.account_id
         WHERE p.idempotency_key = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM ledger_postings r WHERE r.reverses = p.id)
           AND NOT EXISTS (SELECT 1 FROM provider_transactions t WHERE t.posting_key = p.idempotency_key)
         GROUP BY p.idempotency_key
        "#,
    )
    .bind(keys)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(key, amount, fee, currency)| {
            Some((
                key.clone(),
                Posted {
                    key,
                    amount,
                    fee,
                    currency: currency?,
                },
            ))
        })
        .collect())
}

/// Whether a history row of `owner` with this type and reference, moving money in the
/// direction of `debit`, already has its posting: a local operation then posts nothing.
pub async fn row_posted_for(
    db: impl PgExecutor<'_>,
    owner: &Owner,
    kind: &str,
    reference: &str,
    debit: bool,
) -> Result<bool, Error> {
    Ok(sqlx::query_scalar(
        r#"
        SELECT EXISTS (
            SELECT 1 FROM provider_transactions
             WHERE owner_kind = $1 AND COALESCE(external_user_id, '') = COALESCE($2, '')
               AND kind = $3 AND reference = $4 AND (amount < 0) = $5 AND ledger_state = 'posted')
        "#,
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .bind(kind)
    .bind(reference)
    .bind(debit)
    .fetch_one(db)
    .await?)
}

/// A history row that could not be decoded, kept as P100 sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct UndecodableRow {
    /// P100's id, when the row had a readable one.
    pub provider_tx_id: Option<String>,
    /// The row as received.
    pub payload: serde_json::Value,
    /// Hash of the payload's canonical form.
    pub payload_hash: String,
    /// Why it could not be decoded.
    pub error: String,
}

/// Keeps undecodable rows (once per distinct payload); returns how many were new.
pub async fn store_undecodable(
    conn: &mut PgConnection,
    owner: &Owner,
    rows: &[UndecodableRow],
) -> Result<u64, Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    // One row per distinct payload: an upsert may touch a row only once per statement.
    let mut seen = std::collections::HashSet::new();
    let rows: Vec<&UndecodableRow> = rows
        .iter()
        .filter(|r| seen.insert(r.payload_hash.as_str()))
        .collect();
    let ids: Vec<Option<&str>> = rows.iter().map(|r| r.provider_tx_id.as_deref()).collect();
    let payloads: Vec<&serde_json::Value> = rows.iter().map(|r| &r.payload).collect();
    let hashes: Vec<&str> = rows.iter().map(|r| r.payload_hash.as_str()).collect();
    let errors: Vec<&str> = rows.iter().map(|r| r.error.as_str()).collect();
    let new: i64 = sqlx::query_scalar(
        r#"
        WITH up AS (
            INSERT INTO provider_transactions_undecodable
                (owner_kind, external_user_id, provider_tx_id, payload, payload_hash, error)
            SELECT $1, $2, u.id, u.payload, u.hash, u.error
              FROM UNNEST($3::text[], $4::jsonb[], $5::text[], $6::text[]) AS u(id, payload, hash, error)
            ON CONFLICT (owner_kind, external_user_id, payload_hash) DO UPDATE SET last_seen_at = now()
            RETURNING (xmax = 0) AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted) FROM up
        "#,
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .bind(&ids)
    .bind(&payloads)
    .bind(&hashes)
    .bind(&errors)
    .fetch_one(&mut *conn)
    .await?;
    Ok(new as u64)
}

/// Marks transactions seen again without change.
pub async fn touch(conn: &mut PgConnection, owner: &Owner, ids: &[&str]) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE provider_transactions SET last_seen_at = now() WHERE owner_kind = $1 AND COALESCE(external_user_id, '') = COALESCE($2, '') AND provider_tx_id = ANY($3)",
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The latest `updatedAt` committed for an owner's history.
pub async fn cursor(
    db: impl PgExecutor<'_>,
    owner: &Owner,
) -> Result<Option<DateTime<Utc>>, Error> {
    let cursor: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT cursor_at FROM sync_cursors WHERE owner_kind = $1 AND COALESCE(external_user_id, '') = COALESCE($2, '')",
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .fetch_optional(db)
    .await?;
    Ok(cursor.flatten())
}

/// Where an owner's history stands, in P100's time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncPosition {
    /// The latest `updatedAt` committed (`None`: nothing read yet).
    pub cursor_at: Option<DateTime<Utc>>,
    /// The cursor when the last deep re-read (or whole-history read) finished (`None`: none
    /// recorded).
    pub deep_read_cursor_at: Option<DateTime<Utc>>,
}

/// The cursor and the last deep re-read of an owner's history.
pub async fn position(db: impl PgExecutor<'_>, owner: &Owner) -> Result<SyncPosition, Error> {
    type Row = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT cursor_at, deep_read_cursor_at FROM sync_cursors WHERE owner_kind = $1 AND COALESCE(external_user_id, '') = COALESCE($2, '')",
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .fetch_optional(db)
    .await?;
    Ok(
        row.map_or_else(SyncPosition::default, |(cursor_at, deep_read_cursor_at)| {
            SyncPosition {
                cursor_at,
                deep_read_cursor_at,
            }
        }),
    )
}

/// Rows of an owner's history whose latest version held here was updated within
/// `[from, to]` (both inclusive, like P100's history filter): what P100's `total` for the same
/// window should say when nothing is missing.
pub async fn rows_updated_between(
    db: impl PgExecutor<'_>,
    owner: &Owner,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64, Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM provider_transactions
          WHERE owner_kind = $1 AND COALESCE(external_user_id, '') = COALESCE($2, '')
            AND updated_at BETWEEN $3 AND $4",
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await?;
    Ok(n.max(0) as u64)
}

/// Records that an owner's history was read to the end now, even if it had no rows. With
/// `deep_read_to`, the read reached at least a day behind the cursor (or the whole history)
/// and read up to that `updatedAt`: the deep re-read is recorded there (never moved back).
pub async fn mark_synced(
    db: impl PgExecutor<'_>,
    owner: &Owner,
    deep_read_to: Option<DateTime<Utc>>,
) -> Result<(), Error> {
    sqlx::query(
        r#"
        INSERT INTO sync_cursors (owner_kind, external_user_id, cursor_at, deep_read_cursor_at)
            VALUES ($1, $2, NULL, $3)
        ON CONFLICT (owner_kind, external_user_id) DO UPDATE
            SET synced_at = now(),
                deep_read_cursor_at = GREATEST(sync_cursors.deep_read_cursor_at, EXCLUDED.deep_read_cursor_at)
        "#,
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .bind(deep_read_to)
    .execute(db)
    .await?;
    Ok(())
}

/// Moves an owner's cursor forward to `at` (never backwards).
pub async fn advance_cursor(
    conn: &mut PgConnection,
    owner: &Owner,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        r#"
        INSERT INTO sync_cursors (owner_kind, external_user_id, cursor_at) VALUES ($1, $2, $3)
        ON CONFLICT (owner_kind, external_user_id)
            DO UPDATE SET cursor_at = GREATEST(sync_cursors.cursor_at, EXCLUDED.cursor_at), synced_at = now()
        "#,
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
