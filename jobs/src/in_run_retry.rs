//! Transient P100 failures retried inside a run (SPEC §5.1): a reconciliation of many owners
//! must not leave one unchecked because one read met a P501. A few quick attempts with
//! exponential backoff and jitter ride out a blip; what is still failing after them is left
//! to a follow-up run, so a run never stalls for minutes on one owner.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// Calls per read within a run, the first included.
pub const ATTEMPTS: u32 = 5;
/// Backoff before the second call; doubled each time, capped at [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between two calls.
const MAX_DELAY: Duration = Duration::from_secs(8);

/// Runs `op` until it succeeds, fails in a way `transient` says retrying cannot help, or
/// [`ATTEMPTS`] calls are spent. Returns the last result and how many calls were made (each
/// one spends the run's P100 budget).
pub async fn retrying<T, E, F, Fut>(
    transient: impl Fn(&E) -> bool,
    mut op: F,
) -> (Result<T, E>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut calls = 0;
    loop {
        calls += 1;
        let result = op().await;
        match &result {
            Err(e) if calls < ATTEMPTS && transient(e) => {
                tokio::time::sleep(backoff(calls)).await;
            }
            _ => return (result, calls),
        }
    }
}

/// The wait after call `n` (1-based): "equal jitter", half fixed and half random, so owners
/// that failed together do not all come back in the same instant.
fn backoff(n: u32) -> Duration {
    let full = FIRST_DELAY
        .saturating_mul(1 << (n - 1).min(16))
        .min(MAX_DELAY);
    let half = full / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// Whether a P100 read failure is worth another call now: transient classes, and unknown
/// outcomes (a read has no effect to be unsure about).
pub fn p100_transient(e: &p100::Error) -> bool {
    matches!(
        e.class,
        p100::ErrorClass::Transient | p100::ErrorClass::UnknownOutcome
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for n in 1..=12 {
            let d = backoff(n);
            let full = FIRST_DELAY.saturating_mul(1 << (n - 1)).min(MAX_DELAY);
            assert!(d >= full / 2 && d <= full, "call {n}: {d:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_and_a_permanent_one_is_not() {
        let mut left = 2;
        let (result, calls) = retrying(
            |e: &&str| *e == "transient",
            || {
                left -= 1;
                let r = if left >= 0 { Err("transient") } else { Ok(7) };
                async move { r }
            },
        )
        .await;
        assert_eq!((result, calls), (Ok(7), 3));
        let (result, calls) = retrying(
            |e: &&str| *e == "transient",
            || async { Err::<(), _>("permanent") },
        )
        .await;
        assert_eq!((result, calls), (Err("permanent"), 1));
        let (result, calls) = retrying(
            |e: &&str| *e == "transient",
            || async { Err::<(), _>("transient") },
        )
        .await;
        assert_eq!((result, calls), (Err("transient"), ATTEMPTS));
    }
}
