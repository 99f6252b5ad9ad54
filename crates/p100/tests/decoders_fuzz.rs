//! Fuzzing every P100 response decoder (issue 12): arbitrary bytes, JSON made of P100's own
//! field names, and mutations of valid answers go through each decoder. Nothing may panic;
//! every input is either a value or an error. Run in CI at a small budget
//! (`PROPTEST_CASES` raises it: `PROPTEST_CASES=100000 cargo test -p p100 --test decoders_fuzz`).
//!
//! Memory is bounded before decoding: the client refuses a success body over 4 MiB unread
//! (`client_wiremock::a_body_over_the_limit_is_refused_not_held_in_memory`), and decoding a
//! bounded input allocates in proportion to it. Webhook bodies (`p100::webhook::parse`, every
//! route) go through the same properties; the receiver reads at most 64 KiB of one.

use p100::model::{
    Balances, ExchangeCreated, ExchangeDetails, ExchangeLock, KycStatusResponse, SepaTransfer,
    TransactionPage,
};
use proptest::prelude::*;

/// CI's small budget, unless `PROPTEST_CASES` asks for more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Feeds one input to every decoder; a panic fails the property.
fn decode_all(bytes: &[u8]) {
    let _ = serde_json::from_slice::<KycStatusResponse>(bytes);
    let _ = serde_json::from_slice::<Balances>(bytes);
    let _ = serde_json::from_slice::<TransactionPage>(bytes);
    let _ = serde_json::from_slice::<ExchangeLock>(bytes);
    let _ = serde_json::from_slice::<ExchangeCreated>(bytes);
    let _ = serde_json::from_slice::<ExchangeDetails>(bytes);
    let _ = serde_json::from_slice::<SepaTransfer>(bytes);
    for route in p100::webhook::Route::ALL {
        let _ = p100::webhook::parse(route, bytes);
    }
    let _ = p100::webhook::canonical(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = p100::amount::parse_amount(text);
        let _ = p100::amount::parse_operation_amount(text);
    }
}

/// Valid answers (from the reference's examples) to mutate.
const VALID: [&str; 5] = [
    r#"{"status":"VERIFIED","attemptStatus":"APPROVED","rejectionReason":null}"#,
    r#"{"fiatBalances":[{"id":"1","amount":"12.50","name":"eur"}],"cryptoBalances":[{"id":"2","amount":0.001,"name":"btc"}]}"#,
    r#"{"transactions":[{"id":"t1","type":"DEPOSIT","status":"COMPLETED","currency":"EUR","amount":"10.00","fee":"0.10","createdAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:01.123Z","reference":"r"}],"page":1,"size":100,"total":1}"#,
    r#"{"lockId":"l-1","rate":"1.0850","amountFrom":"100","amountTo":"108.50","expiresAt":"2026-11-26T10:00:30Z"}"#,
    r#"{"transferId":"s-1","status":"PROCESSING","amount":"250.00","currency":"eur","createdAt":"2026-11-26T10:00:00Z"}"#,
];

/// JSON built from P100's vocabulary, nested, with hostile scalars.
fn p100_like_json() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("id"),
        Just("type"),
        Just("status"),
        Just("currency"),
        Just("amount"),
        Just("fee"),
        Just("createdAt"),
        Just("updatedAt"),
        Just("transactions"),
        Just("externalUserId"),
        Just("verificationStatus"),
        Just("event_type"),
        Just("data"),
        Just("cryptoDepositId"),
        Just("page"),
        Just("size"),
        Just("total"),
        Just("fiatBalances"),
        Just("cryptoBalances"),
        Just("name"),
        Just("lockId"),
        Just("expiresAt"),
        Just("transferId"),
        Just("attemptStatus"),
        Just("rejectionReason"),
        Just("reference"),
        Just("exchangeId"),
        Just("errorCode"),
        Just("errorMessage"),
    ];
    let scalar = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        prop_oneof![
            Just("1e40".to_owned()),
            Just("-0.000000001".to_owned()),
            Just("79228162514264337593543950335".to_owned()),
            Just("9999-12-31T23:59:59.999999999Z".to_owned()),
            Just("+275760-09-13T00:00:00Z".to_owned()),
            Just("\u{1b}[2J\n".to_owned()),
            ".{0,40}",
        ]
        .prop_map(serde_json::Value::from),
    ];
    scalar.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..10).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes);
    }

    #[test]
    fn p100_shaped_json_never_panics_a_decoder(value in p100_like_json()) {
        decode_all(value.to_string().as_bytes());
    }

    #[test]
    fn mutated_valid_answers_never_panic_a_decoder(
        which in 0..VALID.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = VALID[which].as_bytes().to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        decode_all(&bytes);
    }
}

#[test]
fn deeply_nested_input_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    decode_all(deep.as_bytes());
    let deep_objects = format!(
        "{}1{}",
        r#"{"transactions":"#.repeat(50_000),
        "}".repeat(50_000)
    );
    decode_all(deep_objects.as_bytes());
}
