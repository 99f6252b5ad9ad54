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
}

/// provider_tx_id, status, updated_at, payload_hash, ledger_state, flags.
type StoredRow = (String, String, DateTime<Utc>, String, String, Vec<String>);

/// Loads the stored versions of some transactions of an owner, locking them for the caller's
/// transaction.
pub async fn load_for_update(
    conn: &mut PgConnection,
    owner: &Owner,
    ids: &[&str],
) -> Result<HashMap<String, StoredTx>, Error> {
    let rows: Vec<StoredRow> = sqlx::query_as(
        r#"
        SELECT provider_tx_id, status, updated_at, payload_hash, ledger_state, flags
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
        .map(|(id, status, updated_at, payload_hash, state, flags)| {
            Ok((
                id,
                StoredTx {
                    status,
                    updated_at,
                    payload_hash,
                    ledger_state: LedgerState::parse(&state)?,
                    flags,
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
}

/// Upserts changed transactions and records each change once in the event history.
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
    for c in changes {
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
    sqlx::query(
        r#"
        WITH up AS (
            INSERT INTO provider_transactions AS p
                (owner_kind, external_user_id, provider_tx_id, kind, status, currency, amount, fee, reference,
                 exchange_id, created_at, updated_at, payload, payload_hash, ledger_state, flags)
            SELECT $1, $2, u.id, u.kind, u.status, u.currency, u.amount, u.fee, u.ref, u.exid, u.created, u.updated,
                   u.payload, u.hash, u.state, COALESCE(string_to_array(NULLIF(u.flags, ''), ','), '{}')
              FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::numeric[], $8::numeric[], $9::text[],
                          $10::text[], $11::timestamptz[], $12::timestamptz[], $13::jsonb[], $14::text[], $15::text[], $16::text[])
                   AS u(id, kind, status, currency, amount, fee, ref, exid, created, updated, payload, hash, state, flags)
            ON CONFLICT (provider_tx_id, owner_kind, (COALESCE(external_user_id, ''))) DO UPDATE SET
                kind = EXCLUDED.kind, status = EXCLUDED.status, currency = EXCLUDED.currency,
                amount = EXCLUDED.amount, fee = EXCLUDED.fee, reference = EXCLUDED.reference,
                exchange_id = EXCLUDED.exchange_id, created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at, payload = EXCLUDED.payload,
                payload_hash = EXCLUDED.payload_hash, ledger_state = EXCLUDED.ledger_state,
                flags = EXCLUDED.flags, last_seen_at = now()
            RETURNING p.id, p.provider_tx_id
        )
        INSERT INTO provider_transaction_events (provider_transaction_id, change, status, payload_hash, payload, provider_updated_at)
        SELECT up.id, u.change, u.status, u.hash, u.payload, u.updated
          FROM up JOIN UNNEST($3::text[], $17::text[], $5::text[], $14::text[], $13::jsonb[], $12::timestamptz[])
                        AS u(id, change, status, hash, payload, updated) ON u.id = up.provider_tx_id
        ON CONFLICT (provider_transaction_id, payload_hash) DO NOTHING
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
    .execute(&mut *conn)
    .await?;
    Ok(())
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

/// Records that an owner's history was read to the end now, even if it had no rows.
pub async fn mark_synced(db: impl PgExecutor<'_>, owner: &Owner) -> Result<(), Error> {
    sqlx::query(
        r#"
        INSERT INTO sync_cursors (owner_kind, external_user_id, cursor_at) VALUES ($1, $2, NULL)
        ON CONFLICT (owner_kind, external_user_id) DO UPDATE SET synced_at = now()
        "#,
    )
    .bind(owner.kind())
    .bind(owner.external_user_id())
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
