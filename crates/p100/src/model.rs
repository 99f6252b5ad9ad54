//! Response and request bodies, mirroring P100's JSON field for field.
//!
//! Unknown fields are ignored (serde's default), amounts go through [`crate::amount`], and
//! enums keep unknown values. No business logic lives here.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::amount::{self, Currency};
use crate::enums::{
    BalanceStatus, ExchangeStatus, KycAttemptStatus, KycStatus, SepaStatus, TransactionStatus,
    TransactionType,
};

/// `GET /v1/kyc/status/{externalUserId}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KycStatusResponse {
    /// `NOT_VERIFIED`, `VERIFIED`, `EXPIRED`.
    pub status: KycStatus,
    /// `PENDING`, `VERIFICATION`, `REJECTED_BY_PROVIDER`, `SUCCESSFUL`.
    pub attempt_status: KycAttemptStatus,
    /// Present when the provider rejected the attempt (not confirmed for this endpoint);
    /// bounded and without control characters ([`crate::text::clean_text`]).
    #[serde(default, deserialize_with = "crate::text::de_clean_opt")]
    pub rejection_reason: Option<String>,
}

/// One balance object (fiat or crypto) of the partner or a user.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// P100's balance id.
    pub id: String,
    /// The balance, exact.
    #[serde(deserialize_with = "amount::de")]
    pub amount: Decimal,
    /// Currency code (P100 calls it `name`).
    pub name: Currency,
    /// Indicative EUR rate; not used for money.
    #[serde(default, deserialize_with = "amount::de_opt")]
    pub rate: Option<Decimal>,
    /// Fiat balances only.
    #[serde(default)]
    pub status: Option<BalanceStatus>,
    /// Fiat balances only, null until active.
    #[serde(default)]
    pub iban: Option<String>,
    /// Crypto balances only, null until generated.
    #[serde(default)]
    pub wallet: Option<String>,
}

/// `GET /v1/partner/balances` and `GET /v1/user/balances/{externalUserId}`.
///
/// KYC users and the partner get `fiatBalances` + `cryptoBalances`; non-KYC users a flat
/// `balances` array. All three are accepted.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balances {
    /// Fiat balances.
    #[serde(default)]
    pub fiat_balances: Vec<Balance>,
    /// Crypto balances.
    #[serde(default)]
    pub crypto_balances: Vec<Balance>,
    /// Flat list (non-KYC users).
    #[serde(default)]
    pub balances: Vec<Balance>,
}

impl Balances {
    /// Every balance, whichever list it came in.
    pub fn all(&self) -> impl Iterator<Item = &Balance> {
        self.fiat_balances
            .iter()
            .chain(&self.crypto_balances)
            .chain(&self.balances)
    }
}

/// One page of transaction history (assumed contract, SPEC §8). A row that cannot be decoded
/// does not fail its page: it is kept as P100 sent it in `undecodable`, so the caller can
/// store and flag it while the rest of the page and the history go on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RawTransactionPage")]
pub struct TransactionPage {
    /// Rows ordered by `updatedAt`, then `id`.
    pub transactions: Vec<Transaction>,
    /// Rows that could not be decoded, in page order.
    pub undecodable: Vec<UndecodableTransaction>,
    /// Page number, from 1.
    pub page: u32,
    /// Page size asked for.
    pub size: u32,
    /// Rows matching the filter, over all pages.
    pub total: u64,
}

impl TransactionPage {
    /// Rows on the page, decoded or not.
    pub fn rows(&self) -> usize {
        self.transactions.len() + self.undecodable.len()
    }

    /// Whether page `page_no` of a query asking `asked_size` rows per page ends the history.
    /// P100 may serve fewer rows per page than asked: judged by the size it reports.
    pub fn is_last(&self, page_no: u32, asked_size: u32) -> bool {
        let served = self.size.clamp(1, asked_size.max(1));
        let seen = u64::from(page_no) * u64::from(served);
        self.rows() == 0 || self.rows() < served as usize || seen >= self.total
    }
}

/// A history row that is not a valid transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct UndecodableTransaction {
    /// The row as received.
    pub raw: serde_json::Value,
    /// Its `id`, when that field at least was a string.
    pub id: Option<String>,
    /// Its `updatedAt`, when that field at least was readable.
    pub updated_at: Option<DateTime<Utc>>,
    /// Why it could not be decoded.
    pub error: String,
}

#[derive(Deserialize)]
struct RawTransactionPage {
    // Kept as text and decoded row by row: going through `Value` would lose the literal
    // form of amounts that `amount::de` reads.
    transactions: Vec<Box<serde_json::value::RawValue>>,
    page: u32,
    size: u32,
    total: u64,
}

impl From<RawTransactionPage> for TransactionPage {
    fn from(raw: RawTransactionPage) -> Self {
        let mut transactions = Vec::with_capacity(raw.transactions.len());
        let mut undecodable = Vec::new();
        for text in raw.transactions {
            match serde_json::from_str::<Transaction>(text.get()) {
                Ok(t) => transactions.push(t),
                Err(e) => {
                    let row: serde_json::Value = serde_json::from_str(text.get())
                        .unwrap_or_else(|_| serde_json::Value::String(text.get().to_owned()));
                    undecodable.push(UndecodableTransaction {
                        id: row.get("id").and_then(|v| v.as_str()).map(str::to_owned),
                        updated_at: row
                            .get("updatedAt")
                            .and_then(|v| v.as_str())
                            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.with_timezone(&Utc)),
                        error: e.to_string(),
                        raw: row,
                    })
                }
            }
        }
        TransactionPage {
            transactions,
            undecodable,
            page: raw.page,
            size: raw.size,
            total: raw.total,
        }
    }
}

/// One transaction-history row.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    /// P100's transaction id.
    pub id: String,
    /// Kind of movement; unknown kinds are kept.
    #[serde(rename = "type")]
    pub kind: TransactionType,
    /// Settlement state; unknown states are kept.
    pub status: TransactionStatus,
    /// Currency of `amount` and `fee`.
    pub currency: Currency,
    /// Signed movement of the balance.
    #[serde(deserialize_with = "amount::de")]
    pub amount: Decimal,
    /// Charged on top, same currency; absent or null means zero.
    #[serde(default, deserialize_with = "amount::de_opt")]
    pub fee: Option<Decimal>,
    /// When P100 created the row.
    pub created_at: DateTime<Utc>,
    /// Last change; history filters and orders on it.
    pub updated_at: DateTime<Utc>,
    /// `transferId`, deposit id, or `lockId` for exchanges.
    #[serde(default)]
    pub reference: Option<String>,
    /// Exchange rows only.
    #[serde(default)]
    pub exchange_id: Option<String>,
}

/// `GET /v1/partner/exchange/lock` (assumed contract, SPEC §8).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeLock {
    /// The lock to execute with.
    pub lock_id: String,
    /// Guaranteed rate.
    #[serde(deserialize_with = "amount::de")]
    pub rate: Decimal,
    /// After this instant the lock cannot be executed.
    pub expires_at: DateTime<Utc>,
}

/// Body of `POST /v1/partner/exchange`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateExchange {
    /// Amount in `currency_from` (as in the published example), sent as a JSON number.
    #[serde(serialize_with = "amount::ser_number")]
    pub amount: Decimal,
    /// Source currency.
    pub currency_from: Currency,
    /// Target currency.
    pub currency_to: Currency,
    /// From the lock endpoint.
    pub lock_id: String,
}

/// Answer of `POST /v1/partner/exchange`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeCreated {
    /// The new exchange.
    pub exchange_id: String,
}

/// `GET /v1/partner/exchange/{exchangeId}` (assumed contract, SPEC §8).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeDetails {
    /// The exchange.
    pub exchange_id: String,
    /// `COMPLETED`/`FAILED` are terminal; anything else is still in progress.
    pub status: ExchangeStatus,
    /// Source currency.
    pub currency_from: Currency,
    /// Target currency.
    pub currency_to: Currency,
    /// Debited from the source balance.
    #[serde(deserialize_with = "amount::de")]
    pub amount_from: Decimal,
    /// Credited to the target balance.
    #[serde(deserialize_with = "amount::de")]
    pub amount_to: Decimal,
    /// Exchange fee, if reported.
    #[serde(default, deserialize_with = "amount::de_opt")]
    pub fee: Option<Decimal>,
    /// Creation time, if reported.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

/// `GET /v1/sepa-transfer/details/{transferId}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SepaTransfer {
    /// The `transferId`.
    pub id: String,
    /// `external` in every example.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Transfer amount (string in new docs, number in legacy ones).
    #[serde(deserialize_with = "amount::de")]
    pub amount: Decimal,
    /// Currency (`eur`).
    pub currency: Currency,
    /// Fee in EUR, when reported.
    #[serde(default, deserialize_with = "amount::de_opt")]
    pub fee: Option<Decimal>,
    /// `SUCCESSFUL`/`FAILED` are terminal; anything else is still in progress.
    pub status: SepaStatus,
    /// Payment reference text.
    #[serde(default)]
    pub transfer_title: Option<String>,
    /// Recipient IBAN.
    #[serde(default)]
    pub destination_iban: Option<String>,
    /// Creation time.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Owner of the debited balance, for user transfers.
    #[serde(default)]
    pub user: Option<SepaTransferUser>,
    /// P100's description of a failure; its fields are not documented, so it is kept whole.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// The `user` object of a SEPA transfer; only the id matters to us.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SepaTransferUser {
    /// The partner's id of the user.
    pub external_user_id: String,
}

/// P100's error body: `errorCode` always; `errorName` and `errorMessage` may be missing.
/// 401 bodies carry only `message`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_name: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}
