//! How long a failed job waits before its next attempt.

use std::time::Duration;

/// Exponential backoff with jitter: attempt n waits `base × 2^(n−1)`, capped at `max`, then
/// scaled by a random factor in `[1 − jitter, 1]` so that jobs failing together do not
/// retry together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Fraction of the delay that is randomised, 0.0..=1.0.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before the attempt after `failed_attempts` failures (1 = first failure).
    /// `unit` is a random number in `[0, 1)`; passing it in keeps this function pure.
    pub fn delay(&self, failed_attempts: u32, unit: f64) -> Duration {
        let exponent = failed_attempts.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exponent).min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * unit.clamp(0.0, 1.0);
        raw.mul_f64(factor)
    }

    /// [`Backoff::delay`] with a fresh random number.
    pub fn delay_now(&self, failed_attempts: u32) -> Duration {
        self.delay(failed_attempts, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_only_shortens() {
        let b = Backoff {
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
            jitter: 0.5,
        };
        let no_jitter: Vec<u64> = (1..=6).map(|n| b.delay(n, 0.0).as_secs()).collect();
        assert_eq!(no_jitter, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(b.delay(3, 0.999_999).as_millis(), 10_000);
        assert_eq!(b.delay(100, 0.0), Duration::from_secs(60));
    }
}
