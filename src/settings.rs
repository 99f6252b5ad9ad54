//! Configuration: flags over environment over `p100-recon.toml` over defaults.
//!
//! This is the only module that reads environment variables. Every value is parsed into its
//! real type when the process starts, so a bad value stops the process with one line naming
//! the setting and where it came from, never later inside a job.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// The login name of the person running a command (for event logs), or `operator`.
pub fn operator_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "operator".to_owned())
}

/// The default config file, read from the working directory when present.
pub const DEFAULT_CONFIG_FILE: &str = "p100-recon.toml";

/// A setting is missing or invalid; the message names it and says how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// Settings as they may appear in any one source, all optional. The TOML file uses these
/// names; environment variables use the upper-case names in [`ENV_NAMES`].
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// `DATABASE_URL`.
    pub database_url: Option<String>,
    /// `P100_BASE_URL`.
    pub p100_base_url: Option<String>,
    /// `P100_API_KEY` (environment or file only; never a flag, it would show in `ps`).
    pub p100_api_key: Option<String>,
    /// `P100_API_KEY_FILE`.
    pub p100_api_key_file: Option<String>,
    /// `P100_WEBHOOK_TOKEN`.
    pub p100_webhook_token: Option<String>,
    /// `P100_MAX_RPS`.
    pub p100_max_rps: Option<String>,
    /// `P100_CONNECT_TIMEOUT_MS`.
    pub p100_connect_timeout_ms: Option<String>,
    /// `P100_TIMEOUT_MS`.
    pub p100_timeout_ms: Option<String>,
    /// `REPORT_DIR`.
    pub report_dir: Option<String>,
    /// `HTTP_ADDR`.
    pub http_addr: Option<String>,
    /// `LOG_FORMAT`: `human` or `json`.
    pub log_format: Option<String>,
    /// `P100_PLAIN_HTTP_HOSTS`: hosts besides loopback that P100 may be reached at over plain
    /// http (comma-separated; a sandbox on a private container network).
    pub p100_plain_http_hosts: Option<String>,
    /// `P100_BUDGET`: `deployment` (every process on the database shares `P100_MAX_RPS`) or
    /// `process` (each process may send `P100_MAX_RPS` on its own).
    pub p100_budget: Option<String>,
    /// `CONSOLE_ADDR`: where the operator console listens.
    pub console_addr: Option<String>,
    /// `CONSOLE_TOKENS_FILE`: the console's sign-in tokens; the console is off without it.
    pub console_tokens_file: Option<String>,
}

/// Environment variable for each setting, in [`RawSettings`] field order.
pub const ENV_NAMES: [&str; 15] = [
    "DATABASE_URL",
    "P100_BASE_URL",
    "P100_API_KEY",
    "P100_API_KEY_FILE",
    "P100_WEBHOOK_TOKEN",
    "P100_MAX_RPS",
    "P100_CONNECT_TIMEOUT_MS",
    "P100_TIMEOUT_MS",
    "REPORT_DIR",
    "HTTP_ADDR",
    "LOG_FORMAT",
    "P100_PLAIN_HTTP_HOSTS",
    "P100_BUDGET",
    "CONSOLE_ADDR",
    "CONSOLE_TOKENS_FILE",
];

impl RawSettings {
    fn fields_mut(&mut self) -> [&mut Option<String>; 15] {
        [
            &mut self.database_url,
            &mut self.p100_base_url,
            &mut self.p100_api_key,
            &mut self.p100_api_key_file,
            &mut self.p100_webhook_token,
            &mut self.p100_max_rps,
            &mut self.p100_connect_timeout_ms,
            &mut self.p100_timeout_ms,
            &mut self.report_dir,
            &mut self.http_addr,
            &mut self.log_format,
            &mut self.p100_plain_http_hosts,
            &mut self.p100_budget,
            &mut self.console_addr,
            &mut self.console_tokens_file,
        ]
    }

    /// Reads the known variables from an environment snapshot; empty values count as unset.
    pub fn from_env(env: &BTreeMap<String, String>) -> RawSettings {
        let mut raw = RawSettings::default();
        for (slot, name) in raw.fields_mut().into_iter().zip(ENV_NAMES) {
            *slot = env.get(name).filter(|v| !v.trim().is_empty()).cloned();
        }
        raw
    }

    /// Reads a TOML file; errors name the file, line and reason.
    pub fn from_file(path: &Path) -> Result<RawSettings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SettingsError(format!("cannot read config file {}: {e}", path.display()))
        })?;
        toml::from_str(&text).map_err(|e| {
            let reason = e.message();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start].matches('\n').count() + 1;
                    SettingsError(format!(
                        "invalid config file {} line {line}: {reason}",
                        path.display()
                    ))
                }
                None => SettingsError(format!("invalid config file {}: {reason}", path.display())),
            }
        })
    }

    /// `self` where set, else `lower`.
    pub fn over(mut self, mut lower: RawSettings) -> RawSettings {
        for (mine, theirs) in self.fields_mut().into_iter().zip(lower.fields_mut()) {
            if mine.is_none() {
                *mine = theirs.take();
            }
        }
        self
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Where the P100 API key comes from.
#[derive(Clone)]
pub enum ApiKeySource {
    /// No key configured (the demo then starts the sandbox).
    None,
    /// The key itself (from `P100_API_KEY`).
    Value(p100::ApiKey),
    /// A file holding the key (from `P100_API_KEY_FILE`), read at start.
    File(PathBuf),
}

/// Validated settings.
#[derive(Clone)]
pub struct Settings {
    /// Postgres URL; required by commands that touch the database.
    pub database_url: Option<String>,
    /// P100 base URL (default: staging).
    pub p100_base_url: Url,
    /// True when `P100_BASE_URL` was given explicitly.
    pub p100_base_url_explicit: bool,
    /// P100 API key, already read if it came from a file.
    pub p100_api_key: Option<p100::ApiKey>,
    /// Token P100 sends with webhooks.
    pub p100_webhook_token: Option<secrecy::SecretString>,
    /// The P100 request budget (per deployment or per process, see `p100_budget`).
    pub p100_max_rps: NonZeroU32,
    /// How the budget is shared.
    pub p100_budget: crate::budget::Mode,
    /// Connect timeout towards P100.
    pub p100_connect_timeout: Duration,
    /// Whole-request timeout towards P100.
    pub p100_timeout: Duration,
    /// Where reports are written.
    pub report_dir: PathBuf,
    /// Address of the daemon's HTTP endpoint.
    pub http_addr: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// `NO_COLOR` is set (to anything non-empty, as no-color.org says): never colour logs.
    pub no_color: bool,
    /// Hosts besides loopback P100 may be reached at over plain http.
    pub p100_plain_http_hosts: Vec<String>,
    /// Where the operator console listens (default loopback only).
    pub console_addr: SocketAddr,
    /// The console's tokens file; the console is off when unset.
    pub console_tokens_file: Option<PathBuf>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("p100_base_url", &self.p100_base_url.as_str())
            .field("p100_api_key", &self.p100_api_key)
            .field(
                "p100_webhook_token",
                &self.p100_webhook_token.as_ref().map(|_| "[redacted]"),
            )
            .field("p100_max_rps", &self.p100_max_rps)
            .field("p100_budget", &self.p100_budget)
            .field("report_dir", &self.report_dir)
            .field("http_addr", &self.http_addr)
            .field("console_addr", &self.console_addr)
            .field("console_tokens_file", &self.console_tokens_file)
            .finish_non_exhaustive()
    }
}

/// Hides the secrets of a database URL: the `user:password@` part and any query parameter
/// that carries one (`?password=`, `sslpassword=`). A URL that does not parse is not shown.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return "(unparseable URL, not shown)".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("redacted"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let secret = k.to_ascii_lowercase().contains("password");
                (
                    k.into_owned(),
                    if secret {
                        "redacted".to_owned()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Where a value came from, for error messages.
fn origin(
    name: &str,
    flags: &RawSettings,
    env: &RawSettings,
    pick: fn(&RawSettings) -> &Option<String>,
) -> String {
    if pick(flags).is_some() {
        format!("--{}", name.to_ascii_lowercase().replace('_', "-"))
    } else if pick(env).is_some() {
        name.to_owned()
    } else {
        format!("{} in the config file", name.to_ascii_lowercase())
    }
}

impl Settings {
    /// Loads settings from the real environment and the config file.
    pub fn load(flags: RawSettings, config_file: Option<&Path>) -> Result<Settings, SettingsError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Settings::resolve(flags, &env, config_file)
    }

    /// Merges the sources and validates. `config_file` given explicitly must exist; otherwise
    /// `p100-recon.toml` is read only if present.
    pub fn resolve(
        flags: RawSettings,
        env: &BTreeMap<String, String>,
        config_file: Option<&Path>,
    ) -> Result<Settings, SettingsError> {
        let env_raw = RawSettings::from_env(env);
        let file_raw = match config_file {
            Some(path) => RawSettings::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                RawSettings::from_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => RawSettings::default(),
        };
        let merged = flags.clone().over(env_raw.clone()).over(file_raw);
        let from = |name: &str, pick: fn(&RawSettings) -> &Option<String>| {
            origin(name, &flags, &env_raw, pick)
        };

        let p100_base_url_explicit = merged.p100_base_url.is_some();
        let p100_base_url = match &merged.p100_base_url {
            Some(text) => parse_url(text).map_err(|e| {
                SettingsError(format!(
                    "invalid P100 base URL {text:?} (from {}): {e}; use e.g. {}",
                    from("P100_BASE_URL", |r| &r.p100_base_url),
                    p100::STAGING_URL
                ))
            })?,
            None => Url::parse(p100::STAGING_URL).expect("the staging URL is valid"),
        };

        if let Some(db) = &merged.database_url {
            let parsed = Url::parse(db).map_err(|e| {
                SettingsError(format!(
                    "invalid DATABASE_URL (from {}): {e}; expected postgres://user@host:port/db",
                    from("DATABASE_URL", |r| &r.database_url)
                ))
            })?;
            if !matches!(parsed.scheme(), "postgres" | "postgresql") {
                return Err(SettingsError(format!(
                    "invalid DATABASE_URL (from {}): scheme {:?} is not postgres://",
                    from("DATABASE_URL", |r| &r.database_url),
                    parsed.scheme()
                )));
            }
        }

        let p100_api_key = match (&merged.p100_api_key, &merged.p100_api_key_file) {
            (Some(_), Some(_)) => {
                return Err(SettingsError(
                    "both P100_API_KEY and P100_API_KEY_FILE are set; set only one".to_owned(),
                ));
            }
            (Some(key), None) => Some(p100::ApiKey::new(key)),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    SettingsError(format!("cannot read P100_API_KEY_FILE {path}: {e}"))
                })?;
                let key = p100::ApiKey::new(&text);
                if key.is_empty() {
                    return Err(SettingsError(format!("P100_API_KEY_FILE {path} is empty")));
                }
                Some(key)
            }
            (None, None) => None,
        };

        // An empty token would accept an empty `Authorization` header: refuse it at start.
        let p100_webhook_token = match merged.p100_webhook_token.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(SettingsError(format!(
                    "P100_WEBHOOK_TOKEN (from {}) is empty; unset it to turn webhooks off",
                    from("P100_WEBHOOK_TOKEN", |r| &r.p100_webhook_token)
                )));
            }
            Some(token) => Some(secrecy::SecretString::from(token.to_owned())),
        };

        let p100_max_rps = parse_positive(&merged.p100_max_rps, 10, || {
            from("P100_MAX_RPS", |r| &r.p100_max_rps)
        })?;
        let p100_budget = match &merged.p100_budget {
            None => crate::budget::Mode::Deployment,
            Some(text) => crate::budget::Mode::parse(text).ok_or_else(|| {
                SettingsError(format!(
                    "invalid P100_BUDGET {text:?} (from {}): expected deployment or process",
                    from("P100_BUDGET", |r| &r.p100_budget)
                ))
            })?,
        };
        let connect_ms = parse_positive(&merged.p100_connect_timeout_ms, 5_000, || {
            from("P100_CONNECT_TIMEOUT_MS", |r| &r.p100_connect_timeout_ms)
        })?;
        let timeout_ms = parse_positive(&merged.p100_timeout_ms, 30_000, || {
            from("P100_TIMEOUT_MS", |r| &r.p100_timeout_ms)
        })?;

        let http_addr = match &merged.http_addr {
            Some(text) => text.parse::<SocketAddr>().map_err(|_| {
                SettingsError(format!(
                    "invalid HTTP_ADDR {text:?} (from {}): expected host:port, e.g. 127.0.0.1:8080",
                    from("HTTP_ADDR", |r| &r.http_addr)
                ))
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };

        let console_addr = match &merged.console_addr {
            Some(text) => text.parse::<SocketAddr>().map_err(|_| {
                SettingsError(format!(
                    "invalid CONSOLE_ADDR {text:?} (from {}): expected host:port, e.g. 127.0.0.1:8081",
                    from("CONSOLE_ADDR", |r| &r.console_addr)
                ))
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8081)),
        };

        let log_format = match merged
            .log_format
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(SettingsError(format!(
                    "invalid LOG_FORMAT {other:?} (from {}): use human or json",
                    from("LOG_FORMAT", |r| &r.log_format)
                )));
            }
        };

        Ok(Settings {
            database_url: merged.database_url,
            p100_base_url,
            p100_base_url_explicit,
            p100_api_key,
            p100_webhook_token,
            p100_max_rps: NonZeroU32::new(p100_max_rps as u32).expect("parse_positive rejects 0"),
            p100_budget,
            p100_connect_timeout: Duration::from_millis(connect_ms),
            p100_timeout: Duration::from_millis(timeout_ms),
            report_dir: PathBuf::from(merged.report_dir.unwrap_or_else(|| "reports".to_owned())),
            http_addr,
            log_format,
            no_color: env.get("NO_COLOR").is_some_and(|v| !v.is_empty()),
            p100_plain_http_hosts: merged
                .p100_plain_http_hosts
                .iter()
                .flat_map(|hosts| hosts.split(','))
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
            console_addr,
            console_tokens_file: merged.console_tokens_file.map(PathBuf::from),
        })
    }

    /// The database URL, or the error a command needing it should stop with.
    pub fn require_database_url(&self) -> Result<&str, SettingsError> {
        self.database_url.as_deref().ok_or_else(|| {
            SettingsError(
                "DATABASE_URL is not set; set it (e.g. postgres://postgres@127.0.0.1:5432/postgres) or run scripts/ensure-postgres".to_owned(),
            )
        })
    }

    /// Client configuration for P100 with the given base URL and key.
    pub fn p100_config(&self, base_url: Url, api_key: p100::ApiKey) -> p100::Config {
        let mut config = p100::Config::new(base_url, api_key);
        config.max_rps = self.p100_max_rps;
        config.connect_timeout = self.p100_connect_timeout;
        config.request_timeout = self.p100_timeout;
        config.plain_http_hosts = self.p100_plain_http_hosts.clone();
        config
    }

    /// A client for the configured P100, or the error a command needing it should stop with.
    pub fn p100_client(&self) -> Result<p100::Client, SettingsError> {
        let key = self.p100_api_key.clone().ok_or_else(|| {
            SettingsError("no P100 API key: set P100_API_KEY or P100_API_KEY_FILE".to_owned())
        })?;
        p100::Client::new(self.p100_config(self.p100_base_url.clone(), key))
            .map_err(|e| SettingsError(e.to_string()))
    }
}

fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL; use P100_API_KEY".to_owned());
    }
    Ok(url)
}

fn parse_positive(
    value: &Option<String>,
    default: u64,
    origin: impl Fn() -> String,
) -> Result<u64, SettingsError> {
    match value {
        None => Ok(default),
        Some(text) => match text.trim().parse::<u64>() {
            Ok(n) if n > 0 && n <= u64::from(u32::MAX) => Ok(n),
            _ => Err(SettingsError(format!(
                "invalid {} {text:?}: expected a positive whole number",
                origin()
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn resolve(
        flags: RawSettings,
        pairs: &[(&str, &str)],
        file: Option<&Path>,
    ) -> Result<Settings, SettingsError> {
        Settings::resolve(flags, &env(pairs), file)
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = resolve(RawSettings::default(), &[], None).unwrap();
        assert_eq!(s.p100_max_rps.get(), 10);
        assert_eq!(
            s.p100_base_url.as_str(),
            "https://partner-api-stage.p100.io/"
        );
        assert!(s.p100_api_key.is_none());
        assert_eq!(s.log_format, LogFormat::Human);
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        let dir = std::env::temp_dir().join(format!("p100-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p100-recon.toml");
        std::fs::write(
            &file,
            "p100_max_rps = \"3\"\nreport_dir = \"from-file\"\nhttp_addr = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let flags = RawSettings {
            p100_max_rps: Some("7".into()),
            ..RawSettings::default()
        };
        let s = resolve(
            flags,
            &[("P100_MAX_RPS", "5"), ("REPORT_DIR", "from-env")],
            Some(&file),
        )
        .unwrap();
        assert_eq!(s.p100_max_rps.get(), 7);
        assert_eq!(s.report_dir, PathBuf::from("from-env"));
        assert_eq!(s.http_addr.port(), 9);
    }

    #[test]
    fn a_bad_value_names_the_setting_and_its_source() {
        let err = resolve(RawSettings::default(), &[("P100_MAX_RPS", "ten")], None)
            .err()
            .unwrap()
            .0;
        assert_eq!(
            err,
            "invalid P100_MAX_RPS \"ten\": expected a positive whole number"
        );
        let err = resolve(RawSettings::default(), &[("P100_MAX_RPS", "0")], None)
            .err()
            .unwrap()
            .0;
        assert!(err.contains("P100_MAX_RPS"), "{err}");
        let flags = RawSettings {
            http_addr: Some("nowhere".into()),
            ..RawSettings::default()
        };
        let err = resolve(flags, &[], None).err().unwrap().0;
        assert!(err.contains("--http-addr"), "{err}");
        let err = resolve(
            RawSettings::default(),
            &[("DATABASE_URL", "mysql://x")],
            None,
        )
        .err()
        .unwrap()
        .0;
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn a_malformed_config_file_names_the_line() {
        let dir = std::env::temp_dir().join(format!("p100-settings-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "report_dir = \"x\"\nmax_rps = 3\n").unwrap();
        let err = resolve(RawSettings::default(), &[], Some(&file))
            .err()
            .unwrap()
            .0;
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("max_rps"), "{err}");
    }

    #[test]
    fn the_api_key_comes_from_a_file_and_never_shows_in_debug_output() {
        let dir = std::env::temp_dir().join(format!("p100-settings-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("key");
        std::fs::write(&key_file, "s3cret-key-value\n").unwrap();
        let s = resolve(
            RawSettings::default(),
            &[("P100_API_KEY_FILE", key_file.to_str().unwrap())],
            None,
        )
        .unwrap();
        assert!(s.p100_api_key.is_some());
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let both = resolve(
            RawSettings::default(),
            &[
                ("P100_API_KEY", "a"),
                ("P100_API_KEY_FILE", key_file.to_str().unwrap()),
            ],
            None,
        );
        assert!(both.is_err());
    }
}
