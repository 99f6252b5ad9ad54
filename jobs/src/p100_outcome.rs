//! How a failed P100 call ends a job run, in one place.

use std::time::Duration;

use p100::ErrorClass;
use queue::Outcome;

/// Delay used when P100 rate-limits us without a `Retry-After`.
const DEFAULT_DEFER: Duration = Duration::from_secs(5);

/// The outcome of a run that failed on `error`, for reads (writes decide unknown outcomes
/// themselves). A 429 defers without spending an attempt; transient failures retry with
/// backoff; permanent and auth failures end the job.
pub fn for_read_error(error: &p100::Error) -> Outcome {
    let reason = error.to_string();
    match error.class {
        ErrorClass::Transient if error.status.is_some_and(|s| s.as_u16() == 429) => {
            Outcome::Defer {
                reason,
                after: error.retry_after.unwrap_or(DEFAULT_DEFER),
            }
        }
        ErrorClass::Transient | ErrorClass::UnknownOutcome => Outcome::retry(reason),
        ErrorClass::NotYet => Outcome::retry(reason),
        ErrorClass::Permanent | ErrorClass::Auth => Outcome::dead(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p100::Failure;
    use reqwest::StatusCode;

    fn error(
        status: Option<u16>,
        code: Option<&str>,
        retry_after: Option<u64>,
        class: ErrorClass,
    ) -> p100::Error {
        p100::Error {
            method: "GET",
            path: "/v1/partner/transactions".into(),
            request_id: "r".into(),
            status: status.map(|s| StatusCode::from_u16(s).unwrap()),
            code: code.map(str::to_owned),
            name: None,
            message: None,
            retry_after: retry_after.map(Duration::from_secs),
            failure: Failure::Http,
            class,
        }
    }

    #[test]
    fn each_error_class_ends_the_run_as_documented() {
        let check = |e: p100::Error, expected: &str| {
            assert_eq!(for_read_error(&e).label(), expected, "{e}")
        };
        check(
            error(Some(429), None, Some(7), ErrorClass::Transient),
            "defer",
        );
        check(
            error(Some(400), Some("P501"), None, ErrorClass::Transient),
            "retry",
        );
        check(error(Some(502), None, None, ErrorClass::Transient), "retry");
        check(
            error(Some(400), Some("P412"), None, ErrorClass::Permanent),
            "dead",
        );
        check(error(Some(401), None, None, ErrorClass::Auth), "dead");
        match for_read_error(&error(Some(429), None, Some(7), ErrorClass::Transient)) {
            Outcome::Defer { after, .. } => assert_eq!(after, Duration::from_secs(7)),
            other => panic!("{other:?}"),
        }
    }
}
