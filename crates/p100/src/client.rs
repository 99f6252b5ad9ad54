//! The HTTP client: one `reqwest::Client`, one rate limiter, one place that turns answers
//! into values or classified errors.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::Stream;
use reqwest::{Method, StatusCode, header};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

use crate::amount::Currency;
use crate::config::Config;
use crate::error::{Error, ErrorClass, Failure, classify};
use crate::lane::Lane;
use crate::model::{
    Balances, CreateExchange, ErrorBody, ExchangeCreated, ExchangeDetails, ExchangeLock,
    KycStatusResponse, SepaTransfer, TransactionPage,
};
use crate::paths::{self, PathSpec, Scope};
use crate::text::clean_text;

/// Header P100 reads the key from; the docs insist on this lowercase spelling.
const API_KEY_HEADER: &str = "x-api-key";
/// Our correlation id, sent on every request and recorded on every error and log line.
const REQUEST_ID_HEADER: &str = "x-request-id";
/// A request that waited at least this long for its slot counts as having waited.
const WAITED: Duration = Duration::from_millis(1);
/// Pause used after a 429 that carries no `Retry-After`.
const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// Largest success body read (a full history page is about 60 KB); a longer one is refused
/// unread rather than held in memory.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Largest error body read (beyond it the body is cut, and a cut JSON body loses its code):
/// an error needs a code and a sentence, but a long message must not cost the code.
const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;

/// Filter and page size for transaction history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Rows updated at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Rows updated at or before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Rows per page, 1..=100 (P100's assumed maximum).
    pub size: u32,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        HistoryQuery {
            from: None,
            to: None,
            size: MAX_PAGE_SIZE,
        }
    }
}

/// The largest page P100 is assumed to serve (SPEC §8).
pub const MAX_PAGE_SIZE: u32 = 100;

/// Could not build the client (bad TLS setup, nonsensical configuration).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// reqwest refused the configuration.
    #[error("cannot build the P100 HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The key is empty.
    #[error("the P100 API key is empty")]
    EmptyKey,
    /// The base URL cannot carry a path.
    #[error("P100 base URL {0} cannot be used as a base")]
    BadBaseUrl(String),
    /// The key would travel in clear text.
    #[error(
        "P100 base URL {0} is plain http to a host that is not loopback: the API key would \
         travel in clear text; use https:// (or list a private sandbox host in P100_PLAIN_HTTP_HOSTS)"
    )]
    PlainHttp(String),
}

/// Whether the key may be sent to this URL: https anywhere, plain http only to loopback or a
/// host listed explicitly.
fn transport_is_safe(url: &url::Url, plain_http_hosts: &[String]) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => {
                name.eq_ignore_ascii_case("localhost")
                    || plain_http_hosts
                        .iter()
                        .any(|h| h.eq_ignore_ascii_case(name))
            }
            None => false,
        },
        _ => false,
    }
}

/// A P100 Partner API client. Cheap to clone; clones share the connection pool, the rate
/// limiter and any `Retry-After` pause, so the limit holds for the whole process.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: Config,
    limiter: crate::rate::RateLimit,
    /// The end of the latest pause a 429 asked for, in wall-clock time (for whoever shares
    /// the budget with other processes: they must pause too).
    rate_limited: tokio::sync::watch::Sender<Option<SystemTime>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.config.base_url.as_str())
            .field("max_rps", &self.inner.config.max_rps)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client. The limiter ([`crate::rate`]) never lets more than `max_rps` requests
    /// into any one-second window, and never sends a burst.
    pub fn new(config: Config) -> Result<Client, BuildError> {
        if config.api_key.is_empty() {
            return Err(BuildError::EmptyKey);
        }
        if config.base_url.cannot_be_a_base() {
            return Err(BuildError::BadBaseUrl(config.base_url.to_string()));
        }
        if !transport_is_safe(&config.base_url, &config.plain_http_hosts) {
            return Err(BuildError::PlainHttp(config.base_url.to_string()));
        }
        // No redirect is followed: one would carry `x-api-key` to wherever it points (reqwest
        // strips only `Authorization` across hosts), could downgrade to http, and would replay
        // a POST (a second exchange). A 3xx is an error with the `Location` it named.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("p100-recon/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                limiter: crate::rate::RateLimit::new(config.max_rps.get()),
                rate_limited: tokio::sync::watch::Sender::new(None),
                config,
            }),
        })
    }

    /// The configured base URL.
    pub fn base_url(&self) -> &url::Url {
        &self.inner.config.base_url
    }

    /// The request budget (`P100_MAX_RPS`): requests per second of the whole deployment.
    pub fn max_rps(&self) -> u32 {
        self.inner.config.max_rps.get()
    }

    /// Requests per second this process may send now: the whole budget until
    /// [`Client::set_share`] says otherwise.
    pub fn share(&self) -> u32 {
        self.inner.limiter.rate()
    }

    /// Sets this process's share of the budget (0: no request leaves until a share arrives).
    /// Never above the budget.
    pub fn set_share(&self, rps: u32) {
        let rps = rps.min(self.max_rps());
        self.inner.limiter.set_rate(rps);
        metrics::gauge!("p100_budget_share_rps").set(f64::from(rps));
    }

    /// Since the previous call: whether requests had to wait for this process's share (it
    /// wants more), and the requests per second it sent.
    pub fn take_demand(&self) -> (bool, f64) {
        self.inner.limiter.take_demand()
    }

    /// Holds every request of this process for `delay` (capped like a `Retry-After`): how a
    /// 429 seen by another process sharing the budget reaches this one.
    pub fn hold_off(&self, delay: Duration) {
        let delay = delay.min(self.inner.config.max_retry_after);
        self.inner
            .limiter
            .pause_until(tokio::time::Instant::now() + delay);
    }

    /// Changes to the end of the latest pause a 429 asked of this process (wall-clock time).
    pub fn rate_limited(&self) -> tokio::sync::watch::Receiver<Option<SystemTime>> {
        self.inner.rate_limited.subscribe()
    }

    /// `GET /v1/kyc/status/{externalUserId}`.
    pub async fn kyc_status(&self, external_user_id: &str) -> Result<KycStatusResponse, Error> {
        self.get(paths::kyc_status(external_user_id), &[]).await
    }

    /// Balances of the partner or of one user.
    pub async fn balances(&self, scope: &Scope) -> Result<Balances, Error> {
        self.get(paths::balances(scope), &[]).await
    }

    /// One page of transaction history (pages count from 1).
    pub async fn transactions_page(
        &self,
        scope: &Scope,
        query: &HistoryQuery,
        page: u32,
    ) -> Result<TransactionPage, Error> {
        let mut params = vec![("page", page.to_string()), ("size", query.size.to_string())];
        if let Some(from) = query.from {
            params.push(("from", from.to_rfc3339_opts(SecondsFormat::Millis, true)));
        }
        if let Some(to) = query.to {
            params.push(("to", to.to_rfc3339_opts(SecondsFormat::Millis, true)));
        }
        self.get(paths::transactions(scope), &params).await
    }

    /// All pages of a history query, one at a time: memory stays at one page whatever the
    /// history's length. The stream ends after the last page or at the first error.
    pub fn transaction_pages(
        &self,
        scope: Scope,
        query: HistoryQuery,
    ) -> impl Stream<Item = Result<TransactionPage, Error>> + Send + 'static {
        let client = self.clone();
        futures::stream::try_unfold(Some(1u32), move |next| {
            let client = client.clone();
            let scope = scope.clone();
            let query = query.clone();
            async move {
                let Some(page_no) = next else {
                    return Ok(None);
                };
                let page = client.transactions_page(&scope, &query, page_no).await?;
                let last = page.is_last(page_no, query.size);
                Ok(Some((page, if last { None } else { Some(page_no + 1) })))
            }
        })
    }

    /// `GET /v1/partner/exchange/lock` (assumed path and query, SPEC §8).
    pub async fn exchange_lock(
        &self,
        from: &Currency,
        to: &Currency,
        amount: Decimal,
    ) -> Result<ExchangeLock, Error> {
        let params = [
            ("currencyFrom", from.to_string()),
            ("currencyTo", to.to_string()),
            ("amount", amount.normalize().to_string()),
        ];
        self.get(paths::exchange_lock(), &params).await
    }

    /// `POST /v1/partner/exchange`: executes a locked exchange. P100 has no idempotency key
    /// for it; a failure classed [`ErrorClass::UnknownOutcome`] means it may have happened.
    pub async fn create_exchange(&self, body: &CreateExchange) -> Result<ExchangeCreated, Error> {
        let spec = paths::exchange_create();
        let bytes = serde_json::to_vec(body).map_err(|e| {
            self.local_error(
                "POST",
                &spec,
                Failure::Decode(format!("cannot encode request: {e}")),
            )
        })?;
        self.call(Method::POST, spec, &[], Some(bytes)).await
    }

    /// `GET /v1/partner/exchange/{exchangeId}` (assumed path, SPEC §8).
    pub async fn exchange_details(&self, exchange_id: &str) -> Result<ExchangeDetails, Error> {
        self.get(paths::exchange_details(exchange_id), &[]).await
    }

    /// `GET /v1/sepa-transfer/details/{transferId}`.
    pub async fn sepa_transfer(&self, transfer_id: &str) -> Result<SepaTransfer, Error> {
        self.get(paths::sepa_transfer(transfer_id), &[]).await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        spec: PathSpec,
        query: &[(&str, String)],
    ) -> Result<T, Error> {
        self.call(Method::GET, spec, query, None).await
    }

    fn url_for(&self, spec: &PathSpec) -> url::Url {
        let mut url = self.inner.config.base_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(&spec.segments);
        }
        url
    }

    fn local_error(&self, method: &'static str, spec: &PathSpec, failure: Failure) -> Error {
        let class = classify(method != "GET", &failure, None, None);
        Error {
            method,
            path: self.url_for(spec).path().to_owned(),
            request_id: String::new(),
            status: None,
            code: None,
            name: None,
            message: None,
            retry_after: None,
            failure,
            class,
        }
    }

    /// Waits for a slot in the request's lane; records the lane's admissions and wait.
    async fn wait_for_turn(&self, spec: &PathSpec) {
        let lane = Lane::current(spec.lane);
        let waited = self.inner.limiter.until_ready(lane).await;
        metrics::counter!("p100_budget_admitted_total", "lane" => lane.as_str()).increment(1);
        metrics::histogram!("p100_budget_wait_seconds", "lane" => lane.as_str())
            .record(waited.as_secs_f64());
        if waited >= WAITED {
            metrics::counter!("p100_budget_waited_total", "lane" => lane.as_str()).increment(1);
        }
    }

    /// A 429: this process pauses, and says so to whoever shares the budget.
    fn pause_for(&self, delay: Duration) {
        let delay = delay.min(self.inner.config.max_retry_after);
        self.hold_off(delay);
        let until = SystemTime::now() + delay;
        self.inner
            .rate_limited
            .send_if_modified(|latest| match latest {
                Some(t) if *t >= until => false,
                _ => {
                    *latest = Some(until);
                    true
                }
            });
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        spec: PathSpec,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let method_name: &'static str = if method == Method::POST {
            "POST"
        } else {
            "GET"
        };
        // Ids are percent-encoded as one segment each, but `.` and `..` would still be resolved
        // as path steps (`--user ..` asked for the partner's own balances): never sent.
        if let Some(dot) = spec.segments.iter().find(|s| *s == "." || *s == "..") {
            let failure = Failure::Refused(format!("{dot:?} is not an id"));
            return Err(self.local_error(method_name, &spec, failure));
        }
        self.wait_for_turn(&spec).await;
        let is_write = method != Method::GET;
        let url = self.url_for(&spec);
        let path = url.path().to_owned();
        let mut request_id = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();

        let mut request = self
            .inner
            .http
            .request(method, url)
            .header(API_KEY_HEADER, self.inner.config.api_key.expose_secret())
            .header(REQUEST_ID_HEADER, &request_id)
            .header(header::ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(bytes) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }

        let fail = |failure: Failure,
                    status: Option<StatusCode>,
                    body: ErrorBody,
                    retry_after: Option<Duration>,
                    request_id: &str| {
            // P100's text reaches logs, terminals and the jobs table: bounded and without
            // control characters, so it can neither flood nor forge a line.
            let code = body
                .error_code
                .map(|c| clean_text(&c))
                .filter(|c| !c.is_empty());
            let class = classify(is_write, &failure, status, code.as_deref());
            Error {
                method: method_name,
                path: path.clone(),
                request_id: request_id.to_owned(),
                status,
                code,
                name: body.error_name.map(|n| clean_text(&n)),
                message: body.error_message.or(body.message).map(|m| clean_text(&m)),
                retry_after,
                failure,
                class,
            }
        };

        let outcome = async {
            crate::calls::record();
            let response = request.send().await.map_err(|e| {
                fail(
                    transport_failure(&e),
                    None,
                    ErrorBody::default(),
                    None,
                    &request_id,
                )
            })?;
            let status = response.status();
            if let Some(theirs) = response
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                request_id = clean_text(theirs);
            }
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let location = response
                .headers()
                .get(header::LOCATION)
                .map(|v| clean_text(&String::from_utf8_lossy(v.as_bytes())));
            let limit = if status.is_success() {
                BodyLimit::Refuse(MAX_BODY_BYTES)
            } else {
                BodyLimit::Truncate(MAX_ERROR_BODY_BYTES)
            };
            let bytes = read_body(response, limit).await.map_err(|failure| {
                fail(
                    failure,
                    Some(status),
                    ErrorBody::default(),
                    None,
                    &request_id,
                )
            })?;
            if status.is_redirection() {
                let body = ErrorBody {
                    message: Some(format!(
                        "redirect to {} not followed",
                        location.as_deref().unwrap_or("(no Location)")
                    )),
                    ..ErrorBody::default()
                };
                return Err(fail(Failure::Http, Some(status), body, None, &request_id));
            }
            if status.is_success() {
                return serde_json::from_slice::<T>(&bytes).map_err(|e| {
                    fail(
                        Failure::Decode(clean_text(&e.to_string())),
                        Some(status),
                        ErrorBody::default(),
                        None,
                        &request_id,
                    )
                });
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.pause_for(retry_after.unwrap_or(DEFAULT_RATE_LIMIT_PAUSE));
            }
            Err(fail(
                Failure::Http,
                Some(status),
                error_body(&bytes),
                retry_after,
                &request_id,
            ))
        }
        .await;

        let elapsed = started.elapsed();
        record(
            spec.endpoint,
            &path,
            &request_id,
            elapsed,
            outcome.as_ref().err(),
        );
        outcome
    }
}

fn transport_failure(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_connect() {
        Failure::Connect
    } else {
        // reqwest names the URL, never headers, so the key cannot appear here.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        Failure::Transport(text)
    }
}

fn error_body(bytes: &[u8]) -> ErrorBody {
    serde_json::from_slice::<ErrorBody>(bytes).unwrap_or_else(|_| {
        let text = clean_text(&String::from_utf8_lossy(bytes));
        ErrorBody {
            message: (!text.is_empty()).then_some(text),
            ..ErrorBody::default()
        }
    })
}

/// What to do with a body longer than its limit.
#[derive(Clone, Copy)]
enum BodyLimit {
    /// A value that long is not one P100 sends: a failure, never a bigger allocation.
    Refuse(usize),
    /// An error body: its beginning says enough.
    Truncate(usize),
}

/// Reads a body, never holding more than its limit.
async fn read_body(mut response: reqwest::Response, limit: BodyLimit) -> Result<Vec<u8>, Failure> {
    let max = match limit {
        BodyLimit::Refuse(n) | BodyLimit::Truncate(n) => n,
    };
    let too_long = || Failure::Decode(format!("response body is over the {max}-byte limit"));
    if let (BodyLimit::Refuse(_), Some(len)) = (limit, response.content_length())
        && len > max as u64
    {
        return Err(too_long());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_failure(&e))? {
        if bytes.len() + chunk.len() > max {
            if let BodyLimit::Truncate(_) = limit {
                bytes.extend_from_slice(&chunk[..max - bytes.len()]);
                break;
            }
            return Err(too_long());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// One debug line and the metrics for every call; failures are logged by whoever handles them.
fn record(
    endpoint: &'static str,
    path: &str,
    request_id: &str,
    elapsed: Duration,
    error: Option<&Error>,
) {
    let span = tracing::Span::current();
    span.record("p100.request_id", request_id);
    let duration_ms = elapsed.as_millis() as u64;
    let (outcome, status, code) = match error {
        None => ("ok", "200".to_owned(), String::new()),
        Some(e) => (
            e.class.as_str(),
            e.status
                .map(|s| s.as_u16().to_string())
                .unwrap_or_else(|| "none".to_owned()),
            e.code.clone().unwrap_or_default(),
        ),
    };
    tracing::debug!(
        p100.endpoint = endpoint,
        p100.path = path,
        p100.request_id = request_id,
        http.status = %status,
        p100.code = %code,
        duration_ms,
        outcome,
        "P100 {endpoint} answered {status} in {duration_ms} ms"
    );
    metrics::histogram!("p100_request_duration_seconds", "endpoint" => endpoint, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
    if let Some(e) = error {
        metrics::counter!(
            "p100_errors_total",
            "endpoint" => endpoint,
            "class" => e.class.as_str(),
            "code" => code,
        )
        .increment(1);
    }
}

impl ErrorClass {
    /// Whether this class means the caller may simply call again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient)
    }
}
