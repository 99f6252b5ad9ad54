//! Security review: intake tables took `1e40` (breaking `sepa list` for good) and user ids
//! with control characters or `..`. The tables now hold the bounds the code checks.

use sqlx::PgPool;

async fn refused(pool: &PgPool, sql: &'static str) -> String {
    sqlx::query(sql)
        .execute(pool)
        .await
        .expect_err(sql)
        .to_string()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn intake_rows_beyond_the_bounds_are_refused(pool: PgPool) {
    for sql in [
        "INSERT INTO sepa_transfers (transfer_id, owner_kind, amount, currency) VALUES ('t-1', 'partner', 1e40, 'eur')",
        "INSERT INTO sepa_transfers (transfer_id, owner_kind, amount, currency) VALUES ('t-2', 'partner', 0.000000001, 'eur')",
        "INSERT INTO sepa_transfers (transfer_id, owner_kind, external_user_id, amount, currency) VALUES ('t-3', 'user', E'u\\x1b[2J', 1, 'eur')",
        "INSERT INTO sepa_transfers (transfer_id, owner_kind, amount, currency) VALUES (E't-4\\n', 'partner', 1, 'eur')",
        "INSERT INTO exchanges (owner_kind, lock_id, currency_from, currency_to, amount, expires_at) VALUES ('partner', 'l-1', 'eur', 'usdt', 1e15, now())",
        "INSERT INTO tracked_users (external_user_id) VALUES ('..')",
        "INSERT INTO tracked_users (external_user_id) VALUES (' u-1')",
        "INSERT INTO tracked_users (external_user_id) VALUES (E'u\\t1')",
    ] {
        let e = refused(&pool, sql).await;
        assert!(e.contains("violates check constraint"), "{sql}: {e}");
    }
    for sql in [
        "INSERT INTO sepa_transfers (transfer_id, owner_kind, amount, currency) VALUES ('t-ok', 'partner', 999999999999999.99999999, 'eur')",
        "INSERT INTO tracked_users (external_user_id) VALUES ('user:1.a@example')",
    ] {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
}
