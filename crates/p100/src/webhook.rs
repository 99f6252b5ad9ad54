//! P100's webhook deliveries as data: which kind of event, which entity it names, which status.
//!
//! P100 signs nothing and sends no event id (`p100-api/webhooks.md` §2), so a delivery is only
//! a hint that the named entity changed; this module reads just enough of it to know what to
//! look at again. Flat bodies and the FAQ's envelope (`event_type` + `data`) are both read.
//! Field names for the kinds whose payload P100 does not document are the safest guesses,
//! recorded in `docs/p100-assumptions.md` (A39) and kept in [`Route::id_fields`].

use serde_json::Value;

/// The largest body read (SPEC §10): anything longer is refused unread.
pub const MAX_BODY: usize = 64 * 1024;

/// Longest entity id or status kept (longer ones are refused, not truncated).
const MAX_FIELD: usize = 200;

/// One kind of webhook, as told by the route it was posted to (flat payloads carry no type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// KYC Verification Status.
    Kyc,
    /// User status / balance generation.
    User,
    /// Proof-of-address verification status (stored, not followed).
    PoaVerification,
    /// Outgoing SEPA transfer outcome.
    SepaTransfer,
    /// Incoming SEPA deposit.
    SepaDeposit,
    /// Crypto deposit status.
    CryptoDeposit,
    /// Crypto withdrawal status.
    CryptoWithdrawal,
    /// Exchange status.
    Exchange,
    /// P2P transfer.
    P2pTransfer,
    /// Card transaction.
    CardTransaction,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 10] = [
        Route::Kyc,
        Route::User,
        Route::PoaVerification,
        Route::SepaTransfer,
        Route::SepaDeposit,
        Route::CryptoDeposit,
        Route::CryptoWithdrawal,
        Route::Exchange,
        Route::P2pTransfer,
        Route::CardTransaction,
    ];

    /// The stable name: the last segment of `/webhooks/p100/<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Route::Kyc => "kyc",
            Route::User => "user",
            Route::PoaVerification => "poa-verification",
            Route::SepaTransfer => "sepa-transfer",
            Route::SepaDeposit => "sepa-deposit",
            Route::CryptoDeposit => "crypto-deposit",
            Route::CryptoWithdrawal => "crypto-withdrawal",
            Route::Exchange => "exchange",
            Route::P2pTransfer => "p2p-transfer",
            Route::CardTransaction => "card-transaction",
        }
    }

    /// The route of a name, if any.
    pub fn parse(name: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Fields that may carry the entity id, first present wins. Documented kinds list exactly
    /// the documented field; the others list the names P100 uses for the same entity elsewhere.
    pub fn id_fields(self) -> &'static [&'static str] {
        match self {
            Route::Kyc | Route::User | Route::PoaVerification => &["externalUserId"],
            Route::SepaTransfer => &["id"],
            Route::CryptoDeposit => &["cryptoDepositId"],
            Route::SepaDeposit => &["id", "depositId", "sepaDepositId", "transactionId"],
            Route::CryptoWithdrawal => &["id", "cryptoWithdrawalId", "withdrawalId"],
            Route::Exchange => &["exchangeId", "id"],
            Route::P2pTransfer => &["id", "transferId", "p2pTransferId"],
            Route::CardTransaction => &["id", "transactionId", "cardTransactionId"],
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// What a valid delivery names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The kind of event.
    pub route: Route,
    /// The entity: a user, transfer, deposit, exchange … id.
    pub entity_id: String,
    /// `externalUserId`, when the body names the user the entity belongs to.
    pub external_user_id: Option<String>,
    /// The status it claims (KYC: `verificationStatus/attemptStatus`), unknown values kept.
    pub status: Option<String>,
    /// `rejectionReason`, for KYC.
    pub rejection_reason: Option<String>,
}

/// Why a delivery was refused (answered 400 and kept as rejected with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Over [`MAX_BODY`].
    #[error("body exceeds the 64 KiB limit")]
    TooLarge,
    /// Not UTF-8 JSON.
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("body is JSON but not an object")]
    NotAnObject,
    /// No usable entity id.
    #[error("body lacks the entity id ({fields})", fields = .0.join(" or "))]
    MissingEntityId(&'static [&'static str]),
    /// An id or status too long to be real.
    #[error("field {0} is longer than 200 characters")]
    FieldTooLong(&'static str),
    /// An id or status with control characters (NUL, escapes, line breaks).
    #[error("field {0} contains control characters")]
    ControlCharacters(&'static str),
}

/// Reads a delivery to `route`. The body is parsed as JSON without floats (amounts, if ever
/// read, keep their text).
pub fn parse(route: Route, body: &[u8]) -> Result<Hint, Rejection> {
    if body.len() > MAX_BODY {
        return Err(Rejection::TooLarge);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Rejection::NotJson(e.to_string()))?;
    let outer = value.as_object().ok_or(Rejection::NotAnObject)?;
    // The FAQ's envelope: `{"event_type": …, "data": {…}}`.
    let fields = match (outer.get("event_type"), outer.get("data")) {
        (Some(Value::String(_)), Some(Value::Object(data))) => data,
        _ => outer,
    };
    let text = |name: &'static str| -> Result<Option<String>, Rejection> {
        let found = match fields.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            // Ids sent as numbers are ids all the same; their text is exact.
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        match found {
            Some(s) if s.chars().count() > MAX_FIELD => Err(Rejection::FieldTooLong(name)),
            Some(s) if s.chars().any(char::is_control) => Err(Rejection::ControlCharacters(name)),
            other => Ok(other),
        }
    };
    let mut entity_id = None;
    for &name in route.id_fields() {
        if let Some(id) = text(name)? {
            entity_id = Some(id);
            break;
        }
    }
    let entity_id = entity_id.ok_or(Rejection::MissingEntityId(route.id_fields()))?;
    let status = match route {
        Route::Kyc => match (text("verificationStatus")?, text("attemptStatus")?) {
            (Some(v), Some(a)) => Some(format!("{v}/{a}")),
            (v, a) => v.or(a),
        },
        _ => text("status")?,
    };
    Ok(Hint {
        route,
        external_user_id: text("externalUserId")?,
        rejection_reason: match route {
            Route::Kyc => text("rejectionReason")?,
            _ => None,
        },
        entity_id,
        status,
    })
}

/// The body in a form where two deliveries of the same JSON compare equal whatever their
/// whitespace or key order (what repeated deliveries are recognised by); a body that is not
/// JSON is its own form.
pub fn canonical(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(body) {
        // Objects serialise with sorted keys (serde_json without `preserve_order`).
        Ok(value) => serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec()),
        Err(_) => body.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_kyc_example() {
        let body = br#"{
          "externalUserId": "bca65c48-df49-4831-a7b2-de7903321581",
          "verificationStatus": "NOT_VERIFIED",
          "attemptStatus": "REJECTED_BY_PROVIDER",
          "rejectionReason": "NO_FACE_FOUND"
        }"#;
        let hint = parse(Route::Kyc, body).unwrap();
        assert_eq!(hint.entity_id, "bca65c48-df49-4831-a7b2-de7903321581");
        assert_eq!(
            hint.status.as_deref(),
            Some("NOT_VERIFIED/REJECTED_BY_PROVIDER")
        );
        assert_eq!(hint.rejection_reason.as_deref(), Some("NO_FACE_FOUND"));
        assert_eq!(
            hint.external_user_id.as_deref(),
            Some("bca65c48-df49-4831-a7b2-de7903321581")
        );
    }

    #[test]
    fn unwraps_the_faq_envelope() {
        let body = br#"{"event_type":"crypto_deposit.status_changed","data":{"cryptoDepositId":"dep_123","status":"WAITING_FOR_TR_DATA","amount":"0.05","currency":"btc"}}"#;
        let hint = parse(Route::CryptoDeposit, body).unwrap();
        assert_eq!(hint.entity_id, "dep_123");
        assert_eq!(hint.status.as_deref(), Some("WAITING_FOR_TR_DATA"));
        assert_eq!(hint.external_user_id, None);
    }

    #[test]
    fn reads_the_sepa_example_and_keeps_unknown_statuses() {
        let body = br#"{"id":"123f6603-5a71-45c3-a222-1de369bb1c4d","type":"external","amount":"3.8","status":"RETURNED","currency":"eur","fee":0}"#;
        let hint = parse(Route::SepaTransfer, body).unwrap();
        assert_eq!(hint.entity_id, "123f6603-5a71-45c3-a222-1de369bb1c4d");
        assert_eq!(hint.status.as_deref(), Some("RETURNED"));
    }

    #[test]
    fn refuses_what_names_nothing() {
        let cases: [(Route, &[u8], &str); 6] = [
            (Route::Kyc, b"{not json", "body is not JSON"),
            (Route::Kyc, b"[1,2]", "not an object"),
            (
                Route::Kyc,
                br#"{"verificationStatus":"VERIFIED"}"#,
                "lacks the entity id (externalUserId)",
            ),
            (
                Route::Kyc,
                br#"{"externalUserId":"  "}"#,
                "lacks the entity id",
            ),
            (
                Route::Exchange,
                br#"{"status":"COMPLETED"}"#,
                "(exchangeId or id)",
            ),
            (Route::Kyc, b"\xff\xfe{}", "not JSON"),
        ];
        for (route, body, reason) in cases {
            let e = parse(route, body).unwrap_err().to_string();
            assert!(e.contains(reason), "{route} {body:?}: {e}");
        }
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(parse(Route::Kyc, &big), Err(Rejection::TooLarge));
        assert_eq!(
            parse(Route::Kyc, br#"{"externalUserId":"a\u0000b"}"#),
            Err(Rejection::ControlCharacters("externalUserId"))
        );
        assert_eq!(
            parse(
                Route::SepaTransfer,
                br#"{"id":"t","status":"OK\u001b[31m"}"#
            ),
            Err(Rejection::ControlCharacters("status"))
        );
        let long = format!(r#"{{"externalUserId":"{}"}}"#, "u".repeat(201));
        assert_eq!(
            parse(Route::User, long.as_bytes()),
            Err(Rejection::FieldTooLong("externalUserId"))
        );
    }

    #[test]
    fn the_same_json_has_one_canonical_form() {
        let a = canonical(br#"{"b": 1.50, "a": "x"}"#);
        let b = canonical(br#"{"a":"x","b":1.50}"#);
        assert_eq!(a, b);
        // Numbers keep their text (no float round trip).
        assert_eq!(String::from_utf8(a).unwrap(), r#"{"a":"x","b":1.50}"#);
        assert_ne!(canonical(br#"{"a":"y"}"#), b);
        assert_eq!(canonical(b"not json"), b"not json");
    }

    #[test]
    fn every_route_has_a_unique_name() {
        for r in Route::ALL {
            assert_eq!(Route::parse(r.name()), Some(r));
        }
        assert_eq!(Route::parse("nope"), None);
    }
}
