//! Reversals: once per key, and never of a posting that does not exist.

use std::str::FromStr;

use chrono::Utc;
use ledger::Owner;
use ledger::accounts::{AccountKind, AccountRef};
use ledger::postings::{NewEntry, NewPosting, PostingMeta, Source};
use rust_decimal::Decimal;
use sqlx::PgPool;

fn deposit(key: &str, amount: &str) -> NewPosting {
    let amount = Decimal::from_str(amount).unwrap();
    NewPosting::new(
        PostingMeta {
            key: key.into(),
            source: Source::ProviderTransaction,
            provider_tx_id: Some(key.into()),
            provider_status: Some("COMPLETED".into()),
            description: "deposit".into(),
            effective_at: Utc::now(),
        },
        vec![
            NewEntry {
                account: AccountRef::of(&Owner::Partner, "eur"),
                amount,
            },
            NewEntry {
                account: AccountRef::counter(AccountKind::External, "eur"),
                amount: -amount,
            },
        ],
    )
    .unwrap()
}

async fn partner_eur(pool: &PgPool) -> Decimal {
    sqlx::query_scalar(
        "SELECT balance FROM ledger_accounts WHERE owner_kind = 'partner' AND currency = 'eur'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_reversal_happens_once_and_only_of_a_posting_that_exists(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    ledger::postings::post(&mut conn, &[deposit("d-1", "40.00")])
        .await
        .unwrap();
    let undo = |original: &str| {
        vec![(
            original.to_owned(),
            format!("{original}:reversed"),
            Utc::now(),
        )]
    };

    assert_eq!(
        ledger::postings::reverse(&mut conn, &undo("d-1"), "undo")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        ledger::postings::reverse(&mut conn, &undo("d-1"), "undo")
            .await
            .unwrap(),
        0
    );
    assert_eq!(partner_eur(&pool).await, Decimal::ZERO);

    let missing = ledger::postings::reverse(&mut conn, &undo("never-posted"), "undo").await;
    let error = missing
        .expect_err("reversing nothing is an error")
        .to_string();
    assert!(error.contains("never-posted"), "{error}");
    let postings: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_postings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(postings, 2, "nothing was written for the missing original");
}
