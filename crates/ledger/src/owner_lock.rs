//! One writer per owner.
//!
//! Every transaction that writes for an owner (a history page, a SEPA hold or settlement, an
//! exchange's legs) takes that owner's transaction-scoped advisory lock **first**, before any
//! row lock, so two writers of one owner run one after the other and writers of different
//! owners never wait on each other. The lock is released at commit or rollback.
//!
//! The lock is keyed by a 64-bit hash of the owner: two owners whose hashes collide merely
//! take turns, which costs time, never correctness.

use sqlx::PgConnection;

use crate::{Error, Owner};

/// The text hashed into the lock key.
fn lock_name(owner: &Owner) -> String {
    match owner {
        Owner::Partner => "ledger-owner|partner".to_owned(),
        Owner::User(id) => format!("ledger-owner|user|{id}"),
    }
}

/// Waits for, then holds until the end of the caller's transaction, the write lock of
/// `owner`. Taking it again in the same transaction is a no-op.
pub async fn acquire(conn: &mut PgConnection, owner: &Owner) -> Result<(), Error> {
    acquire_all(conn, std::slice::from_ref(owner)).await
}

/// Takes the locks of several owners in one fixed order (so two transactions that need the
/// same owners cannot deadlock on them).
pub async fn acquire_all(conn: &mut PgConnection, owners: &[Owner]) -> Result<(), Error> {
    let mut names: Vec<String> = owners.iter().map(lock_name).collect();
    names.sort();
    names.dedup();
    for name in names {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
