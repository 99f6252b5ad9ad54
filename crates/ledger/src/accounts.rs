//! Ledger accounts: one per (owner, currency) plus the counter-accounts.

use std::collections::HashMap;

use sqlx::PgConnection;

use crate::{Error, Owner};

/// What an account belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountKind {
    /// The partner's balance at P100.
    Partner,
    /// A user's balance at P100.
    User,
    /// Everything outside P100: deposits come from it, withdrawals and card payments go to it.
    External,
    /// Fees P100 charged.
    P100Fees,
    /// The other side of partner ↔ user transfers; nets to zero once both sides are synced.
    InternalClearing,
    /// The other side of exchange legs, per currency.
    ExchangeClearing,
    /// Amounts the partner's outgoing operations have reserved (negative while held).
    PartnerHold,
    /// Amounts a user's outgoing operations have reserved (negative while held).
    UserHold,
    /// The other side of holds.
    HoldsClearing,
}

impl AccountKind {
    /// Stored spelling (`ledger_accounts.owner_kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Partner => "partner",
            AccountKind::User => "user",
            AccountKind::External => "external",
            AccountKind::P100Fees => "p100_fees",
            AccountKind::InternalClearing => "internal_clearing",
            AccountKind::ExchangeClearing => "exchange_clearing",
            AccountKind::PartnerHold => "partner_hold",
            AccountKind::UserHold => "user_hold",
            AccountKind::HoldsClearing => "holds_clearing",
        }
    }
}

/// Names an account without knowing its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountRef {
    /// Kind of account.
    pub kind: AccountKind,
    /// The user, for user accounts.
    pub external_user_id: Option<String>,
    /// Lowercase currency.
    pub currency: String,
}

impl AccountRef {
    /// The account mirroring an owner's P100 balance in `currency`.
    pub fn of(owner: &Owner, currency: &str) -> AccountRef {
        match owner {
            Owner::Partner => AccountRef {
                kind: AccountKind::Partner,
                external_user_id: None,
                currency: currency.to_owned(),
            },
            Owner::User(id) => AccountRef {
                kind: AccountKind::User,
                external_user_id: Some(id.clone()),
                currency: currency.to_owned(),
            },
        }
    }

    /// The account holding what an owner's outgoing operations have reserved in `currency`.
    pub fn hold(owner: &Owner, currency: &str) -> AccountRef {
        match owner {
            Owner::Partner => AccountRef {
                kind: AccountKind::PartnerHold,
                external_user_id: None,
                currency: currency.to_owned(),
            },
            Owner::User(id) => AccountRef {
                kind: AccountKind::UserHold,
                external_user_id: Some(id.clone()),
                currency: currency.to_owned(),
            },
        }
    }

    /// A counter-account in `currency`.
    pub fn counter(kind: AccountKind, currency: &str) -> AccountRef {
        AccountRef {
            kind,
            external_user_id: None,
            currency: currency.to_owned(),
        }
    }
}

/// Finds or creates the accounts; returns their ids. Each account is found by an index probe
/// (`ledger_accounts_owner_lookup`): matching owners with `IS NOT DISTINCT FROM` in a join
/// scanned every account on every page (28 ms a page at 30,000 accounts).
pub async fn ensure(
    conn: &mut PgConnection,
    refs: &[AccountRef],
) -> Result<HashMap<AccountRef, i64>, Error> {
    let mut unique: Vec<&AccountRef> = refs.iter().collect();
    unique.sort();
    unique.dedup();
    let kinds: Vec<&str> = unique.iter().map(|r| r.kind.as_str()).collect();
    let users: Vec<Option<&str>> = unique
        .iter()
        .map(|r| r.external_user_id.as_deref())
        .collect();
    let currencies: Vec<&str> = unique.iter().map(|r| r.currency.as_str()).collect();
    sqlx::query(
        r#"
        INSERT INTO ledger_accounts (owner_kind, external_user_id, currency)
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
        ON CONFLICT (owner_kind, external_user_id, currency) DO NOTHING
        "#,
    )
    .bind(&kinds)
    .bind(&users)
    .bind(&currencies)
    .execute(&mut *conn)
    .await?;
    let rows: Vec<(i64, String, Option<String>, String)> = sqlx::query_as(
        r#"
        SELECT a.id, a.owner_kind, a.external_user_id, a.currency
          FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(k, e, c)
          CROSS JOIN LATERAL (
              SELECT id, owner_kind, external_user_id, currency FROM ledger_accounts
               WHERE owner_kind = u.k AND COALESCE(external_user_id, '') = COALESCE(u.e, '')
                 AND currency = u.c
               OFFSET 0) a
        "#,
    )
    .bind(&kinds)
    .bind(&users)
    .bind(&currencies)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = HashMap::with_capacity(rows.len());
    for (id, kind, user, currency) in rows {
        if let Some(r) = unique.iter().find(|r| {
            r.kind.as_str() == kind && r.external_user_id == user && r.currency == currency
        }) {
            ids.insert((*r).clone(), id);
        }
    }
    if ids.len() != unique.len() {
        return Err(Error::Corrupt(format!(
            "{} of {} accounts could not be found or created",
            unique.len() - ids.len(),
            unique.len()
        )));
    }
    Ok(ids)
}
