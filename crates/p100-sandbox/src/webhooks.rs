//! Webhook delivery: the sandbox POSTs P100's webhooks for its own progressions (SPEC §7,
//! `p100-api/webhooks.md`).
//!
//! The aggregates in `state/` decide *what* to send: each calls [`Outbox::emit`] with its
//! route and body when one of its changes happens (under the state lock, so bodies show the
//! state as it changed). This module decides *how*: a ticker started by [`Sandbox::serve`]
//! ticks the state every [`TICK`] so timed changes happen without any client request, drains
//! the outbox, and spawns one task per event, so a slow receiver holds up only its own
//! deliveries.
//!
//! Each event is POSTed to `{url}/{route}` with `Content-Type: application/json` and
//! `Authorization: <token>` (the bare token). Only HTTP 200 counts as delivered; any other
//! status, a connection error or a timeout is a failure. At most [`MAX_ATTEMPTS`] attempts:
//! the first at once, then after `retry_base` × 1, 2, 4, 8 (8, 16, 32, 64 s by default, as
//! P100). After the last failure the event is given up (P100 has no dead letter either).
//!
//! Every event is logged ([`WebhookRecord`], the newest [`LOG_CAP`] kept) with its outcome;
//! the drop fault marks events `dropped` and never sends them.
//!
//! The token is never logged and never shown by `Debug`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use tokio::task::JoinSet;

use crate::Sandbox;

/// How often the ticker applies due changes and drains the outbox.
pub const TICK: Duration = Duration::from_millis(50);

/// Attempts per event, the first included (P100: 5).
pub const MAX_ATTEMPTS: u32 = 5;

/// Events kept in the log; older ones are forgotten.
pub const LOG_CAP: usize = 100_000;

/// Where and how the sandbox delivers webhooks.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Base URL; events go to `{url}/kyc`, `{url}/user`, `{url}/sepa-transfer`,
    /// `{url}/exchange` and `{url}/crypto-deposit` (for p100-recon:
    /// `http://host:port/webhooks/p100`).
    pub url: String,
    /// Sent as the `Authorization` header, bare (no `Bearer`). Never logged.
    pub token: String,
    /// Delay before the first retry; each later retry waits twice as long (default 8 s).
    pub retry_base: Duration,
    /// Limit per attempt; a slower answer is a failure (default 5 s).
    pub timeout: Duration,
}

impl WebhookConfig {
    /// P100's first retry delay.
    pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(8);
    /// The sandbox's limit per attempt (P100 documents none).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Deliveries to `url` with `token`, P100's retry schedule and a 5 s timeout.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            token: token.into(),
            retry_base: Self::DEFAULT_RETRY_BASE,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("token", &"[redacted]")
            .field("retry_base", &self.retry_base)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookOutcome {
    /// Not delivered yet; attempts may remain.
    Pending,
    /// A 200 came back.
    Delivered,
    /// Every attempt failed; given up.
    Failed,
    /// Dropped by the drop fault: never sent.
    Dropped,
}

/// One webhook event and what became of it (`Sandbox::webhook_log`,
/// `GET /__control/webhooks`).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookRecord {
    /// Position in the sandbox's sequence of events (0, 1, …).
    pub seq: u64,
    /// Route suffix: `kyc`, `user`, `sepa-transfer`, `exchange` or `crypto-deposit`.
    pub route: String,
    /// The entity the event is about: user id, transfer id, exchange id or deposit row id.
    pub entity_id: String,
    /// The exact JSON body sent (served as JSON by the control endpoint).
    #[serde(serialize_with = "raw_json")]
    pub body: String,
    /// Wall-clock time at which the sandbox applied the change.
    pub changed_at: DateTime<Utc>,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the receiver answered 200.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Where the event stands.
    pub outcome: WebhookOutcome,
    /// Why the last attempt failed (`HTTP 500`, `timeout`, a connection error).
    pub last_error: Option<String>,
}

impl WebhookRecord {
    /// The body, parsed.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Serialises a JSON text as JSON, not as a string.
fn raw_json<S: Serializer>(body: &str, s: S) -> Result<S::Ok, S::Error> {
    match serde_json::value::RawValue::from_string(body.to_owned()) {
        Ok(raw) => raw.serialize(s),
        Err(_) => s.serialize_str(body),
    }
}

/// One change to deliver, as the state recorded it.
#[derive(Debug)]
pub(crate) struct Event {
    pub route: &'static str,
    pub entity_id: String,
    /// The JSON text to send.
    pub body: String,
    pub changed_at: DateTime<Utc>,
}

/// Events produced under the state lock, waiting for the ticker. Off (and empty) unless
/// webhooks are configured, so a sandbox without them pays nothing.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    enabled: bool,
    events: Vec<Event>,
    /// Events emitted per route, the sequence number handed to body builders (the crypto
    /// deposit alternates its encodings on it).
    emitted: HashMap<&'static str, u64>,
}

impl Outbox {
    /// Turns recording on or off; turning it off forgets what was not drained yet.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.events.clear();
        }
    }

    /// Records an event for `route` about `entity_id`. `body` gets how many events this route
    /// has had before and is only called when webhooks are on.
    pub fn emit<B: Serialize>(
        &mut self,
        route: &'static str,
        entity_id: &str,
        body: impl FnOnce(u64) -> B,
    ) {
        if !self.enabled {
            return;
        }
        let n = self.emitted.entry(route).or_default();
        let seq = *n;
        *n += 1;
        match serde_json::to_string(&body(seq)) {
            Ok(body) => self.events.push(Event {
                route,
                entity_id: entity_id.to_owned(),
                body,
                changed_at: Utc::now(),
            }),
            Err(e) => {
                tracing::warn!(webhook.route = route, error = %e, "webhook body not serialisable")
            }
        }
    }

    /// Takes every recorded event, oldest first.
    pub fn drain(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

/// The drop fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum DropMode {
    #[default]
    Off,
    /// Every event until cleared.
    All,
    /// The next n events.
    Next(u32),
}

/// Configuration, drop fault and log: everything about webhooks outside the state.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    config: Option<Arc<WebhookConfig>>,
    drop: DropMode,
    log: VecDeque<WebhookRecord>,
    next_seq: u64,
}

impl Hooks {
    pub fn set_config(&mut self, config: Option<WebhookConfig>) {
        self.config = config.map(Arc::new);
    }

    pub fn is_configured(&self) -> bool {
        self.config.is_some()
    }

    /// `None`: every event until [`Hooks::clear_drop`]; `Some(n)`: the next `n` events.
    pub fn drop_events(&mut self, times: Option<u32>) {
        self.drop = match times {
            None => DropMode::All,
            Some(0) => DropMode::Off,
            Some(n) => DropMode::Next(n),
        };
    }

    pub fn clear_drop(&mut self) {
        self.drop = DropMode::Off;
    }

    /// `(dropping, remaining)`: whether the drop fault is on, and for how many more events
    /// (`None` = all until cleared).
    pub fn drop_status(&self) -> (bool, Option<u32>) {
        match self.drop {
            DropMode::Off => (false, None),
            DropMode::All => (true, None),
            DropMode::Next(n) => (true, Some(n)),
        }
    }

    pub fn log(&self) -> Vec<WebhookRecord> {
        self.log.iter().cloned().collect()
    }

    /// Logs an event; returns its sequence number and whether the drop fault takes it.
    fn admit(&mut self, e: Event) -> (u64, bool) {
        let dropped = match self.drop {
            DropMode::Off => false,
            DropMode::All => true,
            DropMode::Next(n) => {
                self.drop = if n > 1 {
                    DropMode::Next(n - 1)
                } else {
                    DropMode::Off
                };
                true
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.log.push_back(WebhookRecord {
            seq,
            route: e.route.to_owned(),
            entity_id: e.entity_id,
            body: e.body,
            changed_at: e.changed_at,
            attempts: 0,
            delivered_at: None,
            outcome: if dropped {
                WebhookOutcome::Dropped
            } else {
                WebhookOutcome::Pending
            },
            last_error: None,
        });
        if self.log.len() > LOG_CAP {
            self.log.pop_front();
        }
        (seq, dropped)
    }

    /// The record of event `seq`, unless it has left the log.
    fn record(&mut self, seq: u64) -> Option<&mut WebhookRecord> {
        let first = self.log.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.log.get_mut(i)
    }
}

/// The ticker: every [`TICK`], while webhooks are configured, applies due changes, drains the
/// outbox and starts one delivery task per event. Dropping this future (the server stopped)
/// drops the task set, which aborts every delivery in flight.
pub(crate) async fn run(sb: Sandbox) {
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "webhooks disabled: cannot build an HTTP client");
            return;
        }
    };
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = JoinSet::new();
    loop {
        interval.tick().await;
        while tasks.try_join_next().is_some() {}
        let Some(config) = sb.with_hooks(|h| h.config.clone()) else {
            continue;
        };
        let events = sb.with_state(|st, _| st.outbox.drain());
        for event in events {
            let route = event.route;
            let body = event.body.clone();
            let (seq, dropped) = sb.with_hooks(|h| h.admit(event));
            if dropped {
                tracing::debug!(
                    webhook.route = route,
                    webhook.seq = seq,
                    "webhook dropped by the drop fault"
                );
                continue;
            }
            tasks.spawn(deliver(
                sb.clone(),
                client.clone(),
                Arc::clone(&config),
                seq,
                route,
                body,
            ));
        }
    }
}

/// Delivers one event: up to [`MAX_ATTEMPTS`] POSTs, doubling the wait after each failure.
async fn deliver(
    sb: Sandbox,
    client: reqwest::Client,
    config: Arc<WebhookConfig>,
    seq: u64,
    route: &'static str,
    body: String,
) {
    let url = format!("{}/{route}", config.url.trim_end_matches('/'));
    for attempt in 1..=MAX_ATTEMPTS {
        let result = attempt_once(&client, &config, &url, &body).await;
        let done = result.is_ok() || attempt == MAX_ATTEMPTS;
        sb.with_hooks(|h| {
            if let Some(r) = h.record(seq) {
                r.attempts = attempt;
                match &result {
                    Ok(()) => {
                        r.outcome = WebhookOutcome::Delivered;
                        r.delivered_at = Some(Utc::now());
                    }
                    Err(e) => {
                        r.last_error = Some(e.clone());
                        if done {
                            r.outcome = WebhookOutcome::Failed;
                        }
                    }
                }
            }
        });
        match result {
            Ok(()) => return,
            Err(e) if done => {
                tracing::info!(webhook.route = route, webhook.seq = seq, webhook.attempt = attempt, error = %e,
                    "webhook {route} #{seq} given up after {attempt} attempts");
                return;
            }
            Err(e) => {
                let wait = config.retry_base.saturating_mul(1 << (attempt - 1));
                tracing::debug!(webhook.route = route, webhook.seq = seq, webhook.attempt = attempt, error = %e,
                    "webhook {route} #{seq} failed, retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One POST; `Ok` only for HTTP 200.
async fn attempt_once(
    client: &reqwest::Client,
    config: &WebhookConfig,
    url: &str,
    body: &str,
) -> Result<(), String> {
    use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
    let mut auth = HeaderValue::from_str(&config.token)
        .map_err(|_| "the webhook token is not a valid header value".to_string())?;
    auth.set_sensitive(true);
    let response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, auth)
        .timeout(config.timeout)
        .body(body.to_owned())
        .send()
        .await;
    match response {
        Ok(r) if r.status().as_u16() == 200 => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err("timeout".into()),
        Err(e) => Err(format!("connection error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> Event {
        Event {
            route: "kyc",
            entity_id: format!("u{n}"),
            body: "{}".into(),
            changed_at: Utc::now(),
        }
    }

    #[test]
    fn the_drop_fault_takes_the_next_n_events_then_stops() {
        let mut h = Hooks::default();
        h.drop_events(Some(2));
        let dropped: Vec<bool> = (0..4).map(|n| h.admit(event(n)).1).collect();
        assert_eq!(dropped, [true, true, false, false]);
        h.drop_events(None);
        assert!(h.admit(event(5)).1);
        h.clear_drop();
        assert!(!h.admit(event(6)).1);
    }

    #[test]
    fn the_log_keeps_the_newest_events_and_finds_them_by_seq() {
        let mut h = Hooks::default();
        for n in 0..(LOG_CAP as u32 + 3) {
            h.admit(event(n));
        }
        assert_eq!(h.log.len(), LOG_CAP);
        assert!(h.record(2).is_none());
        assert_eq!(h.record(3).map(|r| r.seq), Some(3));
        assert_eq!(
            h.record(LOG_CAP as u64 + 2).map(|r| r.entity_id.clone()),
            Some(format!("u{}", LOG_CAP + 2))
        );
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let c = WebhookConfig::new("http://x", "s3cret-token");
        assert!(!format!("{c:?}").contains("s3cret-token"));
    }

    #[test]
    fn a_disabled_outbox_records_nothing_and_never_builds_bodies() {
        let mut o = Outbox::default();
        o.emit("kyc", "u", |_| -> serde_json::Value { unreachable!() });
        assert!(o.drain().is_empty());
        o.set_enabled(true);
        o.emit("kyc", "u", |n| n);
        o.emit("kyc", "u", |n| n);
        o.emit("user", "u", |n| n);
        let bodies: Vec<String> = o.drain().into_iter().map(|e| e.body).collect();
        assert_eq!(bodies, ["0", "1", "0"]);
    }
}
