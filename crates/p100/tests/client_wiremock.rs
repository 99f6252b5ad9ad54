//! The client against wiremock: exact requests, every response shape, every error class.

use std::str::FromStr;
use std::time::{Duration, Instant};

use p100::enums::{
    ExchangeStatus, KycAttemptStatus, KycStatus, SepaStatus, TransactionStatus, TransactionType,
};
use p100::model::CreateExchange;
use p100::{ApiKey, Client, Config, Currency, ErrorClass, Failure, HistoryQuery, Scope};
use rust_decimal::Decimal;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{body_json, header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "test-key-7f3a9c";

fn client_for(uri: &str) -> Client {
    client_with(uri, |_| {})
}

fn client_with(uri: &str, tweak: impl FnOnce(&mut Config)) -> Client {
    let mut config = Config::new(uri.parse().unwrap(), ApiKey::new(KEY));
    config.max_rps = std::num::NonZeroU32::new(1000).unwrap();
    tweak(&mut config);
    Client::new(config).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn mount(server: &MockServer, m: &str, p: &str, response: ResponseTemplate) {
    Mock::given(method(m))
        .and(path(p))
        .respond_with(response)
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn kyc_status_sends_the_documented_request_and_decodes_the_seed_example() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/kyc/status/1d3c8a13-a2bf-4f0a-9631-723dfe892675"))
        .and(header("x-api-key", KEY))
        .and(header_exists("x-request-id"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"status": "NOT_VERIFIED", "attemptStatus": "PENDING"})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let kyc = client_for(&server.uri())
        .kyc_status("1d3c8a13-a2bf-4f0a-9631-723dfe892675")
        .await
        .unwrap();

    assert_eq!(kyc.status, KycStatus::NotVerified);
    assert_eq!(kyc.attempt_status, KycAttemptStatus::Pending);
    assert_eq!(kyc.rejection_reason, None);
}

#[tokio::test]
async fn ids_are_percent_encoded_as_one_path_segment() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/v1/kyc/status/a%2Fb%20c",
        ResponseTemplate::new(200)
            .set_body_json(json!({"status": "VERIFIED", "attemptStatus": "SUCCESSFUL"})),
    )
    .await;
    let kyc = client_for(&server.uri()).kyc_status("a/b c").await.unwrap();
    assert_eq!(kyc.status, KycStatus::Verified);
}

#[tokio::test]
async fn rejection_reason_and_unknown_values_are_kept() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/v1/kyc/status/u1",
        ResponseTemplate::new(200).set_body_json(json!({
            "status": "ON_HOLD", "attemptStatus": "REJECTED_BY_PROVIDER",
            "rejectionReason": "NO_FACE_FOUND", "somethingNew": {"x": 1}
        })),
    )
    .await;
    let kyc = client_for(&server.uri()).kyc_status("u1").await.unwrap();
    assert_eq!(kyc.status, KycStatus::Unknown("ON_HOLD".into()));
    assert_eq!(kyc.attempt_status, KycAttemptStatus::RejectedByProvider);
    assert_eq!(kyc.rejection_reason.as_deref(), Some("NO_FACE_FOUND"));
}

#[tokio::test]
async fn partner_balances_decode_the_documented_example_exactly() {
    let server = MockServer::start().await;
    let body = json!({
      "fiatBalances": [{"id": "02ee1b09-9934-4dcc-8dec-91bf34b8f543", "amount": "1250.50", "name": "eur", "rate": 1,
                        "iban": "LT683130019950000568", "status": "ACTIVE"}],
      "cryptoBalances": [{"id": "f2de1f4b-916f-417e-9410-8bf4a70693ee", "amount": "0.000000", "name": "usdc",
                          "wallet": "0x2e90ca5bbe46d5ae23f2df90457d020391b92673", "rate": 0.963728,
                          "networkConfig": {"ethereum": {"mainnet": false, "name": "sepolia",
                              "withdrawal": {"feeWithdrawal": 10, "minWithdrawal": 15}, "deposit": {"minDeposit": 5}}}},
                         {"id": "b1", "amount": "0.00000001", "name": "BTC", "wallet": null, "rate": 102178.03394219}]
    });
    mount(
        &server,
        "GET",
        "/v1/partner/balances",
        ResponseTemplate::new(200).set_body_json(body),
    )
    .await;

    let balances = client_for(&server.uri())
        .balances(&Scope::Partner)
        .await
        .unwrap();

    let all: Vec<_> = balances
        .all()
        .map(|b| (b.name.to_string(), b.amount.to_string()))
        .collect();
    assert_eq!(
        all,
        vec![
            ("eur".into(), "1250.50".into()),
            ("usdc".into(), "0.000000".into()),
            ("btc".into(), "0.00000001".into())
        ]
    );
    assert_eq!(
        balances.crypto_balances[1].rate,
        Some(dec("102178.03394219"))
    );
    assert_eq!(
        balances.fiat_balances[0].iban.as_deref(),
        Some("LT683130019950000568")
    );
}

#[tokio::test]
async fn user_balances_use_the_faq_path_and_accept_the_flat_non_kyc_shape() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/v1/user/balances/user-1",
        ResponseTemplate::new(200).set_body_json(json!({"balances": [
            {"id": "x", "amount": "0.00", "name": "eur", "wallet": null, "rate": 1},
            {"id": "y", "amount": "2.5", "name": "eth", "wallet": null, "rate": 3160.21051755}
        ]})),
    )
    .await;
    let balances = client_for(&server.uri())
        .balances(&Scope::User("user-1".into()))
        .await
        .unwrap();
    let amounts: Vec<_> = balances.all().map(|b| b.amount).collect();
    assert_eq!(amounts, vec![dec("0.00"), dec("2.5")]);
}

#[tokio::test]
async fn a_history_page_sends_page_size_and_millisecond_utc_bounds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/user/transactions/u-9"))
        .and(query_param("page", "2"))
        .and(query_param("size", "50"))
        .and(query_param("from", "2026-11-25T00:00:00.000Z"))
        .and(query_param("to", "2026-11-26T12:30:00.500Z"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "transactions": [
                {"id": "t1", "type": "DEPOSIT", "status": "COMPLETED", "currency": "EUR", "amount": "100.00", "fee": 0,
                 "createdAt": "2026-11-25T10:00:00.000Z", "updatedAt": "2026-11-25T10:00:00Z", "reference": "dep-1"},
                {"id": "t2", "type": "EXCHANGE", "status": "PENDING", "currency": "btc", "amount": -0.001, "fee": "0.0000149",
                 "createdAt": "2026-11-25T11:00:00.123Z", "updatedAt": "2026-11-25T11:00:00.123Z", "reference": "lock-1",
                 "exchangeId": "ex-1"},
                {"id": "t3", "type": "CASHBACK", "status": "REVERSED", "currency": "eur", "amount": 3.8, "fee": null,
                 "createdAt": "2026-11-25T12:00:00Z", "updatedAt": "2026-11-25T12:00:00Z", "reference": null}
            ],
            "page": 2, "size": 50, "total": 53
        })))
        .expect(1)
        .mount(&server)
        .await;

    let query = HistoryQuery {
        from: Some("2026-11-25T00:00:00Z".parse().unwrap()),
        to: Some("2026-11-26T12:30:00.5Z".parse().unwrap()),
        size: 50,
    };
    let page = client_for(&server.uri())
        .transactions_page(&Scope::User("u-9".into()), &query, 2)
        .await
        .unwrap();

    assert_eq!(page.total, 53);
    let [t1, t2, t3] = &page.transactions[..] else {
        panic!("three rows expected")
    };
    assert_eq!(
        (t1.kind.clone(), t1.amount, t1.fee, t1.currency.as_str()),
        (
            TransactionType::Deposit,
            dec("100.00"),
            Some(dec("0")),
            "eur"
        )
    );
    assert_eq!(
        (t2.amount, t2.fee, t2.status.clone()),
        (
            dec("-0.001"),
            Some(dec("0.0000149")),
            TransactionStatus::Pending
        )
    );
    assert_eq!(
        (t2.reference.as_deref(), t2.exchange_id.as_deref()),
        (Some("lock-1"), Some("ex-1"))
    );
    assert_eq!(t3.kind, TransactionType::Unknown("CASHBACK".into()));
    assert_eq!(t3.status, TransactionStatus::Unknown("REVERSED".into()));
    assert_eq!((t3.amount, t3.fee), (dec("3.8"), None));
}

fn tx(i: usize) -> serde_json::Value {
    json!({"id": format!("t{i}"), "type": "DEPOSIT", "status": "COMPLETED", "currency": "eur", "amount": format!("{i}.01"),
           "fee": 0, "createdAt": "2026-11-25T10:00:00Z", "updatedAt": "2026-11-25T10:00:00Z", "reference": null})
}

#[tokio::test]
async fn paging_streams_every_page_once_and_stops_after_the_last() {
    use futures::TryStreamExt;
    let server = MockServer::start().await;
    for page in 1..=3u32 {
        let rows: Vec<_> = (0..if page < 3 { 2 } else { 1 })
            .map(|j| tx((page as usize - 1) * 2 + j))
            .collect();
        Mock::given(method("GET"))
            .and(path("/v1/partner/transactions"))
            .and(query_param("page", page.to_string()))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(
                    json!({"transactions": rows, "page": page, "size": 2, "total": 5}),
                ),
            )
            .expect(1)
            .mount(&server)
            .await;
    }
    let pages: Vec<_> = client_for(&server.uri())
        .transaction_pages(
            Scope::Partner,
            HistoryQuery {
                size: 2,
                ..HistoryQuery::default()
            },
        )
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<_> = pages
        .iter()
        .flat_map(|p| p.transactions.iter().map(|t| t.id.clone()))
        .collect();
    assert_eq!(ids, vec!["t0", "t1", "t2", "t3", "t4"]);
}

#[tokio::test]
async fn create_exchange_posts_the_documented_body_with_a_numeric_amount() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/partner/exchange"))
        .and(header("x-api-key", KEY))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"amount": 10, "currencyFrom": "eth", "currencyTo": "eur", "lockId": "ee7b2f0f-0ffb-4fce-8fb3-66db2ca1f461"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"exchangeId": "3f0aeaa7-1177-4d77-9985-0cb987809801"})))
        .expect(1)
        .mount(&server)
        .await;
    let created = client_for(&server.uri())
        .create_exchange(&CreateExchange {
            amount: dec("10.00"),
            currency_from: Currency::parse("ETH").unwrap(),
            currency_to: Currency::parse("eur").unwrap(),
            lock_id: "ee7b2f0f-0ffb-4fce-8fb3-66db2ca1f461".into(),
        })
        .await
        .unwrap();
    assert_eq!(created.exchange_id, "3f0aeaa7-1177-4d77-9985-0cb987809801");
}

#[tokio::test]
async fn exchange_lock_and_details_follow_the_assumed_contract() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/partner/exchange/lock"))
        .and(query_param("currencyFrom", "btc"))
        .and(query_param("currencyTo", "eur"))
        .and(query_param("amount", "0.003"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"lockId": "L1", "rate": 97543.98, "expiresAt": "2026-11-26T10:00:30.000Z"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    mount(
        &server,
        "GET",
        "/v1/partner/exchange/ex-1",
        ResponseTemplate::new(200).set_body_json(json!({"exchangeId": "ex-1", "status": "completed", "currencyFrom": "btc",
            "currencyTo": "eur", "amountFrom": "0.003", "amountTo": 288.27, "fee": 4.36, "createdAt": "2026-11-26T10:00:01Z"})),
    )
    .await;
    let client = client_for(&server.uri());
    let lock = client
        .exchange_lock(
            &Currency::parse("btc").unwrap(),
            &Currency::parse("eur").unwrap(),
            dec("0.0030"),
        )
        .await
        .unwrap();
    assert_eq!((lock.lock_id.as_str(), lock.rate), ("L1", dec("97543.98")));
    let details = client.exchange_details("ex-1").await.unwrap();
    assert_eq!(details.status, ExchangeStatus::Completed);
    assert_eq!(
        (details.amount_from, details.amount_to, details.fee),
        (dec("0.003"), dec("288.27"), Some(dec("4.36")))
    );
}

#[tokio::test]
async fn sepa_details_decode_both_the_legacy_and_the_newest_example() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/v1/sepa-transfer/details/7fb02323-969a-4936-94ea-86b8773ff1a2",
        ResponseTemplate::new(200).set_body_json(json!({
          "id": "7fb02323-969a-4936-94ea-86b8773ff1a2", "type": "external", "amount": 100, "transferTitle": "Bank transfer",
          "destinationIban": "LT601010012345678901", "receiverFirstName": "John", "receiverLastName": "Doe",
          "status": "SUCCESSFUL", "currency": "eur", "fee": 10, "createdAt": "2024-01-01T12:34:56Z",
          "user": {"externalUserId": "8bdd8c8a-e9b7-475e-9690-8a34e8b78dab", "email": "Giovani34@yahoo.com", "pesel": null}
        })),
    )
    .await;
    mount(
        &server,
        "GET",
        "/v1/sepa-transfer/details/s2",
        ResponseTemplate::new(200).set_body_json(json!({
          "id": "s2", "type": "external", "amount": "3.8", "status": "FAILED", "currency": "eur", "fee": 0,
          "createdAt": "2025-08-05T10:33:54.730Z", "receiverFirstName": null, "error": {"description": "insufficient funds"}
        })),
    )
    .await;
    let client = client_for(&server.uri());
    let legacy = client
        .sepa_transfer("7fb02323-969a-4936-94ea-86b8773ff1a2")
        .await
        .unwrap();
    assert_eq!(
        (legacy.amount, legacy.fee, legacy.status.clone()),
        (dec("100"), Some(dec("10")), SepaStatus::Successful)
    );
    assert_eq!(
        legacy.user.unwrap().external_user_id,
        "8bdd8c8a-e9b7-475e-9690-8a34e8b78dab"
    );
    let failed = client.sepa_transfer("s2").await.unwrap();
    assert_eq!(
        (failed.amount, failed.status),
        (dec("3.8"), SepaStatus::Failed)
    );
    assert_eq!(failed.error.unwrap()["description"], "insufficient funds");
}

/// Asserts the parts of an error a person on call reads.
fn check_error(
    err: &p100::Error,
    class: ErrorClass,
    status: Option<u16>,
    code: Option<&str>,
    message: Option<&str>,
) {
    assert_eq!(err.class, class, "{err}");
    assert_eq!(err.status.map(|s| s.as_u16()), status, "{err}");
    assert_eq!(err.code.as_deref(), code, "{err}");
    assert_eq!(err.message.as_deref(), message, "{err}");
    let text = err.to_string();
    assert!(!text.contains(KEY), "the key leaked into {text}");
    assert!(text.contains(&err.path), "{text}");
    assert!(!err.request_id.is_empty());
}

fn p_error(status: u16, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

#[tokio::test]
async fn p501_and_p500_arrive_as_http_400_and_are_classified_by_code() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/v1/kyc/status/a",
        p_error(
            400,
            json!({"errorCode": "P501", "errorMessage": "Service temporarily unavailable"}),
        ),
    )
    .await;
    mount(
        &server,
        "GET",
        "/v1/kyc/status/b",
        p_error(
            400,
            json!({"errorCode": "P500", "errorMessage": "Unknown exception"}),
        ),
    )
    .await;
    mount(
        &server,
        "POST",
        "/v1/partner/exchange",
        p_error(
            400,
            json!({"errorCode": "P500", "errorMessage": "Unknown exception"}),
        ),
    )
    .await;
    let client = client_for(&server.uri());

    let e = client.kyc_status("a").await.unwrap_err();
    check_error(
        &e,
        ErrorClass::Transient,
        Some(400),
        Some("P501"),
        Some("Service temporarily unavailable"),
    );
    assert_eq!(e.path, "/v1/kyc/status/a");
    let e = client.kyc_status("b").await.unwrap_err();
    check_error(
        &e,
        ErrorClass::Transient,
        Some(400),
        Some("P500"),
        Some("Unknown exception"),
    );
    let e = client
        .create_exchange(&CreateExchange {
            amount: dec("1"),
            currency_from: Currency::parse("eur").unwrap(),
            currency_to: Currency::parse("btc").unwrap(),
            lock_id: "L".into(),
        })
        .await
        .unwrap_err();
    check_error(
        &e,
        ErrorClass::UnknownOutcome,
        Some(400),
        Some("P500"),
        Some("Unknown exception"),
    );
}

#[tokio::test]
async fn business_errors_keep_code_name_and_message() {
    let server = MockServer::start().await;
    mount(&server, "GET", "/v1/kyc/status/ghost", p_error(400, json!({"errorCode":"P412","errorMessage":"User does not exist","errorName":"invalid-user"}))).await;
    mount(
        &server,
        "GET",
        "/v1/kyc/status/new",
        p_error(404, json!({"errorCode": "P445"})),
    )
    .await;
    mount(
        &server,
        "GET",
        "/v1/sepa-transfer/details/none",
        p_error(
            404,
            json!({"errorCode": "P428", "errorName": "sepa-transfer-not-found"}),
        ),
    )
    .await;
    mount(
        &server,
        "GET",
        "/v1/partner/transactions",
        p_error(
            400,
            json!({"errorCode": "P403", "errorMessage": "size must not be greater than 100"}),
        ),
    )
    .await;
    let client = client_for(&server.uri());

    let e = client.kyc_status("ghost").await.unwrap_err();
    check_error(
        &e,
        ErrorClass::Permanent,
        Some(400),
        Some("P412"),
        Some("User does not exist"),
    );
    assert_eq!(e.name.as_deref(), Some("invalid-user"));
    let e = client.kyc_status("new").await.unwrap_err();
    check_error(&e, ErrorClass::NotYet, Some(404), Some("P445"), None);
    let e = client.sepa_transfer("none").await.unwrap_err();
    check_error(&e, ErrorClass::Permanent, Some(404), Some("P428"), None);
    assert_eq!(e.name.as_deref(), Some("sepa-transfer-not-found"));
    let e = client
        .transactions_page(&Scope::Partner, &HistoryQuery::default(), 1)
        .await
        .unwrap_err();
    check_error(
        &e,
        ErrorClass::Permanent,
        Some(400),
        Some("P403"),
        Some("size must not be greater than 100"),
    );
    assert_eq!(e.name, None);
}

#[tokio::test]
async fn a_401_is_an_auth_error_that_names_the_reason_but_never_the_key() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/v1/partner/balances",
        p_error(401, json!({"message": "Access Denied. xo2"})),
    )
    .await;
    let e = client_for(&server.uri())
        .balances(&Scope::Partner)
        .await
        .unwrap_err();
    check_error(
        &e,
        ErrorClass::Auth,
        Some(401),
        None,
        Some("Access Denied. xo2"),
    );
}

#[tokio::test]
async fn a_gateway_5xx_is_transient_on_reads() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/v1/partner/balances",
        ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"),
    )
    .await;
    let e = client_for(&server.uri())
        .balances(&Scope::Partner)
        .await
        .unwrap_err();
    check_error(
        &e,
        ErrorClass::Transient,
        Some(502),
        None,
        Some("<html>Bad Gateway</html>"),
    );
}

#[tokio::test]
async fn a_429_carries_retry_after_and_pauses_every_clone_of_the_client() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/partner/balances"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "2")
                .set_body_json(json!({"message": "Too Many Requests"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/partner/balances"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"fiatBalances": [], "cryptoBalances": []})),
        )
        .mount(&server)
        .await;
    let client = client_for(&server.uri());

    let e = client.balances(&Scope::Partner).await.unwrap_err();
    check_error(
        &e,
        ErrorClass::Transient,
        Some(429),
        None,
        Some("Too Many Requests"),
    );
    assert_eq!(e.retry_after, Some(Duration::from_secs(2)));

    let started = Instant::now();
    client.clone().balances(&Scope::Partner).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "the next call went out after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_transient_on_reads_unknown_on_writes() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/v1/partner/balances",
        ResponseTemplate::new(200).set_body_string(r#"{"fiatBalances": ["#),
    )
    .await;
    mount(
        &server,
        "POST",
        "/v1/partner/exchange",
        ResponseTemplate::new(200).set_body_string("not json"),
    )
    .await;
    let client = client_for(&server.uri());
    let e = client.balances(&Scope::Partner).await.unwrap_err();
    assert!(matches!(e.failure, Failure::Decode(_)), "{e}");
    assert_eq!(e.class, ErrorClass::Transient);
    let e = client
        .create_exchange(&CreateExchange {
            amount: dec("1"),
            currency_from: Currency::parse("eur").unwrap(),
            currency_to: Currency::parse("btc").unwrap(),
            lock_id: "L".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e.failure, Failure::Decode(_)), "{e}");
    assert_eq!(e.class, ErrorClass::UnknownOutcome);
}

#[tokio::test]
async fn an_amount_that_is_not_a_number_fails_the_decode_with_the_value() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/v1/partner/balances",
        ResponseTemplate::new(200).set_body_json(
            json!({"fiatBalances": [{"id": "x", "amount": "1,50", "name": "eur", "rate": 1}]}),
        ),
    )
    .await;
    let e = client_for(&server.uri())
        .balances(&Scope::Partner)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1,50"), "{e}");
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/partner/balances"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(3))
                .set_body_json(json!({})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/partner/exchange"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(3))
                .set_body_json(json!({"exchangeId": "e"})),
        )
        .mount(&server)
        .await;
    let client = client_with(&server.uri(), |c| {
        c.request_timeout = Duration::from_millis(300)
    });
    let e = client.balances(&Scope::Partner).await.unwrap_err();
    assert_eq!(
        (e.failure.clone(), e.class),
        (Failure::Timeout, ErrorClass::Transient),
        "{e}"
    );
    let e = client
        .create_exchange(&CreateExchange {
            amount: dec("1"),
            currency_from: Currency::parse("eur").unwrap(),
            currency_to: Currency::parse("btc").unwrap(),
            lock_id: "L".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.failure, e.class),
        (Failure::Timeout, ErrorClass::UnknownOutcome)
    );
}

/// A raw HTTP server that answers every connection with `reply` and then closes it.
async fn raw_server(reply: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(reply).await;
            let _ = socket.shutdown().await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_truncated_body_is_a_broken_connection_not_a_value() {
    let uri = raw_server(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 120\r\n\r\n{\"fiatBalances\": [{\"id\": \"x\", \"amount\": \"1").await;
    let e = client_for(&uri)
        .balances(&Scope::Partner)
        .await
        .unwrap_err();
    assert!(matches!(e.failure, Failure::Transport(_)), "{e}");
    assert_eq!(e.class, ErrorClass::Transient);
}

#[tokio::test]
async fn a_dropped_connection_is_transient_on_reads() {
    let uri = raw_server(b"").await;
    let e = client_for(&uri).kyc_status("u").await.unwrap_err();
    assert!(
        matches!(e.failure, Failure::Transport(_) | Failure::Connect),
        "{e}"
    );
    assert_eq!(e.class, ErrorClass::Transient);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_safe_to_retry_even_for_writes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = client_for(&uri)
        .create_exchange(&CreateExchange {
            amount: dec("1"),
            currency_from: Currency::parse("eur").unwrap(),
            currency_to: Currency::parse("btc").unwrap(),
            lock_id: "L".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.failure, e.class),
        (Failure::Connect, ErrorClass::Transient)
    );
}

#[tokio::test]
async fn the_rate_limit_spaces_requests_across_all_clones() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/kyc/status/u"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"status": "VERIFIED", "attemptStatus": "SUCCESSFUL"})),
        )
        .expect(10)
        .mount(&server)
        .await;
    let client = client_with(&server.uri(), |c| {
        c.max_rps = std::num::NonZeroU32::new(5).unwrap()
    });
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.kyc_status("u").await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // Ten requests at five per second: never more than five in any second (the sixth waits
    // for the first's second to pass), so the tenth leaves at least 1.7 s after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(1700),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn debug_output_of_client_and_config_never_shows_the_key() {
    let config = Config::new("http://127.0.0.1:1".parse().unwrap(), ApiKey::new(KEY));
    let shown = format!("{config:?} {:?}", Client::new(config.clone()).unwrap());
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
}

/// Hostile input (security review): no redirect is followed, so the key never reaches the
/// host a `Location` names and a POST is never replayed.
#[tokio::test]
async fn a_redirect_is_an_error_and_the_key_never_leaves_for_its_location() {
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    for status in [301, 302, 307, 308] {
        server.reset().await;
        let target = format!("{}/v1/partner/exchange", elsewhere.uri());
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(status).insert_header("Location", target.as_str()))
            .mount(&server)
            .await;
        let client = client_for(&server.uri());
        let e = client.balances(&Scope::Partner).await.unwrap_err();
        assert_eq!(e.status.map(|s| s.as_u16()), Some(status), "{e}");
        assert_eq!(e.class, ErrorClass::Permanent, "{e}");
        assert!(e.to_string().contains("not followed"), "{e}");
        let body = CreateExchange {
            lock_id: "lock-1".into(),
            amount: dec("10"),
            currency_from: "eur".parse().unwrap(),
            currency_to: "usdt".parse().unwrap(),
        };
        assert!(client.create_exchange(&body).await.is_err());
    }
    // `expect(0)` on `elsewhere` is verified when it drops: nothing reached it.
}

#[test]
fn plain_http_is_refused_for_any_host_but_loopback_or_one_listed() {
    let build = |url: &str, listed: &[&str]| {
        let mut config = Config::new(url.parse().unwrap(), ApiKey::new(KEY));
        config.plain_http_hosts = listed.iter().map(|h| h.to_string()).collect();
        Client::new(config)
    };
    let refused = build("http://partner-api.p100.io", &[]).unwrap_err();
    assert!(refused.to_string().contains("clear text"), "{refused}");
    assert!(!refused.to_string().contains(KEY));
    assert!(build("ftp://127.0.0.1", &[]).is_err());
    assert!(build("http://10.0.0.7:8100", &[]).is_err());
    for ok in [
        "https://partner-api.p100.io",
        "http://127.0.0.1:8100",
        "http://localhost:8100",
        "http://[::1]:8100",
    ] {
        assert!(build(ok, &[]).is_ok(), "{ok}");
    }
    assert!(build("http://sandbox:8100", &["sandbox"]).is_ok());
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_not_held_in_memory() {
    let server = MockServer::start().await;
    let huge = format!(
        r#"{{"fiatBalances": [], "padding": "{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    mount(
        &server,
        "GET",
        "/v1/partner/balances",
        ResponseTemplate::new(200).set_body_raw(huge, "application/json"),
    )
    .await;
    let e = client_for(&server.uri())
        .balances(&Scope::Partner)
        .await
        .unwrap_err();
    assert!(
        matches!(&e.failure, Failure::Decode(d) if d.contains("limit")),
        "{e}"
    );
}

#[tokio::test]
async fn p100s_text_is_bounded_and_cannot_forge_a_log_line() {
    let server = MockServer::start().await;
    let message = format!("\u{1b}[2J\n FAKE LOG LINE {}", "A".repeat(100_000));
    mount(
        &server,
        "GET",
        "/v1/partner/balances",
        ResponseTemplate::new(400)
            .insert_header("x-request-id", "id-1")
            .set_body_json(
                json!({"errorCode": "P403\n", "errorName": "bad\rname", "errorMessage": message}),
            ),
    )
    .await;
    let e = client_for(&server.uri())
        .balances(&Scope::Partner)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        !text.chars().any(char::is_control),
        "control characters survived: {text:?}"
    );
    assert!(
        text.contains("FAKE LOG LINE") && text.len() < 600,
        "{}",
        text.len()
    );
    assert_eq!(e.code(), Some("P403"));
}

/// Security review: `balances --user ..` sent `GET /v1/user/balances` (the URL library
/// resolves dot segments) and stored the partner-level answer as user `..`.
#[tokio::test]
async fn a_dot_segment_id_is_never_sent() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(0)
        .mount(&server)
        .await;
    let client = client_for(&server.uri());
    let e = client.kyc_status("..").await.unwrap_err();
    assert!(matches!(e.failure, Failure::Refused(_)), "{e}");
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(client.sepa_transfer(".").await.is_err());
    assert!(client.balances(&Scope::User("..".into())).await.is_err());
    assert!(client.exchange_details("..").await.is_err());
}
