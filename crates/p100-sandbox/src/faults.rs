//! Fault injection: rules that make chosen P100 requests slow, failing or garbled.
//!
//! A fault matches requests by path prefix (`route`, or `"*"` for every P100 route) and
//! optionally method. It lets the first `skip` matching requests through, then fires on the
//! next `times` ones (`null` = forever), or with `every: n` on each n-th of them only. Each fault counts independently; when several fire on
//! one request their latencies add up and the first non-latency fault decides the answer.
//!
//! Timing: by default a fault answers *instead of* P100, before the API key is checked. Kinds
//! that need the real answer (`malformed`, `truncated`, `unknown_enum`) run after the handler,
//! and so does `latency` on non-GET requests, because a slow answer to a write
//! (`POST /v1/partner/exchange`) must not stop the write from happening: a client that times
//! out or crashes mid-call must find the exchange created. `after_handler: true` moves any
//! other kind after the handler too (e.g. a `p500` whose exchange was nevertheless created:
//! the "unknown outcome" case).

use serde::{Deserialize, Serialize};

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Wait `ms` milliseconds, then answer normally.
    Latency {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// HTTP 400 `{"errorCode":"P501","errorMessage":"Service temporarily unavailable"}`.
    P501,
    /// HTTP 400 `{"errorCode":"P500","errorMessage":"Unknown exception"}`.
    P500,
    /// A gateway-style error page with this HTTP status (e.g. 502, 503, 500).
    HttpStatus {
        /// HTTP status code.
        status: u16,
    },
    /// HTTP 429 with `Retry-After: n` and `{"message":"Too Many Requests"}`.
    RateLimit {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_seconds: u64,
    },
    /// Close the connection without an answer (the client sees an incomplete message).
    Drop,
    /// HTTP 200 with invalid JSON (`{"transactions": [`).
    Malformed,
    /// The real answer with its body cut in half.
    Truncated,
    /// The real answer with every `status`, `attemptStatus` and `type` value replaced by
    /// `"SOMETHING_NEW"`.
    UnknownEnum,
}

impl FaultKind {
    /// Whether this kind needs (or by default waits for) the handler's answer.
    pub(crate) fn default_after_handler(&self, method: &str) -> bool {
        match self {
            FaultKind::Latency { .. } => !method.eq_ignore_ascii_case("GET"),
            FaultKind::Malformed | FaultKind::Truncated | FaultKind::UnknownEnum => true,
            _ => false,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            FaultKind::Latency { .. } => "latency",
            FaultKind::P501 => "p501",
            FaultKind::P500 => "p500",
            FaultKind::HttpStatus { .. } => "http_status",
            FaultKind::RateLimit { .. } => "rate_limit",
            FaultKind::Drop => "drop",
            FaultKind::Malformed => "malformed",
            FaultKind::Truncated => "truncated",
            FaultKind::UnknownEnum => "unknown_enum",
        }
    }
}

/// One fault rule, as given to `POST /__control/faults` or in a scenario's `[[faults]]`:
/// `{"route": "/v1/partner/transactions", "method": "GET", "kind": "rate_limit",
/// "retry_after_seconds": 2, "times": 1, "skip": 0}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFault", into = "RawFault")]
pub struct Fault {
    /// Path prefix (`/v1/partner/transactions`) or `"*"`.
    pub route: String,
    /// `GET`, `POST` …; `None` matches any method.
    pub method: Option<String>,
    /// What happens.
    pub kind: FaultKind,
    /// How many matching requests it fires on; `None` = forever.
    pub times: Option<u32>,
    /// Matching requests let through before it starts firing.
    pub skip: u32,
    /// Fire only on every n-th matching request after `skip` (a steady rate of transient
    /// faults: `every: 10` is 10 %, never twice in a row); `None` = on each one.
    pub every: Option<u32>,
    /// Force the fault before (`false`) or after (`true`) the handler; `None` = the kind's
    /// default (see the module docs).
    pub after_handler: Option<bool>,
}

impl Fault {
    /// A fault of `kind` on every request whose path starts with `route`, forever.
    pub fn new(route: impl Into<String>, kind: FaultKind) -> Self {
        Self {
            route: route.into(),
            method: None,
            kind,
            times: None,
            skip: 0,
            every: None,
            after_handler: None,
        }
    }

    /// Fire on every `n`-th matching request only.
    pub fn every(mut self, n: u32) -> Self {
        self.every = Some(n.max(1));
        self
    }

    /// Only for this HTTP method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Fire on `n` matching requests only.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Let the first `k` matching requests through.
    pub fn skip(mut self, k: u32) -> Self {
        self.skip = k;
        self
    }

    /// Force the fault after the handler ran.
    pub fn after_handler(mut self, yes: bool) -> Self {
        self.after_handler = Some(yes);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let route_ok = self.route == "*" || path.starts_with(&self.route);
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        route_ok && method_ok
    }
}

/// The flat wire form. A flat struct rather than an internally tagged enum because serde's
/// buffering of tagged enums cannot read numbers under serde_json's `arbitrary_precision`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    method: Option<String>,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    times: Option<u32>,
    #[serde(default)]
    skip: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_handler: Option<bool>,
}

impl TryFrom<RawFault> for Fault {
    type Error = String;

    fn try_from(r: RawFault) -> Result<Self, String> {
        let kind = match r.kind.to_ascii_lowercase().as_str() {
            "latency" => FaultKind::Latency {
                ms: r.ms.ok_or("fault kind \"latency\" needs \"ms\"")?,
            },
            "p501" => FaultKind::P501,
            "p500" => FaultKind::P500,
            "http_status" => {
                let status = r
                    .status
                    .ok_or("fault kind \"http_status\" needs \"status\"")?;
                if !(100..=599).contains(&status) {
                    return Err(format!("fault status {status} is not an HTTP status"));
                }
                FaultKind::HttpStatus { status }
            }
            "rate_limit" => FaultKind::RateLimit {
                retry_after_seconds: r.retry_after_seconds.unwrap_or(1),
            },
            "drop" => FaultKind::Drop,
            "malformed" => FaultKind::Malformed,
            "truncated" => FaultKind::Truncated,
            "unknown_enum" => FaultKind::UnknownEnum,
            other => {
                return Err(format!(
                    "unknown fault kind {other:?} (expected latency, p501, p500, http_status, \
                     rate_limit, drop, malformed, truncated or unknown_enum)"
                ));
            }
        };
        Ok(Fault {
            route: r.route.unwrap_or_else(|| "*".into()),
            method: r.method.map(|m| m.to_ascii_uppercase()),
            kind,
            times: r.times,
            skip: r.skip,
            every: r.every.map(|n| n.max(1)),
            after_handler: r.after_handler,
        })
    }
}

impl From<Fault> for RawFault {
    fn from(f: Fault) -> Self {
        let (ms, status, retry_after_seconds) = match &f.kind {
            FaultKind::Latency { ms } => (Some(*ms), None, None),
            FaultKind::HttpStatus { status } => (None, Some(*status), None),
            FaultKind::RateLimit {
                retry_after_seconds,
            } => (None, None, Some(*retry_after_seconds)),
            _ => (None, None, None),
        };
        RawFault {
            route: Some(f.route),
            method: f.method,
            kind: f.kind.name().into(),
            times: f.times,
            skip: f.skip,
            every: f.every,
            ms,
            status,
            retry_after_seconds,
            after_handler: f.after_handler,
        }
    }
}

/// A fault and its counters, as listed by `GET /__control/faults`.
#[derive(Debug, Clone, Serialize)]
pub struct FaultStatus {
    /// The rule.
    #[serde(flatten)]
    pub fault: Fault,
    /// Matching requests seen so far.
    pub seen: u64,
    /// Times it fired.
    pub fired: u64,
}

/// What the middleware must do for one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub latency_before_ms: u64,
    pub latency_after_ms: u64,
    pub before: Option<FaultKind>,
    pub after: Option<FaultKind>,
}

/// All faults with their counters.
#[derive(Debug, Default)]
pub(crate) struct FaultSet {
    faults: Vec<FaultStatus>,
}

impl FaultSet {
    pub fn add(&mut self, fault: Fault) {
        self.faults.push(FaultStatus {
            fault,
            seen: 0,
            fired: 0,
        });
    }

    pub fn clear(&mut self) {
        self.faults.clear();
    }

    pub fn list(&self) -> Vec<FaultStatus> {
        self.faults.clone()
    }

    /// Counts the request against every matching fault and says what fires.
    pub fn decide(&mut self, method: &str, path: &str) -> Decision {
        let mut d = Decision::default();
        for f in &mut self.faults {
            if !f.fault.matches(method, path) {
                continue;
            }
            f.seen += 1;
            if f.seen <= u64::from(f.fault.skip) {
                continue;
            }
            if f.fault.times.is_some_and(|t| f.fired >= u64::from(t)) {
                continue;
            }
            let nth = f.seen - u64::from(f.fault.skip);
            if f.fault.every.is_some_and(|n| nth % u64::from(n) != 0) {
                continue;
            }
            f.fired += 1;
            let after = f
                .fault
                .after_handler
                .unwrap_or_else(|| f.fault.kind.default_after_handler(method))
                // These kinds transform the real answer, so they cannot come first.
                || matches!(
                    f.fault.kind,
                    FaultKind::Malformed | FaultKind::Truncated | FaultKind::UnknownEnum
                );
            match (&f.fault.kind, after) {
                (FaultKind::Latency { ms }, false) => d.latency_before_ms += ms,
                (FaultKind::Latency { ms }, true) => d.latency_after_ms += ms,
                (kind, false) if d.before.is_none() && d.after.is_none() => {
                    d.before = Some(kind.clone())
                }
                (kind, true) if d.before.is_none() && d.after.is_none() => {
                    d.after = Some(kind.clone())
                }
                _ => {}
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_and_times_count_matching_requests() {
        let mut set = FaultSet::default();
        set.add(Fault::new("/v1/partner", FaultKind::P501).skip(1).times(2));
        let fired: Vec<bool> = (0..5)
            .map(|_| set.decide("GET", "/v1/partner/balances").before.is_some())
            .collect();
        assert_eq!(fired, [false, true, true, false, false]);
        assert!(set.decide("GET", "/v1/kyc/status/x").before.is_none());
    }

    #[test]
    fn latency_on_a_write_waits_after_the_handler() {
        let mut set = FaultSet::default();
        set.add(Fault::new("*", FaultKind::Latency { ms: 5 }));
        assert_eq!(
            set.decide("POST", "/v1/partner/exchange").latency_after_ms,
            5
        );
        assert_eq!(
            set.decide("GET", "/v1/partner/exchange/x")
                .latency_before_ms,
            5
        );
    }

    #[test]
    fn faults_parse_from_json_with_numbers() {
        let f: Fault = serde_json::from_str(
            r#"{"route":"/v1","method":"get","kind":"rate_limit","retry_after_seconds":3,"times":null}"#,
        )
        .unwrap();
        assert_eq!(
            f.kind,
            FaultKind::RateLimit {
                retry_after_seconds: 3
            }
        );
        assert_eq!(f.method.as_deref(), Some("GET"));
        let back = serde_json::to_value(&f).unwrap();
        assert_eq!(back["kind"], "rate_limit");
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"explode"}"#).is_err());
    }
}
