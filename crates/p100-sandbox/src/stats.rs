//! Request counters, read by `GET /__control/stats`.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

/// Seconds of `per_second` history kept; older seconds are dropped so a long benchmark cannot
/// grow the map without bound.
const PER_SECOND_KEEP: usize = 86_400;

/// History requests kept in [`RequestStats::history_requests`]; older ones are dropped.
const HISTORY_KEEP: usize = 10_000;

/// One history request as P100 parsed it: which history, and the window and page asked for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryRequest {
    /// `"partner"` or the external user id.
    pub owner: String,
    /// `from` in milliseconds since the epoch (`None` when not sent).
    pub from_ms: Option<i64>,
    /// `to` in milliseconds since the epoch (`None` when not sent).
    pub to_ms: Option<i64>,
    /// Page number.
    pub page: u64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RequestStats {
    /// P100 requests received (including rejected and faulted ones).
    pub total: u64,
    /// Per `"METHOD /path"` with path parameters left out, e.g. `"GET /v1/kyc/status"`.
    pub by_route: BTreeMap<String, u64>,
    /// Per Unix second (as a string key).
    pub per_second: BTreeMap<String, u64>,
    /// `POST /v1/partner/exchange` calls per `lockId` (every call that passed the API key
    /// check, even when a fault answered it or the lock was unknown).
    pub exchange_finalize_calls: BTreeMap<String, u64>,
    /// Wall-clock time (Unix milliseconds) of the first `POST /v1/partner/exchange` per
    /// `lockId`: how long a finalization waited is measured against it.
    pub exchange_finalize_first_ms: BTreeMap<String, i64>,
    /// Exchanges actually created per `lockId` (read from the state, so `reset_stats` does
    /// not clear it).
    pub exchanges_per_lock: BTreeMap<String, u64>,
    /// Answers per HTTP status (`"200"`, `"401"`, …); dropped connections count as `"drop"`.
    pub responses: BTreeMap<String, u64>,
    /// Requests on which at least one fault fired.
    pub faults_fired: u64,
    /// The latest history requests that passed validation, oldest first (at most 10,000), so
    /// a test can tell how far back a sync read.
    pub history_requests: Vec<HistoryRequest>,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub snap: RequestStats,
    per_second: BTreeMap<i64, u64>,
    history: VecDeque<HistoryRequest>,
}

impl Stats {
    pub fn record_request(&mut self, route_key: &str, unix_second: i64) {
        self.snap.total += 1;
        *self.snap.by_route.entry(route_key.to_string()).or_default() += 1;
        *self.per_second.entry(unix_second).or_default() += 1;
        while self.per_second.len() > PER_SECOND_KEEP {
            self.per_second.pop_first();
        }
    }

    pub fn record_history(&mut self, request: HistoryRequest) {
        if self.history.len() == HISTORY_KEEP {
            self.history.pop_front();
        }
        self.history.push_back(request);
    }

    pub fn record_response(&mut self, status: &str) {
        *self.snap.responses.entry(status.to_string()).or_default() += 1;
    }

    pub fn record_finalize(&mut self, lock_id: &str) {
        self.snap
            .exchange_finalize_first_ms
            .entry(lock_id.to_string())
            .or_insert_with(|| chrono::Utc::now().timestamp_millis());
        *self
            .snap
            .exchange_finalize_calls
            .entry(lock_id.to_string())
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> RequestStats {
        let mut s = self.snap.clone();
        s.per_second = self
            .per_second
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        s.history_requests = self.history.iter().cloned().collect();
        s
    }

    pub fn reset(&mut self) {
        *self = Stats::default();
    }
}
