//! Everything that can go wrong talking to P100, classified once, here.
//!
//! P100 reports business errors with a P-code, and documents P500/P501 as HTTP 400, so the
//! class is decided by `errorCode` first and by HTTP status only where there is no code
//! (`p100-api/overview.md` §4.4). The table in [`classify`] is the one place that decides.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;

/// What a caller should do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Try again later with backoff: P501, HTTP 5xx, 429, timeouts and broken
    /// connections on reads, P500 on reads, malformed bodies on reads.
    Transient,
    /// A write may or may not have taken effect (P500, timeout or broken connection after
    /// the request was sent): re-read state before doing anything else.
    UnknownOutcome,
    /// The thing does not exist at P100 yet (P445, P459, P460): re-check on the normal
    /// schedule, it is not an outage.
    NotYet,
    /// Retrying cannot help (P403, P412, P428, unknown P-codes, other 4xx).
    Permanent,
    /// The key or the source IP is rejected (HTTP 401 `xo1`/`xo2`/`xo3`): an operator must act.
    Auth,
}

impl ErrorClass {
    /// Stable lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::UnknownOutcome => "unknown_outcome",
            ErrorClass::NotYet => "not_yet",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Auth => "auth",
        }
    }
}

/// How the call failed, before classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// P100 answered with a non-success HTTP status.
    Http,
    /// No connection could be made; the request was never sent.
    Connect,
    /// The request or the response took longer than the configured timeout.
    Timeout,
    /// The connection broke after the request may have been sent, or the body was cut short.
    Transport(String),
    /// P100 answered 2xx with a body we could not decode.
    Decode(String),
    /// Refused before sending: the request could not mean what it says (an id that a URL
    /// resolves as a path segment, `.` or `..`). Retrying cannot help.
    Refused(String),
}

/// A failed call to P100. Carries the path, HTTP status, P-code and P100's message; never the
/// API key (it lives only in a request header, which no error or log line includes).
#[derive(Debug, Clone)]
pub struct Error {
    /// HTTP method of the call.
    pub method: &'static str,
    /// Request path as sent (without host and query).
    pub path: String,
    /// Our id for the request (sent as `x-request-id`), or P100's if it returned one.
    pub request_id: String,
    /// HTTP status, when P100 answered.
    pub status: Option<StatusCode>,
    /// P100's `errorCode` (e.g. `P412`), when the body carried one.
    pub code: Option<String>,
    /// P100's `errorName` (e.g. `invalid-user`), when present.
    pub name: Option<String>,
    /// P100's `errorMessage` (or the 401 `message`), when present.
    pub message: Option<String>,
    /// Delay P100 asked for with `Retry-After` on a 429.
    pub retry_after: Option<Duration>,
    /// How the call failed.
    pub failure: Failure,
    /// What to do about it.
    pub class: ErrorClass,
}

impl Error {
    /// Whether retrying the same call later is the right reaction.
    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    /// The P-code, if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P100 {} {} failed", self.method, self.path)?;
        match &self.failure {
            Failure::Http => {}
            Failure::Connect => f.write_str(": could not connect")?,
            Failure::Timeout => f.write_str(": timed out")?,
            Failure::Transport(detail) => write!(f, ": connection broken ({detail})")?,
            Failure::Decode(detail) => write!(f, ": unreadable response ({detail})")?,
            Failure::Refused(detail) => write!(f, ": not sent ({detail})")?,
        }
        if let Some(status) = self.status {
            write!(f, ": HTTP {}", status.as_u16())?;
        }
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        if let Some(message) = &self.message {
            write!(f, " ({message})")?;
        }
        if let Some(delay) = self.retry_after {
            write!(f, ", retry after {}s", delay.as_secs())?;
        }
        write!(f, " [{}; request {}]", self.class.as_str(), self.request_id)
    }
}

impl std::error::Error for Error {}

/// The retry classification table of `p100-api/overview.md` §4.4.
///
/// `is_write` is true for calls with side effects (POST), where a lost answer means the
/// effect may have happened.
pub fn classify(
    is_write: bool,
    failure: &Failure,
    status: Option<StatusCode>,
    code: Option<&str>,
) -> ErrorClass {
    let lost_answer = if is_write {
        ErrorClass::UnknownOutcome
    } else {
        ErrorClass::Transient
    };
    match failure {
        // Nothing was sent: always safe to retry.
        Failure::Connect => return ErrorClass::Transient,
        Failure::Refused(_) => return ErrorClass::Permanent,
        Failure::Timeout | Failure::Transport(_) | Failure::Decode(_) => return lost_answer,
        Failure::Http => {}
    }
    // A rejected key or a rate limit means the same whatever code the body carries.
    match status.map(|s| s.as_u16()) {
        Some(401) => return ErrorClass::Auth,
        Some(429) => return ErrorClass::Transient,
        _ => {}
    }
    if let Some(code) = code {
        return match code {
            "P501" => ErrorClass::Transient,
            "P500" => lost_answer,
            "P445" | "P459" | "P460" => ErrorClass::NotYet,
            // An undocumented code on a 5xx is still a server failure.
            _ if status.is_some_and(|s| s.is_server_error()) => lost_answer,
            _ => ErrorClass::Permanent,
        };
    }
    match status.map(|s| s.as_u16()) {
        Some(401) => ErrorClass::Auth,
        Some(429) => ErrorClass::Transient,
        // A gateway 5xx on a write: the request may have reached P100 behind it.
        Some(500..=599) => lost_answer,
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        is_write: bool,
        failure: Failure,
        status: Option<u16>,
        code: Option<&str>,
        expected: ErrorClass,
    ) {
        let status = status.map(|s| StatusCode::from_u16(s).unwrap());
        assert_eq!(
            classify(is_write, &failure, status, code),
            expected,
            "write={is_write} {failure:?} {status:?} {code:?}"
        );
    }

    #[test]
    fn classification_follows_the_reference_table() {
        use ErrorClass::*;
        use Failure::*;
        check(false, Http, Some(400), Some("P501"), Transient);
        check(true, Http, Some(400), Some("P501"), Transient);
        check(false, Http, Some(400), Some("P500"), Transient);
        check(true, Http, Some(400), Some("P500"), UnknownOutcome);
        check(false, Http, Some(404), Some("P445"), NotYet);
        check(false, Http, Some(400), Some("P459"), NotYet);
        check(false, Http, Some(404), Some("P460"), NotYet);
        check(false, Http, Some(400), Some("P403"), Permanent);
        check(false, Http, Some(400), Some("P412"), Permanent);
        check(false, Http, Some(404), Some("P428"), Permanent);
        check(false, Http, Some(400), Some("P999"), Permanent);
        check(false, Http, Some(401), Some("P999"), Auth);
        check(true, Http, Some(429), Some("P999"), Transient);
        check(false, Http, Some(503), Some("P999"), Transient);
        check(true, Http, Some(503), Some("P999"), UnknownOutcome);
        check(false, Http, Some(401), None, Auth);
        check(false, Http, Some(429), None, Transient);
        check(true, Http, Some(429), None, Transient);
        check(false, Http, Some(502), None, Transient);
        check(true, Http, Some(503), None, UnknownOutcome);
        check(false, Http, Some(404), None, Permanent);
        check(false, Timeout, None, None, Transient);
        check(true, Timeout, None, None, UnknownOutcome);
        check(true, Connect, None, None, Transient);
        check(true, Transport("reset".into()), None, None, UnknownOutcome);
        check(false, Decode("eof".into()), Some(200), None, Transient);
        check(true, Decode("eof".into()), Some(200), None, UnknownOutcome);
    }
}
