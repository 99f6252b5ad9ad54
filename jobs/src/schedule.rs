//! `jobs/schedule.toml`: per-kind limits and the periodic schedules.
//!
//! Operators edit the file without recompiling; the daemon reads it at start and refuses to
//! start on any mistake, naming the line and the reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::kinds::Kind;

/// Limits of one job kind.
#[derive(Debug, Clone, PartialEq)]
pub struct KindLimits {
    /// Longest one attempt may run before it counts as failed.
    pub timeout: Duration,
    /// Attempts before the job goes dead.
    pub max_attempts: u32,
    /// Jobs of this kind one process runs at once (with `from_budget`, the floor until the
    /// daemon sizes it from the P100 budget).
    pub concurrency: usize,
    /// Sized at start from `P100_MAX_RPS` and P100's latency (`concurrency = "budget"`).
    pub from_budget: bool,
    /// Times a job may be deferred (429) without spending an attempt.
    pub max_deferrals: u32,
    /// Delay after the first failed attempt; doubles with each further failure.
    pub backoff_base: Duration,
    /// Longest delay between attempts.
    pub backoff_max: Duration,
    /// Polling jobs (`kyc_poll`, `sepa_status`): the delay after the first read that found
    /// the unit still in progress; doubles per such read.
    pub poll_first: Duration,
    /// Polling jobs: the longest delay between reads.
    pub poll_max: Duration,
}

impl Default for KindLimits {
    fn default() -> Self {
        KindLimits {
            timeout: Duration::from_secs(300),
            max_attempts: 5,
            concurrency: 4,
            from_budget: false,
            max_deferrals: 20,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(3600),
            poll_first: Duration::from_secs(60),
            poll_max: Duration::from_secs(3600),
        }
    }
}

/// One periodic job.
#[derive(Debug, Clone)]
pub struct ScheduleEntry {
    /// Stable name; ticks are recorded under it.
    pub name: String,
    /// The cron expression as written.
    pub cron_text: String,
    /// Parsed expression (seconds field first).
    pub cron: cron::Schedule,
    /// Timezone the expression is read in.
    pub timezone: Tz,
    /// Kind of job to enqueue at each tick.
    pub kind: Kind,
    /// Arguments of that job (validated against the kind at load).
    pub args: serde_json::Value,
}

impl ScheduleEntry {
    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&after.with_timezone(&self.timezone))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest tick at or before `now`, searched from `since` (ticks before `since` are
    /// not of interest).
    pub fn latest_at_or_before(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut latest = None;
        let mut cursor = since;
        while let Some(next) = self.next_after(cursor) {
            if next > now {
                break;
            }
            latest = Some(next);
            cursor = next;
        }
        latest
    }
}

/// The whole file, validated.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFile {
    /// Limits per kind; kinds not in the file use [`KindLimits::default`].
    pub kinds: BTreeMap<Kind, KindLimits>,
    /// Periodic jobs.
    pub schedules: Vec<ScheduleEntry>,
}

impl ScheduleFile {
    /// The limits of a kind.
    pub fn limits(&self, kind: Kind) -> KindLimits {
        self.kinds
            .get(&kind)
            .cloned()
            .unwrap_or_else(|| kind.default_limits())
    }

    /// The attempts an operator's retry gives a job of kind `kind` (by its queue name): its
    /// kind's, afresh; one for a kind this build does not know.
    pub fn fresh_attempts(&self, kind: &str) -> i32 {
        Kind::parse(kind).map_or(1, |k| self.limits(k).max_attempts as i32)
    }

    /// Sizes the kinds marked `concurrency = "budget"` for a P100 budget of `max_rps` requests a
    /// second and P100's observed `latency`: enough jobs in flight to keep the budget busy
    /// (see [`budget_concurrency`]), never fewer than the kind's floor.
    pub fn size_by_budget(&mut self, max_rps: u32, latency: Duration) {
        for kind in Kind::ALL.iter().copied() {
            let mut limits = self.limits(kind);
            if limits.from_budget {
                limits.concurrency = budget_concurrency(max_rps, latency).max(limits.concurrency);
                self.kinds.insert(kind, limits);
            }
        }
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<ScheduleFile, ScheduleError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ScheduleError(format!("cannot read schedule file {}: {e}", path.display()))
        })?;
        ScheduleFile::parse(&text, &path.display().to_string())
    }

    /// Parses and validates file contents; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<ScheduleFile, ScheduleError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            match line {
                Some(line) => ScheduleError(format!("{name} line {line}: {}", e.message())),
                None => ScheduleError(format!("{name}: {}", e.message())),
            }
        })?;
        let line_of = |needle: &str| {
            text.find(needle)
                .map(|at| text[..at].matches('\n').count() + 1)
                .map(|l| format!(" line {l}"))
                .unwrap_or_default()
        };

        let mut kinds = BTreeMap::new();
        for (kind_name, raw_limits) in raw.kinds {
            let kind = Kind::parse(&kind_name).ok_or_else(|| {
                ScheduleError(format!(
                    "{name}{}: unknown job kind {kind_name:?} (known: {})",
                    line_of(&format!("[kinds.{kind_name}]")),
                    Kind::ALL
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            let defaults = kind.default_limits();
            let duration = |field: &str, value: Option<String>, default: Duration| match value {
                Some(t) => parse_duration(&t).map_err(|e| {
                    ScheduleError(format!(
                        "{name}{}: kinds.{kind_name}.{field}: {e}",
                        line_of(&format!("[kinds.{kind_name}]"))
                    ))
                }),
                None => Ok(default),
            };
            let limits = KindLimits {
                timeout: duration("timeout", raw_limits.timeout, defaults.timeout)?,
                max_attempts: raw_limits.max_attempts.unwrap_or(defaults.max_attempts),
                concurrency: match &raw_limits.concurrency {
                    Some(RawConcurrency::Fixed(n)) => *n,
                    _ => defaults.concurrency,
                },
                from_budget: match &raw_limits.concurrency {
                    None => defaults.from_budget,
                    Some(RawConcurrency::Fixed(_)) => false,
                    Some(RawConcurrency::Word(w)) if w == "budget" => true,
                    Some(RawConcurrency::Word(w)) => {
                        return Err(ScheduleError(format!(
                            "{name}{}: kinds.{kind_name}.concurrency: {w:?} is neither a number nor \"budget\"",
                            line_of(&format!("[kinds.{kind_name}]"))
                        )));
                    }
                },
                max_deferrals: raw_limits.max_deferrals.unwrap_or(defaults.max_deferrals),
                backoff_base: duration(
                    "backoff_base",
                    raw_limits.backoff_base,
                    defaults.backoff_base,
                )?,
                backoff_max: duration("backoff_max", raw_limits.backoff_max, defaults.backoff_max)?,
                poll_first: duration("poll_first", raw_limits.poll_first, defaults.poll_first)?,
                poll_max: duration("poll_max", raw_limits.poll_max, defaults.poll_max)?,
            };
            if limits.max_attempts == 0 || limits.concurrency == 0 {
                return Err(ScheduleError(format!(
                    "{name}{}: kinds.{kind_name}: max_attempts and concurrency must be at least 1",
                    line_of(&format!("[kinds.{kind_name}]"))
                )));
            }
            kinds.insert(kind, limits);
        }

        let mut schedules = Vec::new();
        for raw_entry in raw.schedules {
            let at = line_of(&format!("\"{}\"", raw_entry.name));
            let fail = |what: String| {
                ScheduleError(format!("{name}{at}: schedule {:?}: {what}", raw_entry.name))
            };
            let cron = cron::Schedule::from_str(&raw_entry.cron).map_err(|e| {
                fail(format!(
                    "invalid cron {:?}: {e} (six fields, seconds first: \"0 30 2 * * *\")",
                    raw_entry.cron
                ))
            })?;
            let timezone =
                Tz::from_str(raw_entry.timezone.as_deref().unwrap_or("UTC")).map_err(|_| {
                    fail(format!(
                        "unknown timezone {:?}",
                        raw_entry.timezone.clone().unwrap_or_default()
                    ))
                })?;
            let kind = Kind::parse(&raw_entry.kind)
                .ok_or_else(|| fail(format!("unknown job kind {:?}", raw_entry.kind)))?;
            let args = raw_entry
                .args
                .unwrap_or(serde_json::Value::Object(Default::default()));
            kind.validate_args(&args)
                .map_err(|e| fail(format!("args for {}: {e}", kind.name())))?;
            if schedules
                .iter()
                .any(|s: &ScheduleEntry| s.name == raw_entry.name)
            {
                return Err(fail("the name is used twice".to_owned()));
            }
            schedules.push(ScheduleEntry {
                name: raw_entry.name,
                cron_text: raw_entry.cron,
                cron,
                timezone,
                kind,
                args,
            });
        }
        Ok(ScheduleFile { kinds, schedules })
    }
}

/// The schedule file is unreadable or wrong; the message names the line and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    kinds: BTreeMap<String, RawLimits>,
    #[serde(default)]
    schedules: Vec<RawSchedule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout: Option<String>,
    max_attempts: Option<u32>,
    concurrency: Option<RawConcurrency>,
    max_deferrals: Option<u32>,
    backoff_base: Option<String>,
    backoff_max: Option<String>,
    poll_first: Option<String>,
    poll_max: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawConcurrency {
    Fixed(usize),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: String,
    cron: String,
    timezone: Option<String>,
    kind: String,
    args: Option<serde_json::Value>,
}

/// Time a history page costs besides P100's answer: planning and committing it (measured by
/// `bench ingest`: ~10k rows/s, so ~10 ms per 100-row page; doubled for a loaded database).
const PAGE_APPLY: Duration = Duration::from_millis(20);
/// Time a sync job costs besides its pages: claim, cursor read, end of run, acknowledgement
/// (four round trips to a busy database; `bench cycle` at 200 requests/s ran 9 % short of
/// the budget without it).
const JOB_OVERHEAD: Duration = Duration::from_millis(20);

/// Jobs that must be in flight so that sequential page reads keep a budget of `max_rps` busy:
/// a one-page job issues one request per `latency + PAGE_APPLY + JOB_OVERHEAD`, so `max_rps`
/// times that many jobs saturate the budget (Little's law); twice that absorbs latency spikes.
/// The rate limiter, not this number, keeps the requests under the budget.
pub fn budget_concurrency(max_rps: u32, latency: Duration) -> usize {
    let per_job = (latency + PAGE_APPLY + JOB_OVERHEAD).as_secs_f64();
    let needed = (f64::from(max_rps) * per_job * 2.0).ceil() as usize;
    needed.clamp(1, 512)
}

/// Parses `500ms`, `30s`, `5m`, `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 5m, 2h, 500ms"))?;
    let seconds_per = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unit must be ms, s, m or h"
            ));
        }
    };
    n.checked_mul(seconds_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {text:?}: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_schedule_file_is_valid() {
        let text = include_str!("../schedule.toml");
        ScheduleFile::parse(text, "jobs/schedule.toml").unwrap();
    }

    #[test]
    fn mistakes_name_the_line_and_the_reason() {
        let check = |text: &str, expected: &str| {
            let err = ScheduleFile::parse(text, "s.toml").unwrap_err().0;
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        };
        check(
            "[kinds.noop]\ntimeout = \"5 minutes\"\n",
            "line 1: kinds.noop.timeout",
        );
        check("[kinds.nope]\n", "unknown job kind \"nope\"");
        check(
            "[[schedules]]\nname = \"a\"\ncron = \"0 * * * *\"\nkind = \"noop\"\n",
            "line 2: schedule \"a\": invalid cron",
        );
        check(
            "[[schedules]]\nname = \"a\"\ncron = \"0 0 * * * *\"\ntimezone = \"Mars/Base\"\nkind = \"noop\"\n",
            "unknown timezone",
        );
        check("\n\n[kinds.noop]\nconcurency = 3\n", "line 4");
    }

    #[test]
    fn ticks_follow_the_timezone() {
        let file = ScheduleFile::parse(
            "[[schedules]]\nname = \"n\"\ncron = \"0 30 2 * * *\"\ntimezone = \"Europe/Berlin\"\nkind = \"noop\"\n",
            "s",
        )
        .unwrap();
        let s = &file.schedules[0];
        let after = DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            s.next_after(after).unwrap().to_rfc3339(),
            "2026-11-26T01:30:00+00:00"
        );
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            s.latest_at_or_before(after, now).unwrap().to_rfc3339(),
            "2026-11-28T01:30:00+00:00"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn budget_sized_concurrency_follows_the_rate_and_the_latency() {
        let file = ScheduleFile::parse(
            "[kinds.tx_sync]\nconcurrency = \"budget\"\n[kinds.kyc_poll]\nconcurrency = 3\n",
            "s",
        )
        .unwrap();
        let mut sized = file.clone();
        sized.size_by_budget(200, Duration::from_millis(80));
        // 200 requests/s × (80 ms + 20 ms + 20 ms) × 2 = 48 jobs in flight.
        assert_eq!(sized.limits(Kind::TxSync).concurrency, 48);
        assert_eq!(
            sized.limits(Kind::KycPoll).concurrency,
            3,
            "fixed stays fixed"
        );
        let mut slow = file.clone();
        slow.size_by_budget(10, Duration::from_millis(500));
        // 10 × (500 + 40 ms) × 2 = 10.8.
        assert_eq!(slow.limits(Kind::TxSync).concurrency, 11);
        let mut tiny = file;
        tiny.size_by_budget(1, Duration::from_millis(1));
        assert_eq!(
            tiny.limits(Kind::TxSync).concurrency,
            4,
            "never below the floor"
        );
        let err = ScheduleFile::parse("[kinds.tx_sync]\nconcurrency = \"lots\"\n", "s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither a number nor \"budget\""), "{err}");
    }
}
