//! The reconciliation core, by table.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use recon::check::{
    AccountInput, AccountStatus, Class, InFlight, LocalOp, OpKind, OpState, ProviderRow, TxRules,
    check_account, check_transactions, in_flight,
};
use rust_decimal::Decimal;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn flight(key: &str, amount: &str) -> InFlight {
    InFlight {
        key: key.into(),
        source: "sepa",
        amount: d(amount),
    }
}

#[test]
fn accounts_are_matched_in_flight_or_flagged() {
    // (provider, ledger, in flight, tolerance) → verdict, delta
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Vec<InFlight>,
        &'a str,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (Some("100.00"), Some("100"), vec![], "0", "matched", "0.00"),
        (
            Some("0.1"),
            Some("0.10000000"),
            vec![],
            "0",
            "matched",
            "0.00000000",
        ),
        (
            Some("100.00"),
            Some("100.01"),
            vec![],
            "0",
            "balance_mismatch",
            "-0.01",
        ),
        (
            Some("100.00"),
            Some("100.01"),
            vec![],
            "0.01",
            "matched",
            "-0.01",
        ),
        // Everything in flight explains it.
        (
            Some("749.00"),
            Some("1000.00"),
            vec![flight("t1", "-251.00")],
            "0",
            "in_flight:t1",
            "-251.00",
        ),
        // Only part of what is in flight has reached P100: the smallest subset explains it.
        (
            Some("749.00"),
            Some("1000.00"),
            vec![
                flight("t1", "-251.00"),
                flight("t2", "-10.00"),
                flight("t3", "-5"),
            ],
            "0",
            "in_flight:t1",
            "-251.00",
        ),
        (
            Some("734.00"),
            Some("1000.00"),
            vec![
                flight("t1", "-251.00"),
                flight("t2", "-10.00"),
                flight("t3", "-5"),
            ],
            "0",
            "in_flight:t1,t2,t3",
            "-266.00",
        ),
        // In flight but not the right amount.
        (
            Some("750.00"),
            Some("1000.00"),
            vec![flight("t1", "-251.00")],
            "0",
            "balance_mismatch",
            "-250.00",
        ),
        // P100 does not list the currency: counts as zero.
        (None, Some("0"), vec![], "0", "matched", "0"),
        (None, Some("5"), vec![], "0", "balance_mismatch", "-5"),
        // No local account.
        (Some("0"), None, vec![], "0", "matched", "0"),
        (Some("12.5"), None, vec![], "0", "unknown_account", "12.5"),
        (
            Some("12.5"),
            None,
            vec![flight("dep", "12.5")],
            "0",
            "in_flight:dep",
            "12.5",
        ),
    ];
    for (provider, ledger, in_flight, tolerance, expected, delta) in cases {
        let input = AccountInput {
            provider: provider.map(d),
            ledger: ledger.map(d),
            in_flight,
            tolerance: d(tolerance),
        };
        let got = check_account(&input);
        let verdict = match &got.status {
            AccountStatus::Matched => "matched".to_owned(),
            AccountStatus::MatchedInFlight(items) => format!(
                "in_flight:{}",
                items
                    .iter()
                    .map(|i| i.key.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            AccountStatus::Discrepancy(class) => class.as_str().to_owned(),
        };
        assert_eq!(verdict, expected, "{input:?}");
        assert_eq!(got.delta.to_string(), delta, "{input:?}");
    }
}

fn at(hours_ago: i64) -> DateTime<Utc> {
    now() - chrono::Duration::hours(hours_ago)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap()
}

fn row(id: &str, kind: &str, status: &str, amount: &str, reference: Option<&str>) -> ProviderRow {
    ProviderRow {
        user: None,
        id: id.into(),
        kind: kind.into(),
        status: status.into(),
        currency: "eur".into(),
        amount: d(amount),
        fee: Decimal::ZERO,
        reference: reference.map(str::to_owned),
        updated_at: at(2),
        posted: status == "COMPLETED",
        unreadable: None,
    }
}

fn op(kind: OpKind, key: &str, state: OpState, amount: &str) -> LocalOp {
    LocalOp {
        user: None,
        kind,
        key: key.into(),
        state,
        status: format!("{state:?}"),
        currency: "eur".into(),
        amount: d(amount),
        fee: None,
        since: at(2),
    }
}

#[test]
fn each_transaction_level_class_is_found_and_nothing_else() {
    let rules = TxRules {
        grace: Duration::from_secs(3600),
        stale_after: Duration::from_secs(72 * 3600),
    };
    let mut stale_row = row("p-old", "DEPOSIT", "PENDING", "30", None);
    stale_row.updated_at = at(100);
    let mut unposted = row("p-cash", "CASHBACK", "COMPLETED", "3", None);
    unposted.posted = false;
    let mut usd = row("p-usd", "SEPA_TRANSFER", "COMPLETED", "-40", Some("t-usd"));
    usd.currency = "usd".into();
    let mut stale_op = op(OpKind::Sepa, "t-stale", OpState::Pending, "9");
    stale_op.since = at(80);
    let mut fresh_settled = op(OpKind::Sepa, "t-fresh", OpState::Settled, "8");
    fresh_settled.since = at(0);
    let rows = vec![
        // Matched: a deposit (provider-originated), a settled transfer, an exchange's two legs.
        row("p-dep", "DEPOSIT", "COMPLETED", "100", None),
        row("p-ok", "SEPA_TRANSFER", "COMPLETED", "-50", Some("t-ok")),
        row("p-x1", "EXCHANGE", "COMPLETED", "-20", Some("lock-ok")),
        row("p-x2", "EXCHANGE", "COMPLETED", "0.001", Some("lock-ok")),
        // amount_mismatch, currency_mismatch, status_mismatch, duplicate.
        row("p-amt", "SEPA_TRANSFER", "COMPLETED", "-45", Some("t-amt")),
        usd,
        row("p-fail", "SEPA_TRANSFER", "FAILED", "-60", Some("t-fail")),
        row("p-d1", "SEPA_TRANSFER", "COMPLETED", "-70", Some("t-dup")),
        row("p-d2", "SEPA_TRANSFER", "COMPLETED", "-70", Some("t-dup")),
        // missing_locally twice: no posting; a transfer nobody here started.
        unposted,
        row(
            "p-foreign",
            "SEPA_TRANSFER",
            "COMPLETED",
            "-80",
            Some("t-foreign"),
        ),
        // stale_pending at P100.
        stale_row,
        // A local transfer that failed while P100 completed it.
        row(
            "p-late",
            "SEPA_TRANSFER",
            "COMPLETED",
            "-90",
            Some("t-late"),
        ),
    ];
    let ops = vec![
        op(OpKind::Sepa, "t-ok", OpState::Settled, "50"),
        op(OpKind::Exchange, "lock-ok", OpState::Settled, "20"),
        op(OpKind::Sepa, "t-amt", OpState::Settled, "40"),
        op(OpKind::Sepa, "t-usd", OpState::Settled, "40"),
        op(OpKind::Sepa, "t-fail", OpState::Settled, "60"),
        op(OpKind::Sepa, "t-dup", OpState::Settled, "70"),
        op(OpKind::Sepa, "t-late", OpState::Failed, "90"),
        op(OpKind::Sepa, "t-gone", OpState::Settled, "11"),
        op(OpKind::Sepa, "t-404", OpState::Missing, "12"),
        stale_op,
        // Within the grace period: not yet missing.
        fresh_settled,
    ];
    let check = check_transactions(&rows, &ops, now(), rules);
    let got: Vec<(&str, &str, String)> = check
        .findings
        .iter()
        .map(|f| (f.subject.as_str(), f.class.as_str(), f.amount.to_string()))
        .collect();
    let mut expected = vec![
        ("t-amt", "amount_mismatch", "-45".to_owned()),
        ("t-usd", "currency_mismatch", "-40".to_owned()),
        ("t-fail", "status_mismatch", "-60".to_owned()),
        ("t-dup", "duplicate", "-140".to_owned()),
        ("t-late", "status_mismatch", "-90".to_owned()),
        ("t-gone", "missing_at_provider", "-11".to_owned()),
        ("t-404", "missing_at_provider", "-12".to_owned()),
        ("t-stale", "stale_pending", "-9".to_owned()),
        ("p-cash", "missing_locally", "3".to_owned()),
        ("p-foreign", "missing_locally", "-80".to_owned()),
        ("p-old", "stale_pending", "30".to_owned()),
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort();
    expected.sort();
    assert_eq!(got_sorted, expected);
    // Everything looked at is listed, so findings that disappear can be resolved.
    assert!(check.examined.contains(&(None, "t-ok".to_owned())));
    assert!(check.examined.contains(&(None, "p-dep".to_owned())));
    assert!(
        !check.examined.contains(&(None, "p-ok".to_owned())),
        "matched rows are examined under their operation"
    );
    assert!(
        !check.examined.contains(&(None, "t-fresh".to_owned())),
        "a settled operation within its grace and not yet at P100 proves nothing"
    );
}

#[test]
fn operations_match_only_their_own_owners_rows() {
    // The same reference in a user's history does not satisfy the partner's transfer.
    let mut users_row = row("p-u", "SEPA_TRANSFER", "COMPLETED", "-50", Some("t-1"));
    users_row.user = Some("u-1".into());
    let mut partners_op = op(OpKind::Sepa, "t-1", OpState::Settled, "50");
    partners_op.since = at(5);
    let check = check_transactions(&[users_row], &[partners_op], now(), TxRules::default());
    let got: Vec<(Option<&str>, &str, &str)> = check
        .findings
        .iter()
        .map(|f| (f.user.as_deref(), f.subject.as_str(), f.class.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (None, "t-1", "missing_at_provider"),
            (Some("u-1"), "p-u", "missing_locally"),
        ]
    );
}

#[test]
fn every_class_has_its_stored_spelling() {
    let all = [
        (Class::BalanceMismatch, "balance_mismatch"),
        (Class::MissingLocally, "missing_locally"),
        (Class::MissingAtProvider, "missing_at_provider"),
        (Class::AmountMismatch, "amount_mismatch"),
        (Class::CurrencyMismatch, "currency_mismatch"),
        (Class::StatusMismatch, "status_mismatch"),
        (Class::Duplicate, "duplicate"),
        (Class::UnknownAccount, "unknown_account"),
        (Class::UnknownUser, "unknown_user"),
        (Class::StalePending, "stale_pending"),
    ];
    for (class, name) in all {
        assert_eq!(class.as_str(), name);
        assert_eq!(Class::parse(name), Some(class));
    }
}

#[test]
fn in_flight_counts_a_pending_row_and_its_tracked_transfer_once() {
    let mut pending = row("p-1", "SEPA_TRANSFER", "PENDING", "-100", Some("t-1"));
    pending.fee = d("1");
    let rows = vec![pending, row("p-2", "DEPOSIT", "PENDING", "30", None)];
    let mut tracked = op(OpKind::Sepa, "t-1", OpState::Pending, "100");
    tracked.fee = Some(d("1"));
    let ops = vec![
        tracked,
        op(OpKind::Sepa, "t-2", OpState::Pending, "5"),
        op(OpKind::Sepa, "t-3", OpState::Settled, "7"),
    ];
    let got = in_flight(&rows, &ops);
    let eur: Vec<(String, String)> = got[&(None, "eur".to_owned())]
        .iter()
        .map(|f| (f.key.clone(), f.amount.to_string()))
        .collect();
    assert_eq!(
        eur,
        vec![
            ("p-2".to_owned(), "30".to_owned()),
            ("t-1".to_owned(), "-101".to_owned()),
            ("t-2".to_owned(), "-5".to_owned()),
        ]
    );
}

#[test]
fn an_unknown_status_on_a_posted_row_is_a_status_mismatch() {
    let mut odd = row("x-1", "DEPOSIT", "CHARGEBACK_REQUESTED", "40", None);
    odd.posted = true;
    let unposted = row("x-2", "DEPOSIT", "SOMETHING_NEW", "5", None);
    let check = check_transactions(&[odd, unposted], &[], now(), TxRules::default());
    let found: Vec<(Class, &str)> = check
        .findings
        .iter()
        .map(|f| (f.class, f.subject.as_str()))
        .collect();
    assert_eq!(found, vec![(Class::StatusMismatch, "x-1")]);
}

/// Security review: one huge amount made `check_account` panic (`Addition overflowed`) and
/// every later reconciliation die. Figures at the edge of `Decimal` are a mismatch, never a
/// panic and never a match.
#[test]
fn amounts_at_the_edge_of_decimal_are_flagged_not_a_panic() {
    let huge = Decimal::MAX;
    let result = check_account(&AccountInput {
        provider: Some(huge),
        ledger: Some(-huge),
        in_flight: vec![
            InFlight {
                key: "a".into(),
                source: "sepa",
                amount: huge,
            },
            InFlight {
                key: "b".into(),
                source: "sepa",
                amount: huge,
            },
        ],
        tolerance: Decimal::ZERO,
    });
    assert_eq!(
        result.status,
        AccountStatus::Discrepancy(Class::BalanceMismatch)
    );
    let in_flight_only = check_account(&AccountInput {
        provider: Some(d("1")),
        ledger: Some(d("0")),
        in_flight: vec![
            flight("a", "79228162514264337593543950335"),
            flight("b", "1"),
        ],
        tolerance: Decimal::ZERO,
    });
    assert_eq!(
        in_flight_only.status,
        AccountStatus::MatchedInFlight(vec![flight("b", "1")])
    );
}
