//! The scenario: the sandbox's starting state, written in TOML or built in code.
//!
//! Every struct here derives `Deserialize` (TOML file, control endpoints' JSON) and `Default`
//! (so tests can write `Scenario { users: vec![..], ..Default::default() }`). Field names are
//! snake_case in both TOML and control JSON. Amounts are decimal strings (`"12.50"`); a JSON
//! number is accepted too. Timestamps are RFC 3339 strings. The README documents the format
//! with a complete example (`scenarios/example.toml`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::faults::Fault;
use crate::generator::GeneratorConfig;

/// Everything the sandbox starts with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// API key clients must send in `x-api-key` (default `sandbox-key`).
    pub api_key: Option<String>,
    /// The partner's own balances and history.
    pub partner: PartnerSpec,
    /// End users, keyed by `external_user_id`.
    pub users: Vec<UserSpec>,
    /// Outgoing SEPA transfers that already exist (or are in flight) at start.
    pub sepa_transfers: Vec<SepaSpec>,
    /// Exchange behaviour: lock lifetime, outcome, rates, fee.
    pub exchange: ExchangeConfig,
    /// Defaults for SEPA transfers created through the API.
    pub sepa: SepaConfig,
    /// Balance changes with no history row ("drift").
    pub drift: Vec<DriftSpec>,
    /// Faults active from the start (same shape as `POST /__control/faults`).
    pub faults: Vec<Fault>,
    /// Optional seeded bulk data on top of the explicit users (see [`GeneratorConfig`]).
    pub generator: Option<GeneratorConfig>,
}

/// The partner account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartnerSpec {
    /// Balances shown even when zero, in this order (default: eur, btc, eth, ltc, pol, usdc,
    /// usdt). Currencies that appear in transactions or drift are added after these.
    pub currencies: Vec<String>,
    /// The partner's transaction history.
    pub transactions: Vec<TxSpec>,
}

/// One end user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserSpec {
    /// The partner's id for this user (`externalUserId`). `"partner"` is reserved.
    pub external_user_id: String,
    /// Balances shown even when zero (default as for the partner).
    pub currencies: Vec<String>,
    /// KYC state; absent means "no verification created" (`P445`).
    pub kyc: Option<KycSpec>,
    /// The user's transaction history.
    pub transactions: Vec<TxSpec>,
    /// `status` of the user's eur balance (default `ACTIVE`; `WAITING_TO_BE_ACTIVATED` gives
    /// `iban: null`).
    pub fiat_status: Option<String>,
    /// Profile fields echoed in SEPA transfer details' `user` object.
    pub email: Option<String>,
    /// First name (also the receiver name of the user's closed-loop SEPA transfers).
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// ISO country code.
    pub country: Option<String>,
}

/// A KYC state and how it moves on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KycSpec {
    /// `status`: `NOT_VERIFIED`, `VERIFIED`, `EXPIRED` or any other string.
    pub status: String,
    /// `attemptStatus`: `PENDING`, `VERIFICATION`, `REJECTED_BY_PROVIDER`, `SUCCESSFUL` or any
    /// other string.
    pub attempt_status: String,
    /// Shown only while `attempt_status` is `REJECTED_BY_PROVIDER` (default `NO_FACE_FOUND`).
    pub rejection_reason: Option<String>,
    /// Later states, applied in order.
    pub steps: Vec<KycStep>,
}

impl Default for KycSpec {
    fn default() -> Self {
        Self {
            status: "NOT_VERIFIED".into(),
            attempt_status: "PENDING".into(),
            rejection_reason: None,
            steps: Vec::new(),
        }
    }
}

/// One KYC change. It takes effect after `after_polls` status reads of the previous state, or
/// `after_seconds` after the previous change, whichever comes first; with neither, after one
/// read. Fields left out keep their previous value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KycStep {
    /// New `status`.
    pub status: Option<String>,
    /// New `attemptStatus`.
    pub attempt_status: Option<String>,
    /// New `rejectionReason`.
    pub rejection_reason: Option<String>,
    /// Reads of the previous state before this step shows.
    pub after_polls: Option<u32>,
    /// Seconds after the previous change.
    pub after_seconds: Option<f64>,
}

/// One history row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TxSpec {
    /// Row id (default: a UUID derived from the owner and position, stable across runs).
    pub id: Option<String>,
    /// `type`: `DEPOSIT`, `WITHDRAWAL`, `EXCHANGE`, `SEPA_TRANSFER`, `INTERNAL_TRANSFER`, `FEE`,
    /// `CARD` or any other string (e.g. `CASHBACK`).
    #[serde(rename = "type")]
    pub kind: String,
    /// `status`: `PENDING`, `COMPLETED` (default), `FAILED` or any other string. Only
    /// `COMPLETED` rows count in the balance.
    pub status: String,
    /// Currency slug (lowercased).
    pub currency: String,
    /// Signed movement of the balance.
    #[serde(with = "decimal_text")]
    pub amount: Decimal,
    /// Fee charged on top, same currency (default 0).
    #[serde(with = "decimal_text")]
    pub fee: Decimal,
    /// `reference` (transfer id, deposit id, lockId …); null when absent.
    pub reference: Option<String>,
    /// `exchangeId`, emitted only for `EXCHANGE` rows.
    pub exchange_id: Option<String>,
    /// `createdAt` (default: sandbox start, minus one second per later row of the owner, so
    /// file order is time order).
    #[serde(with = "time_text")]
    pub created_at: Option<DateTime<Utc>>,
    /// `updatedAt` (default `created_at`).
    #[serde(with = "time_text")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Counts in the balance (when COMPLETED) but never appears in history.
    pub hidden: bool,
    /// Later status changes; each one refreshes `updatedAt`.
    pub steps: Vec<TxStep>,
}

impl Default for TxSpec {
    fn default() -> Self {
        Self {
            id: None,
            kind: "DEPOSIT".into(),
            status: "COMPLETED".into(),
            currency: "eur".into(),
            amount: Decimal::ZERO,
            fee: Decimal::ZERO,
            reference: None,
            exchange_id: None,
            created_at: None,
            updated_at: None,
            hidden: false,
            steps: Vec::new(),
        }
    }
}

/// One status change of a history row. `after_polls` counts history requests for the row's
/// owner (any page) since the previous change; `after_seconds` counts wall time. With neither,
/// after one request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TxStep {
    /// New status (`COMPLETED`, `FAILED`, …).
    pub status: String,
    /// History requests of the previous state before this step shows.
    pub after_polls: Option<u32>,
    /// Seconds after the previous change.
    pub after_seconds: Option<f64>,
}

/// An outgoing SEPA transfer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SepaSpec {
    /// `transferId` (default: derived from position, stable).
    pub id: Option<String>,
    /// `"partner"` or an `external_user_id`.
    pub owner: String,
    /// Amount (shown as an unpadded string, e.g. `"3.8"`).
    #[serde(with = "decimal_text")]
    pub amount: Decimal,
    /// Fee (shown as a number); default 0.1 % with a minimum of 1.00 (see [`SepaConfig`]).
    #[serde(with = "opt_decimal_text")]
    pub fee: Option<Decimal>,
    /// Currency (default `eur`).
    pub currency: String,
    /// `destinationIban`.
    pub destination_iban: Option<String>,
    /// `transferTitle`.
    pub transfer_title: Option<String>,
    /// `receiverFirstName` (null for partner transfers unless set).
    pub receiver_first_name: Option<String>,
    /// `receiverLastName`.
    pub receiver_last_name: Option<String>,
    /// Status at start (default `PROCESSING`). A terminal value (`SUCCESSFUL`, `FAILED`) means
    /// the transfer is already final.
    pub status: Option<String>,
    /// Status it ends in (default `SUCCESSFUL`).
    pub final_status: Option<String>,
    /// `error` object shown when the final status is `FAILED`.
    pub error: Option<ErrorSpec>,
    /// Detail reads before the final status shows (default 1).
    pub after_polls: Option<u32>,
    /// Or seconds after creation.
    pub after_seconds: Option<f64>,
    /// `createdAt` (default: sandbox start).
    #[serde(with = "time_text")]
    pub created_at: Option<DateTime<Utc>>,
    /// The owner's SEPA_TRANSFER history row counts in the balance but never shows.
    pub hidden: bool,
}

impl Default for SepaSpec {
    fn default() -> Self {
        Self {
            id: None,
            owner: "partner".into(),
            amount: Decimal::ZERO,
            fee: None,
            currency: "eur".into(),
            destination_iban: None,
            transfer_title: None,
            receiver_first_name: None,
            receiver_last_name: None,
            status: None,
            final_status: None,
            error: None,
            after_polls: None,
            after_seconds: None,
            created_at: None,
            hidden: false,
        }
    }
}

/// The `error` object of a FAILED SEPA transfer (emitted as `errorCode`, `errorName`,
/// `errorMessage`; the names are the sandbox's reading, P100 does not document them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorSpec {
    /// `errorCode`.
    pub code: String,
    /// `errorName` (left out when absent).
    pub name: Option<String>,
    /// `errorMessage` (left out when absent).
    pub message: Option<String>,
}

impl Default for ErrorSpec {
    /// `P441 insufficient-funds`: a code invented by the sandbox (P100 documents none).
    fn default() -> Self {
        Self {
            code: "P441".into(),
            name: Some("insufficient-funds".into()),
            message: Some("Insufficient funds".into()),
        }
    }
}

/// Exchange behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExchangeConfig {
    /// Lock lifetime (default 60 s).
    pub lock_ttl_seconds: f64,
    /// Final status of new exchanges (default `COMPLETED`; `FAILED` or any string).
    pub outcome: String,
    /// Outcomes for the next exchanges, consumed in order before `outcome` applies.
    pub outcomes: Vec<String>,
    /// Detail reads in `PROCESSING` before the outcome shows (default 1).
    pub after_polls: Option<u32>,
    /// Or seconds after creation.
    pub after_seconds: Option<f64>,
    /// Exchange fee as a fraction of `amountFrom` (default `"0.0149"`).
    #[serde(with = "decimal_text")]
    pub fee_rate: Decimal,
    /// Rate overrides, keyed `"from/to"` (e.g. `"eth/eur" = "3160.21"`). Other pairs use the
    /// balance rate table (EUR value of `from` ÷ EUR value of `to`), or 1 for unknown currencies.
    #[serde(with = "decimal_map")]
    pub rates: BTreeMap<String, Decimal>,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            lock_ttl_seconds: 60.0,
            outcome: "COMPLETED".into(),
            outcomes: Vec::new(),
            after_polls: Some(1),
            after_seconds: None,
            fee_rate: Decimal::new(149, 4),
            rates: BTreeMap::new(),
        }
    }
}

/// Defaults for SEPA transfers created through `POST /v1/partner/sepa-transfer` and
/// `POST /v1/sepa-transfer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SepaConfig {
    /// Final status (default `SUCCESSFUL`).
    pub final_status: String,
    /// Final statuses for the next transfers, consumed in order before `final_status` applies.
    pub outcomes: Vec<String>,
    /// Detail reads before the final status shows (default 1).
    pub after_polls: Option<u32>,
    /// Or seconds after creation.
    pub after_seconds: Option<f64>,
    /// Fee as a fraction of the amount (default `"0.001"`).
    #[serde(with = "decimal_text")]
    pub fee_rate: Decimal,
    /// Minimum fee (default `"1.00"`).
    #[serde(with = "decimal_text")]
    pub min_fee: Decimal,
    /// `error` object of transfers that fail.
    pub error: ErrorSpec,
}

impl Default for SepaConfig {
    fn default() -> Self {
        Self {
            final_status: "SUCCESSFUL".into(),
            outcomes: Vec::new(),
            after_polls: Some(1),
            after_seconds: None,
            fee_rate: Decimal::new(1, 3),
            min_fee: Decimal::new(100, 2),
            error: ErrorSpec::default(),
        }
    }
}

/// A balance change that no history row explains.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftSpec {
    /// `"partner"` or an `external_user_id`.
    pub owner: String,
    /// Currency slug.
    pub currency: String,
    /// Signed change.
    #[serde(with = "decimal_text")]
    pub delta: Decimal,
}

/// Why a scenario could not be loaded. Messages name the file, and for syntax errors the line
/// and column.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the scenario format.
    #[error("invalid scenario file {}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The parser's reason.
        message: String,
    },
    /// The TOML is well-formed but contradicts itself (unknown owner, duplicate id …).
    #[error("invalid scenario {}: {message}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(in code)".into()))]
    Invalid {
        /// The file, when the scenario came from one.
        path: Option<PathBuf>,
        /// What is wrong and where (e.g. `sepa_transfers[1].owner`).
        message: String,
    },
}

impl Scenario {
    /// Reads and checks a TOML scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let scenario = Self::from_toml_str(&text, path)?;
        scenario
            .validate()
            .map_err(|message| ScenarioError::Invalid {
                path: Some(path.to_path_buf()),
                message,
            })?;
        Ok(scenario)
    }

    /// Parses TOML text; `path` is only used in error messages.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        toml::from_str::<Scenario>(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ScenarioError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })
    }

    /// Checks what serde cannot: ids unique, owners known, currencies non-empty.
    pub fn validate(&self) -> Result<(), String> {
        let mut users = HashSet::new();
        let gen_has = |id: &str| {
            self.generator
                .as_ref()
                .is_some_and(|g| crate::generator::user_index(g, id).is_some())
        };
        for (i, u) in self.users.iter().enumerate() {
            if u.external_user_id.trim().is_empty() {
                return Err(format!("users[{i}].external_user_id is empty"));
            }
            if u.external_user_id == "partner" {
                return Err(format!(
                    "users[{i}].external_user_id: \"partner\" is reserved for the partner account"
                ));
            }
            if !users.insert(u.external_user_id.as_str()) {
                return Err(format!(
                    "users[{i}].external_user_id {:?} is listed twice",
                    u.external_user_id
                ));
            }
        }
        let known = |o: &str| o == "partner" || users.contains(o) || gen_has(o);
        let mut tx_ids = HashSet::new();
        let mut check_txs = |what: String, txs: &[TxSpec]| -> Result<(), String> {
            for (i, t) in txs.iter().enumerate() {
                if t.currency.trim().is_empty() {
                    return Err(format!("{what}.transactions[{i}].currency is empty"));
                }
                if let Some(id) = &t.id
                    && !tx_ids.insert(id.clone())
                {
                    return Err(format!("{what}.transactions[{i}].id {id:?} is used twice"));
                }
            }
            Ok(())
        };
        check_txs("partner".into(), &self.partner.transactions)?;
        for (i, u) in self.users.iter().enumerate() {
            check_txs(format!("users[{i}]"), &u.transactions)?;
        }
        let mut sepa_ids = HashSet::new();
        for (i, s) in self.sepa_transfers.iter().enumerate() {
            if !known(&s.owner) {
                return Err(format!(
                    "sepa_transfers[{i}].owner {:?} is neither \"partner\" nor a listed user",
                    s.owner
                ));
            }
            if s.amount <= Decimal::ZERO {
                return Err(format!("sepa_transfers[{i}].amount must be positive"));
            }
            if let Some(id) = &s.id
                && !sepa_ids.insert(id.clone())
            {
                return Err(format!("sepa_transfers[{i}].id {id:?} is used twice"));
            }
        }
        for (i, d) in self.drift.iter().enumerate() {
            if !known(&d.owner) {
                return Err(format!(
                    "drift[{i}].owner {:?} is neither \"partner\" nor a listed user",
                    d.owner
                ));
            }
            if d.currency.trim().is_empty() {
                return Err(format!("drift[{i}].currency is empty"));
            }
        }
        if self.exchange.lock_ttl_seconds.is_nan() || self.exchange.lock_ttl_seconds < 0.0 {
            return Err("exchange.lock_ttl_seconds must be zero or more".into());
        }
        Ok(())
    }
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Reads a decimal from a string (`"12.50"`) or a number, via `serde_json::Value` so exact
/// number text survives `arbitrary_precision`.
pub(crate) mod decimal_text {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::money::plain(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        crate::money::decimal_from_value(&v).ok_or_else(|| {
            serde::de::Error::custom(format!("expected a decimal amount like \"12.50\", got {v}"))
        })
    }
}

/// [`decimal_text`] for optional fields.
pub(crate) mod opt_decimal_text {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&crate::money::plain(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if v.is_null() {
            return Ok(None);
        }
        crate::money::decimal_from_value(&v)
            .map(Some)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected a decimal amount like \"12.50\", got {v}"
                ))
            })
    }
}

/// A map of decimals (exchange rates).
pub(crate) mod decimal_map {
    use std::collections::BTreeMap;

    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Decimal>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, crate::money::plain(*v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Decimal>, D::Error> {
        let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| match crate::money::decimal_from_value(&v) {
                Some(d) => Ok((k.to_lowercase(), d)),
                None => Err(serde::de::Error::custom(format!(
                    "rate {k:?}: expected a decimal like \"3160.21\", got {v}"
                ))),
            })
            .collect()
    }
}

/// Optional RFC 3339 timestamps, from a string or a TOML datetime.
pub(crate) mod time_text {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let text = match &v {
            serde_json::Value::Null => return Ok(None),
            serde_json::Value::String(s) => s.clone(),
            // An unquoted TOML datetime arrives as a one-key map.
            serde_json::Value::Object(m) if m.len() == 1 => match m.values().next() {
                Some(serde_json::Value::String(s)) => s.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        crate::util::parse_rfc3339(&text).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected an RFC 3339 timestamp like \"2025-08-05T10:33:54.730Z\", got {v}"
            ))
        })
    }
}
