//! The client-side rate limit: never more than `rate` requests in any window of one second
//! (plus a margin), never a burst faster than slightly above the average rate, and waiting
//! requests admitted by lane ([`Lane`]), most urgent first.
//!
//! An evenly spaced limiter alone (one request every `1 / rate`, no burst) loses every slot
//! that no request was ready for, and a timer wakes late by up to a millisecond: measured at
//! 200 requests/s it admitted 182–195 a second under full demand. A sliding window of the last
//! `rate` admissions lets a late request take a slot a previous one left unused, while still
//! guaranteeing the limit over *every* one-second window (not just aligned ones). The even
//! spacing is kept at 5 % above the average rate, so P100 never sees a burst of a whole
//! second's budget (its limiter's shape is not documented, assumption A13).
//!
//! The rate is this process's share of the budget and can change at any time (a deployment
//! shares one budget among its replicas, SPEC §2.2); 0 admits nothing. A pause (a 429's
//! `Retry-After`, here or at another replica) admits nothing until it ends.
//!
//! Only the head of the most urgent non-empty lane sleeps for a slot; everyone else waits to
//! be woken, so an admission costs one wake-up whatever the number of waiters.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::lane::Lane;

/// Added to the one-second window: network jitter between our send and P100's count must
/// not move a request into a second that already holds `rate` (assumption A13).
pub const WINDOW_MARGIN: Duration = Duration::from_millis(10);
const WINDOW: Duration = Duration::from_secs(1);
/// The fastest spacing, relative to the average rate.
const SPACING_HEADROOM: f64 = 1.05;

struct Waiter {
    id: u64,
    wake: Arc<Notify>,
}

struct State {
    rate: u32,
    /// Admission times within the last window, oldest first.
    recent: VecDeque<Instant>,
    /// Earliest next admission by spacing.
    next_spaced: Option<Instant>,
    paused_until: Option<Instant>,
    lanes: [VecDeque<Waiter>; 4],
    next_id: u64,
    /// Since the last [`RateLimit::take_demand`]: admissions, and whether a request had to
    /// wait for the rate (not for a pause).
    admitted: u64,
    starved: bool,
    since: Instant,
}

enum Turn {
    Admitted,
    /// The head: the slot opens then (`None`: when the rate or a pause changes).
    At(Option<Instant>),
    /// Someone else goes first.
    Behind,
}

impl State {
    fn head(&self) -> Option<&Waiter> {
        self.lanes.iter().find_map(|q| q.front())
    }

    fn wake_head(&self) {
        if let Some(w) = self.head() {
            w.wake.notify_one();
        }
    }

    fn turn(&mut self, lane: Lane, id: u64, now: Instant) -> Turn {
        if self.head().map(|w| w.id) != Some(id) {
            return Turn::Behind;
        }
        if let Some(until) = self.paused_until.filter(|t| *t > now) {
            return Turn::At(Some(until));
        }
        if self.rate == 0 {
            self.starved = true;
            return Turn::At(None);
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW + WINDOW_MARGIN)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.rate as usize {
            self.starved = true;
            let oldest = self.recent.front().copied().unwrap_or(now);
            return Turn::At(Some(oldest + WINDOW + WINDOW_MARGIN));
        }
        // Spacing waits do not count as wanting more: two requests close together are not
        // demand beyond the share; a full window is.
        if let Some(next) = self.next_spaced.filter(|t| *t > now) {
            return Turn::At(Some(next));
        }
        let period = Duration::from_secs_f64(1.0 / (f64::from(self.rate) * SPACING_HEADROOM));
        // A timer that woke late keeps up to half a period of its lateness for the next
        // request, so the average holds without a burst; the window above bounds every second.
        let base = self.next_spaced.map_or(now, |t| {
            now.checked_sub(period / 2).map_or(now, |b| t.max(b))
        });
        self.next_spaced = Some(base + period);
        self.recent.push_back(now);
        self.admitted += 1;
        self.lanes[lane.index()].pop_front();
        Turn::Admitted
    }
}

/// Shared by every clone of a client.
pub(crate) struct RateLimit {
    state: Mutex<State>,
}

/// Removes a waiter that gave up (its request was cancelled) and hands the turn on.
struct Queued<'a> {
    limit: &'a RateLimit,
    lane: Lane,
    id: u64,
    admitted: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut st = self.limit.lock();
        if !self.admitted {
            st.lanes[self.lane.index()].retain(|w| w.id != self.id);
        }
        st.wake_head();
    }
}

impl RateLimit {
    pub(crate) fn new(rate: u32) -> RateLimit {
        RateLimit {
            state: Mutex::new(State {
                rate,
                recent: VecDeque::new(),
                next_spaced: None,
                paused_until: None,
                lanes: Default::default(),
                next_id: 0,
                admitted: 0,
                starved: false,
                since: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every step: a panic elsewhere cannot leave it half done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This process's requests per second from now on (0: none).
    pub(crate) fn set_rate(&self, rate: u32) {
        let mut st = self.lock();
        if st.rate != rate {
            st.rate = rate;
            st.next_spaced = None;
            st.wake_head();
        }
    }

    pub(crate) fn rate(&self) -> u32 {
        self.lock().rate
    }

    /// Since the previous call: whether requests waited for the rate (they want more), and
    /// requests per second admitted.
    pub(crate) fn take_demand(&self) -> (bool, f64) {
        let mut st = self.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(st.since).as_secs_f64().max(1e-3);
        let demand = (st.starved, st.admitted as f64 / elapsed);
        st.admitted = 0;
        st.starved = false;
        st.since = now;
        demand
    }

    /// No request leaves before `until` (a later pause already set stays).
    pub(crate) fn pause_until(&self, until: Instant) {
        let mut st = self.lock();
        if st.paused_until.is_none_or(|t| t < until) {
            st.paused_until = Some(until);
            st.wake_head();
        }
    }

    /// Waits until one more request of `lane` may leave, and records it. Returns how long it
    /// waited.
    pub(crate) async fn until_ready(&self, lane: Lane) -> Duration {
        let started = Instant::now();
        let wake = Arc::new(Notify::new());
        let id = {
            let mut st = self.lock();
            let id = st.next_id;
            st.next_id += 1;
            st.lanes[lane.index()].push_back(Waiter {
                id,
                wake: wake.clone(),
            });
            id
        };
        let mut queued = Queued {
            limit: self,
            lane,
            id,
            admitted: false,
        };
        loop {
            let turn = self.lock().turn(lane, id, Instant::now());
            match turn {
                Turn::Admitted => {
                    queued.admitted = true;
                    // Dropping `queued` wakes the next head.
                    return started.elapsed();
                }
                Turn::At(Some(at)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = wake.notified() => {}
                    }
                }
                Turn::At(None) | Turn::Behind => wake.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_window_of_a_second_holds_more_than_the_limit_and_none_is_a_burst() {
        let limit = RateLimit::new(100);
        let mut times = Vec::new();
        // A first request, then idle for a while, then full demand.
        limit.until_ready(Lane::Bulk).await;
        times.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..150 {
            limit.until_ready(Lane::Bulk).await;
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
        // Never two within half a period of 105/s (1/105 s ≈ 9.5 ms): no burst.
        let min_gap = times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .min()
            .unwrap();
        assert!(min_gap >= Duration::from_millis(4), "{min_gap:?}");
    }

    #[tokio::test]
    async fn an_urgent_request_overtakes_every_waiting_bulk_request() {
        let limit = Arc::new(RateLimit::new(20));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (limit, order) = (limit.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                limit.until_ready(Lane::Bulk).await;
                order.lock().unwrap().push(format!("bulk{i}"));
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waited = limit.until_ready(Lane::Deadline).await;
        order.lock().unwrap().push("deadline".into());
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        let at = order.iter().position(|s| s == "deadline").unwrap();
        // About 6 bulk requests left in 300 ms at 20/s; the deadline request is next.
        assert!((4..=9).contains(&at), "{at}: {order:?}");
        assert!(waited <= Duration::from_millis(100), "{waited:?}");
    }

    #[tokio::test]
    async fn a_rate_of_zero_admits_nothing_until_a_share_arrives_and_a_pause_holds_everyone() {
        let limit = Arc::new(RateLimit::new(0));
        let waiting = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.until_ready(Lane::Deadline).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished());
        limit.set_rate(10);
        let waited = waiting.await.unwrap();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");

        limit.pause_until(Instant::now() + Duration::from_millis(300));
        let waited = limit.until_ready(Lane::Deadline).await;
        assert!(waited >= Duration::from_millis(290), "{waited:?}");
    }

    #[tokio::test]
    async fn a_cancelled_waiter_hands_its_turn_on() {
        let limit = Arc::new(RateLimit::new(0));
        let first = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.until_ready(Lane::Deadline).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.until_ready(Lane::Bulk).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        first.abort();
        let _ = first.await;
        limit.set_rate(10);
        tokio::time::timeout(Duration::from_secs(1), second)
            .await
            .expect("the bulk waiter is admitted once the deadline one is gone")
            .unwrap();
    }
}
