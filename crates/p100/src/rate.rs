//! The client-side rate limit: never more than `max_rps` requests in any window of one second
//! (plus a margin), and never a burst faster than slightly above the average rate.
//!
//! An evenly spaced limiter alone (one request every `1 / max_rps`, no burst) loses every slot
//! that no request was ready for, and a timer wakes late by up to a millisecond: measured at
//! 200 requests/s it admitted 182–195 a second under full demand. A sliding window of the last
//! `max_rps` admissions lets a late request take a slot a previous one left unused, while still
//! guaranteeing the limit over *every* one-second window (not just aligned ones). The even
//! spacing is kept at 5 % above the average rate, so P100 never sees a burst of a whole
//! second's budget (its limiter's shape is not documented, assumption A13).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// Added to the one-second window: network jitter between our send and P100's count must
/// not move a request into a second that already holds `max_rps` (assumption A13).
pub const WINDOW_MARGIN: Duration = Duration::from_millis(10);
const WINDOW: Duration = Duration::from_secs(1);

/// Shared by every clone of a client.
pub(crate) struct RateLimit {
    max: usize,
    spacing: DefaultDirectRateLimiter,
    /// Admission times within the last window, oldest first. The async mutex is fair (FIFO),
    /// so waiters queue for slots in order and only the head sleeps.
    recent: tokio::sync::Mutex<VecDeque<Instant>>,
}

impl RateLimit {
    pub(crate) fn new(max_rps: NonZeroU32) -> RateLimit {
        // One request per 1 / (1.05 × max_rps) at the fastest.
        let period = Duration::from_secs_f64(1.0 / (f64::from(max_rps.get()) * 1.05));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::MIN);
        RateLimit {
            max: max_rps.get() as usize,
            spacing: RateLimiter::direct(quota),
            recent: tokio::sync::Mutex::new(VecDeque::new()),
        }
    }

    /// Waits until one more request may leave, and records it.
    pub(crate) async fn until_ready(&self) {
        let mut recent = self.recent.lock().await;
        loop {
            let now = Instant::now();
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= WINDOW + WINDOW_MARGIN)
            {
                recent.pop_front();
            }
            if recent.len() < self.max {
                break;
            }
            let oldest = recent.front().copied().unwrap_or(now);
            tokio::time::sleep_until(oldest + WINDOW + WINDOW_MARGIN).await;
        }
        self.spacing.until_ready().await;
        recent.push_back(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_window_of_a_second_holds_more_than_the_limit_and_none_is_a_burst() {
        let limit = RateLimit::new(NonZeroU32::new(100).unwrap());
        let mut times = Vec::new();
        // A first request, then idle for a while, then full demand.
        limit.until_ready().await;
        times.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..150 {
            limit.until_ready().await;
            times.push(Instant::now());
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < WINDOW + WINDOW_MARGIN)
                .count();
            assert!(
                in_window <= 100,
                "{in_window} requests within a second of #{i}"
            );
        }
        // Evenly spaced at 105/s at the fastest: 1/105 s ≈ 9.5 ms.
        let min_gap = times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .min()
            .unwrap();
        assert!(min_gap >= Duration::from_millis(9), "{min_gap:?}");
    }
}
