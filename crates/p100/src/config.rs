//! What the client needs to know, and nothing about where it came from.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// P100's staging base URL (`p100-api/overview.md` §2).
pub const STAGING_URL: &str = "https://partner-api-stage.p100.io";
/// P100's production base URL.
pub const PRODUCTION_URL: &str = "https://partner-api.p100.io";

/// The partner API key. `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Wraps a key; surrounding whitespace (a trailing newline in a key file) is removed.
    pub fn new(key: &str) -> ApiKey {
        ApiKey(SecretString::from(key.trim().to_owned()))
    }

    /// The key itself; call only where it is actually sent or served.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether the key is empty (a configuration error).
    pub fn is_empty(&self) -> bool {
        self.0.expose_secret().is_empty()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Client configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// e.g. [`STAGING_URL`] or a sandbox's `http://127.0.0.1:port`.
    pub base_url: Url,
    /// Sent as `x-api-key`.
    pub api_key: ApiKey,
    /// Client-side limit on requests per second, shared by every clone of the client.
    pub max_rps: NonZeroU32,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for a whole request, from sending to the last byte of the answer.
    pub request_timeout: Duration,
    /// Longest `Retry-After` the client will honour by pausing (longer values are capped;
    /// the error still carries P100's value).
    pub max_retry_after: Duration,
    /// Hosts besides loopback the key may be sent to over plain `http://` (a sandbox on a
    /// private container network). Empty by default: anything else needs `https://`.
    pub plain_http_hosts: Vec<String>,
}

impl Config {
    /// A configuration with the project's defaults: 10 requests/s, 5 s connect, 30 s request.
    pub fn new(base_url: Url, api_key: ApiKey) -> Config {
        Config {
            base_url,
            api_key,
            max_rps: NonZeroU32::new(10).expect("10 is not zero"),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            plain_http_hosts: Vec::new(),
        }
    }
}
