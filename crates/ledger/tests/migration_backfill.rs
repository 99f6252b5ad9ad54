//! Migration 0014 links rows posted by the earlier code to the postings written for them, with
//! the figures those postings really hold; a row whose posting was reversed keeps that key, so
//! its next completion is posted under a new key instead of silently colliding.

use std::borrow::Cow;

use sqlx::PgPool;
use sqlx::migrate::Migrator;

const FIRST_NEW: i64 = 20261206000014;

/// provider_tx_id, ledger_state, posting_key, posted_amount, flags.
type LinkedRow = (
    String,
    String,
    Option<String>,
    Option<rust_decimal::Decimal>,
    Vec<String>,
);

fn up_to(before: i64) -> Migrator {
    let all = &ledger::MIGRATOR;
    Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version < before)
                .cloned()
                .collect(),
        ),
        ignore_missing: all.ignore_missing,
        locking: all.locking,
        no_tx: all.no_tx,
        table_name: all.table_name.clone(),
        create_schemas: all.create_schemas.clone(),
    }
}

#[sqlx::test(migrations = false)]
async fn legacy_rows_are_linked_to_their_real_postings(pool: PgPool) {
    up_to(FIRST_NEW).run(&pool).await.unwrap();
    // The earlier code's data: a deposit posted (amount later changed without a repost), a
    // deposit posted and reversed, and a SEPA debit and its return sharing one posting.
    sqlx::raw_sql(
        r#"
        INSERT INTO ledger_accounts (id, owner_kind, external_user_id, currency) VALUES
            (1, 'user', 'u', 'eur'), (2, 'external', NULL, 'eur'), (3, 'p100_fees', NULL, 'eur');
        INSERT INTO ledger_postings (id, idempotency_key, source, provider_tx_id, provider_status, description, reverses, effective_at) VALUES
            (1, 'p100:user:u:a', 'p100_transaction', 'a', 'COMPLETED', 'a', NULL, now()),
            (2, 'p100:user:u:b', 'p100_transaction', 'b', 'COMPLETED', 'b', NULL, now()),
            (3, 'p100:user:u:b:reversal', 'p100_transaction', 'b', 'REVERSED', 'b', 2, now()),
            (4, 'sepa:user:u:t1', 'p100_transaction', 'd', 'COMPLETED', 'd', NULL, now());
        INSERT INTO ledger_entries (posting_id, account_id, currency, amount, effective_at) VALUES
            (1, 1, 'eur', 10, now()), (1, 2, 'eur', -10, now()),
            (2, 1, 'eur', 5, now()), (2, 2, 'eur', -5, now()),
            (3, 1, 'eur', -5, now()), (3, 2, 'eur', 5, now()),
            (4, 1, 'eur', -31, now()), (4, 2, 'eur', 30, now()), (4, 3, 'eur', 1, now());
        INSERT INTO provider_transactions (owner_kind, external_user_id, provider_tx_id, kind, status, currency, amount, fee,
                                           reference, created_at, updated_at, payload, payload_hash, ledger_state, flags) VALUES
            ('user', 'u', 'a', 'DEPOSIT', 'COMPLETED', 'eur', 12, 0, NULL, now(), now(), '{}', 'ha', 'posted', '{payload_changed}'),
            ('user', 'u', 'b', 'DEPOSIT', 'PENDING', 'eur', 5, 0, NULL, now(), now(), '{}', 'hb', 'reversed', '{}'),
            ('user', 'u', 'r', 'SEPA_TRANSFER', 'COMPLETED', 'eur', 30, 0, 't1', now(), now(), '{}', 'hr', 'posted', '{}'),
            ('user', 'u', 'd', 'SEPA_TRANSFER', 'COMPLETED', 'eur', -30, 1, 't1', now(), now(), '{}', 'hd', 'posted', '{}');
        "#,
    )
    .execute(&pool)
    .await
    .unwrap();

    ledger::MIGRATOR.run(&pool).await.unwrap();

    let rows: Vec<LinkedRow> = sqlx::query_as(
        "SELECT provider_tx_id, ledger_state, posting_key, posted_amount, flags
               FROM provider_transactions ORDER BY provider_tx_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let row = |id: &str| rows.iter().find(|r| r.0 == id).unwrap().clone();
    // The posting holds 10, not the row's 12: recorded as such and flagged.
    let a = row("a");
    assert_eq!(
        (a.1.as_str(), a.2.as_deref()),
        ("posted", Some("p100:user:u:a"))
    );
    assert_eq!(a.3, Some(10.into()));
    assert!(a.4.contains(&"posted_figures_differ".to_owned()), "{a:?}");
    // The reversed row keeps the key of what it reversed.
    let b = row("b");
    assert_eq!(
        (b.1.as_str(), b.2.as_deref()),
        ("reversed", Some("p100:user:u:b"))
    );
    // The shared SEPA posting goes to the row whose P100 id it carries (the debit, -30 - 1);
    // the return is set back to unposted and flagged, so reconciliation shows it.
    let d = row("d");
    assert_eq!(
        (d.1.as_str(), d.2.as_deref()),
        ("posted", Some("sepa:user:u:t1"))
    );
    assert_eq!(d.3, Some((-30).into()));
    let r = row("r");
    assert_eq!((r.1.as_str(), r.2.as_deref()), ("none", None));
    assert!(r.4.contains(&"shared_posting".to_owned()), "{r:?}");
    let (_, _, violations) = ledger::balances::verify(&pool).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}
