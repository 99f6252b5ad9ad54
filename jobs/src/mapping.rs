//! From a P100 transaction to ledger entries: a pure function, tested by table.
//!
//! `amount` is the signed movement of the owner's P100 balance; `fee` is charged on top in the
//! same currency (SPEC §8). So the owner's account moves by `amount − fee`, a counter-account
//! chosen by the transaction's type takes `−amount`, and P100's fee account takes `fee`.

use ledger::Owner;
use ledger::accounts::{AccountKind, AccountRef};
use ledger::postings::{NewEntry, NewPosting, PostingMeta, Source, Unbalanced};
use ledger::provider::ObservedTx;

/// The counter-account of a transaction type, or `None` for a type we do not know.
pub fn counter_kind(kind: &str) -> Option<AccountKind> {
    Some(match kind {
        "DEPOSIT" | "WITHDRAWAL" | "SEPA_TRANSFER" | "CARD" => AccountKind::External,
        "FEE" => AccountKind::P100Fees,
        "INTERNAL_TRANSFER" => AccountKind::InternalClearing,
        "EXCHANGE" => AccountKind::ExchangeClearing,
        _ => return None,
    })
}

/// One part of a key joined with `:`: `%` and `:` are escaped, so parts that contain a colon
/// (a user `a:b` with row `c` against user `a` with row `b:c`) can never make the same key.
/// Parts without either character are unchanged, so keys written before stay valid.
fn part(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([':', '%']) {
        text.replace('%', "%25").replace(':', "%3A").into()
    } else {
        text.into()
    }
}

fn who(owner: &Owner) -> String {
    match owner {
        Owner::Partner => "partner".to_owned(),
        Owner::User(id) => format!("user:{}", part(id)),
    }
}

/// The idempotency key of the first posting of a history row: by P100's id, so two rows
/// that share a reference (a SEPA debit and its return, two rows of one lock) never collapse
/// into one posting.
pub fn row_key(owner: &Owner, provider_tx_id: &str) -> String {
    format!("p100:{}:{}", who(owner), part(provider_tx_id))
}

/// The key of a later posting of the same row (after a reversal, or a correction of its
/// figures): one per version, so replaying a page writes nothing new.
pub fn version_key(owner: &Owner, tx: &ObservedTx) -> String {
    let version = tx.payload_hash.get(..16).unwrap_or(&tx.payload_hash);
    format!("{}:{version}", row_key(owner, &tx.provider_tx_id))
}

/// The key under which a local operation posts the movement this row reports, if any: an
/// exchange leg by its lock and side (posted by `exchange_finalize` from P100's details), an
/// outgoing SEPA transfer by its `transferId` (posted by `sepa_status`). A history row of that
/// movement adopts the local posting instead of posting it again.
pub fn local_operation_key(owner: &Owner, tx: &ObservedTx) -> Option<String> {
    let who = who(owner);
    match (&tx.kind[..], &tx.reference) {
        ("EXCHANGE", Some(lock)) => {
            let side = if tx.amount.is_sign_negative() {
                "from"
            } else {
                "to"
            };
            Some(format!("exchange:{who}:{}:{side}", part(lock)))
        }
        ("SEPA_TRANSFER", Some(transfer)) if tx.amount.is_sign_negative() => {
            Some(format!("sepa:{who}:{}", part(transfer)))
        }
        _ => None,
    }
}

/// Every key a local operation's posting of this row's movement may carry: today's, and for
/// ids holding `:` or `%` the unescaped form written before keys escaped their parts. Looking
/// up both keeps an upgrade from posting such a movement a second time.
pub fn local_operation_keys(owner: &Owner, tx: &ObservedTx) -> Vec<String> {
    let Some(key) = local_operation_key(owner, tx) else {
        return Vec::new();
    };
    let legacy_who = match owner {
        Owner::Partner => "partner".to_owned(),
        Owner::User(id) => format!("user:{id}"),
    };
    let legacy = match (&tx.kind[..], &tx.reference) {
        ("EXCHANGE", Some(lock)) => {
            let side = key.rsplit(':').next().unwrap_or_default();
            format!("exchange:{legacy_who}:{lock}:{side}")
        }
        (_, Some(transfer)) => format!("sepa:{legacy_who}:{transfer}"),
        _ => return vec![key],
    };
    if legacy == key {
        vec![key]
    } else {
        vec![key, legacy]
    }
}

/// The posting for a settled transaction under `key`; `Ok(None)` when it moves nothing.
/// Unknown types are not guessed: the caller flags them.
pub fn to_posting(
    owner: &Owner,
    tx: &ObservedTx,
    key: String,
) -> Result<Option<NewPosting>, Unbalanced> {
    let Some(counter) = counter_kind(&tx.kind) else {
        return Ok(None);
    };
    if tx.amount.is_zero() && tx.fee.is_zero() {
        return Ok(None);
    }
    let currency = tx.currency.as_str();
    let entries = vec![
        NewEntry {
            account: AccountRef::of(owner, currency),
            amount: tx.amount - tx.fee,
        },
        NewEntry {
            account: AccountRef::counter(counter, currency),
            amount: -tx.amount,
        },
        NewEntry {
            account: AccountRef::counter(AccountKind::P100Fees, currency),
            amount: tx.fee,
        },
    ];
    let meta = PostingMeta {
        key,
        source: Source::ProviderTransaction,
        provider_tx_id: Some(tx.provider_tx_id.clone()),
        provider_status: Some(tx.status.clone()),
        description: format!(
            "{} {} {} {}",
            tx.kind,
            tx.amount,
            tx.currency,
            tx.reference.as_deref().unwrap_or("")
        ),
        effective_at: tx.updated_at,
    };
    NewPosting::new(meta, entries).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    /// Security review: ids containing `:` made colliding keys.
    #[test]
    fn keys_of_different_rows_never_collide_and_plain_ids_keep_their_keys() {
        let a = row_key(&Owner::User("a:b".into()), "c");
        let b = row_key(&Owner::User("a".into()), "b:c");
        assert_ne!(a, b);
        assert_ne!(
            row_key(&Owner::User("a%3Ab".into()), "c"),
            a,
            "the escape itself is escaped"
        );
        assert_eq!(
            row_key(&Owner::User("u-1".into()), "tx-1"),
            "p100:user:u-1:tx-1"
        );
        assert_eq!(row_key(&Owner::Partner, "tx-1"), "p100:partner:tx-1");
    }

    /// Review: a posting written under the unescaped key before the upgrade must still be
    /// found, or the movement is posted a second time.
    #[test]
    fn a_local_operation_is_found_under_its_key_from_before_the_escaping() {
        let mut t = tx("SEPA_TRANSFER", "-5", "0");
        t.reference = Some("tr:1".into());
        let user = Owner::User("a:b".into());
        assert_eq!(
            local_operation_keys(&user, &t),
            vec![
                "sepa:user:a%3Ab:tr%3A1".to_owned(),
                "sepa:user:a:b:tr:1".to_owned()
            ]
        );
        t.kind = "EXCHANGE".into();
        assert_eq!(
            local_operation_keys(&user, &t),
            vec![
                "exchange:user:a%3Ab:tr%3A1:from".to_owned(),
                "exchange:user:a:b:tr:1:from".to_owned()
            ]
        );
        let plain = Owner::User("u-1".into());
        t.reference = Some("lock-1".into());
        assert_eq!(
            local_operation_keys(&plain, &t),
            vec!["exchange:user:u-1:lock-1:from".to_owned()]
        );
    }

    fn tx(kind: &str, amount: &str, fee: &str) -> ObservedTx {
        ObservedTx {
            provider_tx_id: "t".into(),
            kind: kind.into(),
            status: "COMPLETED".into(),
            currency: "eur".into(),
            amount: Decimal::from_str(amount).unwrap(),
            fee: Decimal::from_str(fee).unwrap(),
            reference: Some("ref".into()),
            exchange_id: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            payload: serde_json::Value::Null,
            payload_hash: String::new(),
        }
    }

    /// (type, amount, fee) → the entries as (account kind, amount), in order.
    fn check(owner: &Owner, kind: &str, amount: &str, fee: &str, expected: &[(AccountKind, &str)]) {
        let posting = to_posting(owner, &tx(kind, amount, fee), "k".into())
            .unwrap()
            .unwrap();
        let got: Vec<(AccountKind, String)> = posting
            .entries()
            .iter()
            .map(|e| (e.account.kind, e.amount.to_string()))
            .collect();
        let expected: Vec<(AccountKind, String)> = expected
            .iter()
            .map(|(k, a)| (*k, (*a).to_owned()))
            .collect();
        assert_eq!(got, expected, "{kind} {amount} fee {fee}");
    }

    #[test]
    fn every_documented_type_maps_to_balanced_entries() {
        use AccountKind::*;
        let user = Owner::User("u".into());
        let partner = Owner::Partner;
        check(
            &user,
            "DEPOSIT",
            "100.00",
            "0",
            &[(User, "100.00"), (External, "-100.00")],
        );
        check(
            &user,
            "WITHDRAWAL",
            "-0.005",
            "0.0003",
            &[(User, "-0.0053"), (External, "0.005"), (P100Fees, "0.0003")],
        );
        check(
            &user,
            "SEPA_TRANSFER",
            "-500.00",
            "1.00",
            &[(User, "-501.00"), (External, "500.00"), (P100Fees, "1.00")],
        );
        check(
            &partner,
            "EXCHANGE",
            "-100.00",
            "1.49",
            &[
                (Partner, "-101.49"),
                (ExchangeClearing, "100.00"),
                (P100Fees, "1.49"),
            ],
        );
        check(
            &partner,
            "EXCHANGE",
            "0.00102",
            "0",
            &[(Partner, "0.00102"), (ExchangeClearing, "-0.00102")],
        );
        check(
            &partner,
            "INTERNAL_TRANSFER",
            "-1500.00",
            "0",
            &[(Partner, "-1500.00"), (InternalClearing, "1500.00")],
        );
        check(
            &user,
            "INTERNAL_TRANSFER",
            "1500.00",
            "0",
            &[(User, "1500.00"), (InternalClearing, "-1500.00")],
        );
        check(
            &partner,
            "FEE",
            "-0.25",
            "0",
            &[(Partner, "-0.25"), (P100Fees, "0.25")],
        );
        check(
            &user,
            "CARD",
            "-12.34",
            "0",
            &[(User, "-12.34"), (External, "12.34")],
        );
    }

    #[test]
    fn unknown_types_and_empty_movements_are_not_posted() {
        let user = Owner::User("u".into());
        assert!(
            to_posting(&user, &tx("CASHBACK", "1.00", "0"), "k".into())
                .unwrap()
                .is_none()
        );
        assert!(
            to_posting(&user, &tx("DEPOSIT", "0", "0"), "k".into())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn eight_decimals_stay_exact() {
        let user = Owner::User("u".into());
        check(
            &user,
            "DEPOSIT",
            "0.00000001",
            "0",
            &[
                (AccountKind::User, "0.00000001"),
                (AccountKind::External, "-0.00000001"),
            ],
        );
    }
}
