//! The deployment's P100 budget against a real database: members beating in any order with
//! any demand never hold caps that sum past the budget, a busy member gets what idle ones do
//! not use, and a silent member's cap is freed down to its reserve.

use queue::budget::{self, Demand};
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

const BUDGET: u32 = 200;

async fn beat(pool: &PgPool, me: &str, busy: bool, used: f64) -> u32 {
    beat_publishing(pool, me, busy, used, None).await.0
}

/// One committed beat of `me`, publishing `pause`: its cap and the pause it saw.
async fn beat_publishing(
    pool: &PgPool,
    me: &str,
    busy: bool,
    used: f64,
    pause: Option<chrono::DateTime<chrono::Utc>>,
) -> (u32, Option<std::time::Duration>) {
    let mut conn = pool.acquire().await.unwrap();
    let beat = budget::beat(
        &mut conn,
        me,
        ("test-host", 1),
        BUDGET,
        Demand { busy, used },
        pause,
    )
    .await
    .unwrap();
    let seen = (beat.cap, beat.pause_left);
    beat.commit().await.unwrap();
    seen
}

async fn caps(pool: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT id, cap FROM p100_budget_members WHERE stopped_at IS NULL ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn caps_never_sum_past_the_budget_whatever_the_order_and_demand(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let members = ["a", "b", "c", "d"];
    for step in 0..400 {
        let me = members[rng.random_range(0..members.len())];
        let busy = rng.random_bool(0.5);
        beat(&pool, me, busy, rng.random_range(0.0..120.0)).await;
        let sum: i32 = caps(&pool).await.iter().map(|(_, c)| c).sum();
        assert!(sum <= BUDGET as i32, "step {step}: {:?}", caps(&pool).await);
    }
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_busy_member_takes_what_idle_ones_leave_and_gives_it_back(pool: PgPool) {
    for m in ["a", "b", "c"] {
        beat(&pool, m, false, 0.0).await;
    }
    for _ in 0..3 {
        for m in ["a", "b", "c"] {
            beat(&pool, m, false, 0.0).await;
        }
    }
    // Nobody busy: an even split.
    assert_eq!(
        caps(&pool).await,
        vec![("a".into(), 67), ("b".into(), 67), ("c".into(), 66)]
    );
    // a turns busy: the idle ones fall to their floor first (a twentieth of an even share,
    // 1 to 2 rps; c uses 1 rps and keeps twice that), then a grows into the room.
    for _ in 0..3 {
        beat(&pool, "a", true, 67.0).await;
        beat(&pool, "b", false, 0.0).await;
        beat(&pool, "c", false, 1.0).await;
    }
    beat(&pool, "a", true, 67.0).await;
    let now = caps(&pool).await;
    assert_eq!(now[1], ("b".into(), 2));
    assert_eq!(now[2], ("c".into(), 2));
    assert_eq!(now[0], ("a".into(), 196));
    // b needs its share again: a gives room back at its next beat, b grows into it.
    beat(&pool, "b", true, 2.0).await;
    beat(&pool, "a", true, 196.0).await;
    beat(&pool, "b", true, 2.0).await;
    let now = caps(&pool).await;
    assert_eq!((now[0].1, now[1].1), (99, 99));
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_silent_member_is_counted_at_its_reserve_and_starts_again_from_it(pool: PgPool) {
    for _ in 0..3 {
        for m in ["a", "b"] {
            beat(&pool, m, true, 100.0).await;
        }
    }
    assert_eq!(
        caps(&pool).await,
        vec![("a".into(), 100), ("b".into(), 100)]
    );
    // b goes silent past STALE.
    sqlx::query(
        "UPDATE p100_budget_members SET last_seen = now() - interval '5 seconds' WHERE id = 'b'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let a = beat(&pool, "a", true, 100.0).await;
    assert_eq!(a, BUDGET - budget::reserve(BUDGET, 2));
    // b comes back: it starts from its reserve and must wait for a to make room.
    let b = beat(&pool, "b", true, 10.0).await;
    assert_eq!(b, budget::reserve(BUDGET, 2));
    beat(&pool, "a", true, 190.0).await;
    let b = beat(&pool, "b", true, 10.0).await;
    assert_eq!(b, 100);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_pause_one_member_publishes_holds_every_member(pool: PgPool) {
    beat(&pool, "a", false, 0.0).await;
    let until = chrono::Utc::now() + chrono::Duration::seconds(30);
    beat_publishing(&pool, "b", false, 0.0, Some(until)).await;
    // A shorter pause published later does not cut the longer one short.
    let shorter = chrono::Utc::now() + chrono::Duration::seconds(5);
    beat_publishing(&pool, "b", false, 0.0, Some(shorter)).await;

    let (_, left) = beat_publishing(&pool, "a", false, 0.0, None).await;
    let left = left.expect("a sees b's pause");
    assert!(
        left > std::time::Duration::from_secs(25) && left <= std::time::Duration::from_secs(30),
        "{left:?}"
    );
}
