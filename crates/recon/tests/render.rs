//! The report renderers: the JSON keeps to `schemas/reconciliation.schema.json`, the CSV has
//! one row per discrepancy, the HTML page is self-contained, escaped, and renders in Chromium.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use recon::render;
use recon::report::{
    CurrencyTotal, Explanation, JobsSummary, P100Usage, Report, ReportDiscrepancy, Summary,
    TrendPoint, UnmatchedTransaction,
};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const TRICKY_DETAIL: &str =
    "P100 says \"12,50 EUR\", ledger has 12.00\nsecond line, after a newline";
const SCRIPT_DETAIL: &str = "<script>alert('pwned')</script> & more";

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn t(y: i32, mo: u32, day: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, day, h, mi, 0).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn disc(
    id: &str,
    user: Option<&str>,
    currency: Option<&str>,
    class: &str,
    balances: Option<(&str, &str)>,
    delta: Option<&str>,
    state: &str,
    severity: &str,
    subject: Option<&str>,
    detail: &str,
) -> ReportDiscrepancy {
    ReportDiscrepancy {
        id: id.into(),
        owner: if user.is_some() { "user" } else { "partner" }.into(),
        external_user_id: user.map(Into::into),
        currency: currency.map(Into::into),
        class: class.into(),
        provider_balance: balances.map(|(p, _)| d(p)),
        ledger_balance: balances.map(|(_, l)| d(l)),
        delta: delta.map(d),
        state: state.into(),
        first_seen_at: t(2026, 11, 20, 3, 12),
        severity: severity.into(),
        explanations: vec![],
        subject: subject.map(Into::into),
        detail: Some(detail.into()),
    }
}

/// Every class, all three severities, both owners, an unmatched transaction, incomplete.
fn sample() -> Report {
    let mut balance = disc(
        "70101",
        None,
        Some("eur"),
        "balance_mismatch",
        Some(("125000.50", "124750.50")),
        Some("250.00"),
        "open",
        "high",
        None,
        "Partner EUR differs by 250.00; in-flight SEPA explains part of it",
    );
    balance.explanations = vec![
        Explanation {
            provider_tx_id: "sepa-7731".into(),
            class: "in_flight".into(),
            amount: d("200.00"),
        },
        Explanation {
            provider_tx_id: "tx-99120".into(),
            class: "missing_locally".into(),
            amount: d("50.00"),
        },
    ];
    let mut stale = disc(
        "70110",
        Some("u-3307"),
        Some("eur"),
        "stale_pending",
        None,
        Some("-75.00"),
        "open",
        "low",
        Some("transfer-5521"),
        "Pending at P100 for 3 days",
    );
    stale.first_seen_at = t(2026, 11, 25, 23, 40);
    let discrepancies = vec![
        balance,
        disc(
            "70102",
            Some("u-1042"),
            Some("usdt"),
            "missing_locally",
            None,
            Some("1500.000000"),
            "open",
            "high",
            Some("tx-88412"),
            "Deposit at P100 with no ledger entry",
        ),
        disc(
            "70103",
            Some("u-1042"),
            Some("eur"),
            "missing_at_provider",
            None,
            Some("-40.00"),
            "acknowledged",
            "medium",
            Some("transfer-5510"),
            "Transfer settled locally, not found at P100 after the grace period",
        ),
        disc(
            "70104",
            Some("u-2001"),
            Some("eur"),
            "amount_mismatch",
            None,
            Some("0.50"),
            "open",
            "medium",
            Some("exchange-3381"),
            TRICKY_DETAIL,
        ),
        disc(
            "70105",
            None,
            Some("btc"),
            "currency_mismatch",
            None,
            Some("0.00150000"),
            "open",
            "medium",
            Some("exchange-3390"),
            "Exchange booked in BTC locally, ETH at P100",
        ),
        disc(
            "70106",
            Some("u-2001"),
            Some("eur"),
            "status_mismatch",
            None,
            Some("-12.00"),
            "resolved",
            "low",
            Some("transfer-5512"),
            SCRIPT_DETAIL,
        ),
        disc(
            "70107",
            None,
            Some("eur"),
            "duplicate",
            None,
            Some("99.90"),
            "open",
            "medium",
            Some("tx-88500"),
            "Same transferId seen twice at P100",
        ),
        disc(
            "70108",
            Some("u-4410"),
            Some("gbp"),
            "unknown_account",
            Some(("18.20", "0")),
            Some("18.20"),
            "open",
            "low",
            None,
            "P100 lists a GBP balance with no local account",
        ),
        disc(
            "70109",
            Some("u-5000"),
            None,
            "unknown_user",
            None,
            None,
            "open",
            "high",
            None,
            "Tracked user unknown to P100 (P412)",
        ),
        stale,
    ];
    Report {
        run_id: "run-2026-11-26-0001".into(),
        cutoff: t(2026, 11, 26, 0, 0),
        started_at: t(2026, 11, 26, 2, 0),
        finished_at: Utc.with_ymd_and_hms(2026, 11, 26, 2, 4, 37).unwrap(),
        summary: Summary {
            accounts_checked: 1284,
            matched: 1270,
            matched_in_flight: 10,
            discrepancies: discrepancies.len() as u64,
            by_currency: vec![
                CurrencyTotal {
                    currency: "eur".into(),
                    provider_total: d("1250300.75"),
                    ledger_total: d("1250050.75"),
                    delta: d("250.00"),
                },
                CurrencyTotal {
                    currency: "usdt".into(),
                    provider_total: d("88000.000000"),
                    ledger_total: d("86500.000000"),
                    delta: d("1500.000000"),
                },
                CurrencyTotal {
                    currency: "btc".into(),
                    provider_total: d("3.25000000"),
                    ledger_total: d("3.25000000"),
                    delta: d("0.00000000"),
                },
            ],
        },
        discrepancies,
        unmatched_transactions: vec![
            UnmatchedTransaction {
                provider_tx_id: Some("tx-88412".into()),
                reference: None,
                owner: "user".into(),
                external_user_id: Some("u-1042".into()),
                currency: "usdt".into(),
                amount: d("1500.000000"),
                class: "missing_locally".into(),
                status: "SETTLED".into(),
            },
            UnmatchedTransaction {
                provider_tx_id: None,
                reference: Some("transfer-5510".into()),
                owner: "partner".into(),
                external_user_id: None,
                currency: "eur".into(),
                amount: d("-40.00"),
                class: "missing_at_provider".into(),
                status: "settled".into(),
            },
        ],
        jobs: JobsSummary {
            failed: 2,
            dead: 1,
            oldest_pending_age_seconds: 5_400,
        },
        scope: "all".into(),
        complete: false,
        incomplete_reasons: vec![
            "sync of user u-5000 failed: P100 answered P500 three times".into(),
        ],
        p100: P100Usage {
            calls: 412,
            budget: 5000,
        },
    }
}

/// Twenty nightly runs ending with the sample's (the page shows the last fourteen).
fn trend(report: &Report) -> Vec<TrendPoint> {
    let counts = [
        3u64, 5, 4, 4, 2, 0, 1, 6, 7, 3, 2, 2, 0, 0, 1, 4, 9, 8, 5, 10,
    ];
    let first = t(2026, 11, 7, 2, 0);
    counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let last = i + 1 == counts.len();
            TrendPoint {
                run_id: if last {
                    report.run_id.clone()
                } else {
                    format!("run-trend-{i:02}")
                },
                started_at: first + chrono::Duration::days(i as i64),
                accounts_checked: 1200 + 4 * i as u64,
                discrepancies: n,
                complete: i != 15 && !last,
            }
        })
        .collect()
}

fn schema() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/reconciliation.schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the schema is JSON")
}

fn validator() -> jsonschema::Validator {
    let schema = schema();
    jsonschema::meta::validate(&schema).expect("the schema is a valid draft 2020-12 schema");
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn report_json(report: &Report) -> Value {
    serde_json::from_str(&render::json(report)).expect("render::json is JSON")
}

// ---------------------------------------------------------------------------------------------
// (a) JSON against the schema

#[test]
fn json_validates_against_the_schema() {
    let v = validator();
    let report = sample();
    let value = report_json(&report);
    assert_eq!(errors(&v, &value), Vec::<String>::new());

    // Amounts stay exact strings; times are RFC 3339 UTC.
    assert_eq!(
        value["summary"]["by_currency"][1]["delta"],
        json!("1500.000000")
    );
    assert_eq!(value["discrepancies"][8]["delta"], Value::Null);
    assert_eq!(
        value["discrepancies"][0]["explanations"][0]["amount"],
        json!("200.00")
    );
    assert_eq!(value["cutoff"], json!("2026-11-26T00:00:00.000Z"));

    // A complete, empty report is valid too.
    let mut empty = sample();
    empty.complete = true;
    empty.incomplete_reasons.clear();
    empty.discrepancies.clear();
    empty.unmatched_transactions.clear();
    empty.summary.by_currency.clear();
    assert_eq!(errors(&v, &report_json(&empty)), Vec::<String>::new());
}

// (b) what the schema refuses

#[test]
fn schema_rejects_what_breaks_the_contract() {
    let v = validator();
    let good = report_json(&sample());
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, Mutation)> = vec![
        ("an amount as a JSON number", |r| {
            r["summary"]["by_currency"][0]["provider_total"] = json!(1250300.75)
        }),
        ("a discrepancy amount as a JSON number", |r| {
            r["discrepancies"][0]["delta"] = json!(250)
        }),
        ("an amount with an exponent", |r| {
            r["discrepancies"][0]["delta"] = json!("2.5e2")
        }),
        ("a missing run_id", |r| {
            r.as_object_mut().unwrap().remove("run_id");
        }),
        ("an unknown class", |r| {
            r["discrepancies"][0]["class"] = json!("vibes_mismatch")
        }),
        ("an unknown unmatched class", |r| {
            r["unmatched_transactions"][0]["class"] = json!("mystery")
        }),
        ("an extra top-level field", |r| {
            r.as_object_mut().unwrap().insert("extra".into(), json!(1));
        }),
        ("an extra discrepancy field", |r| {
            r["discrepancies"][0]
                .as_object_mut()
                .unwrap()
                .insert("note".into(), json!("x"));
        }),
        ("an unknown severity", |r| {
            r["discrepancies"][0]["severity"] = json!("critical")
        }),
        ("an unknown state", |r| {
            r["discrepancies"][0]["state"] = json!("closed")
        }),
        ("an unknown owner", |r| {
            r["discrepancies"][0]["owner"] = json!("bank")
        }),
        ("a time with an offset", |r| {
            r["cutoff"] = json!("2026-11-26T01:00:00+01:00")
        }),
        ("a negative count", |r| r["jobs"]["dead"] = json!(-1)),
        ("a fractional count", |r| {
            r["summary"]["matched"] = json!(1.5)
        }),
        ("a null total", |r| {
            r["summary"]["by_currency"][0]["delta"] = Value::Null
        }),
        ("a missing p100 budget", |r| {
            r["p100"].as_object_mut().unwrap().remove("budget");
        }),
        ("incomplete without a reason", |r| {
            r["incomplete_reasons"] = json!([])
        }),
        ("complete with a reason", |r| r["complete"] = json!(true)),
    ];
    for (what, mutate) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(!v.is_valid(&bad), "the schema accepts {what}");
    }
}

// ---------------------------------------------------------------------------------------------
// (c) CSV

#[test]
fn csv_has_one_row_per_discrepancy_and_round_trips() {
    let report = sample();
    let text = render::csv(&report);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        header,
        [
            "id",
            "owner",
            "external_user_id",
            "currency",
            "class",
            "subject",
            "provider_balance",
            "ledger_balance",
            "delta",
            "state",
            "severity",
            "first_seen_at",
            "detail"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), report.discrepancies.len());
    for (row, d) in rows.iter().zip(&report.discrepancies) {
        assert_eq!(row.len(), header.len());
        assert_eq!(&row[0], d.id);
        assert_eq!(&row[4], d.class);
        assert_eq!(&row[12], d.detail.as_deref().unwrap_or(""));
    }

    let tricky = rows.iter().find(|r| &r[0] == "70104").unwrap();
    assert_eq!(&tricky[12], TRICKY_DETAIL);
    assert_eq!(&tricky[8], "0.50");

    // Nulls are empty fields; amounts and times as in the JSON.
    let partner = rows.iter().find(|r| &r[0] == "70101").unwrap();
    assert_eq!(&partner[1], "partner");
    assert_eq!(&partner[2], "");
    assert_eq!(&partner[5], "");
    assert_eq!(&partner[6], "125000.50");
    assert_eq!(&partner[11], "2026-11-20T03:12:00.000Z");
    let unknown_user = rows.iter().find(|r| &r[0] == "70109").unwrap();
    assert_eq!(
        (&unknown_user[3], &unknown_user[6], &unknown_user[8]),
        ("", "", "")
    );

    // An empty report is just the header.
    let mut empty = sample();
    empty.discrepancies.clear();
    assert_eq!(render::csv(&empty).lines().count(), 1);
}

/// Security review: a user id `=HYPERLINK(…)` and a transaction id `=1+2` went into cells a
/// spreadsheet evaluates. Outside text that starts like a formula is prefixed with `'`;
/// negative amounts stay numbers.
#[test]
fn csv_cells_from_outside_never_start_a_formula() {
    let mut report = sample();
    let d = &mut report.discrepancies[0];
    d.external_user_id = Some("=HYPERLINK(\"http://evil\",\"x\")".into());
    d.subject = Some("=1+2".into());
    d.detail = Some("@SUM(A1)".into());
    d.delta = Some("-120.00".parse().unwrap());
    let text = render::csv(&report);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let row = reader.records().next().unwrap().unwrap();
    assert_eq!(&row[2], "'=HYPERLINK(\"http://evil\",\"x\")");
    assert_eq!(&row[5], "'=1+2");
    assert_eq!(&row[12], "'@SUM(A1)");
    assert_eq!(&row[8], "-120.00");
    for record in reader.records() {
        for cell in record.unwrap().iter() {
            assert!(!cell.starts_with(['=', '+', '@']), "{cell}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (d) HTML, as text

#[test]
fn html_is_self_contained_escaped_and_complete() {
    let report = sample();
    let page = render::html(&report, &trend(&report));
    for forbidden in [
        "http://", "https://", "<link", "src=", "<script", "@import", "url(http", "<img",
    ] {
        assert!(!page.contains(forbidden), "the page contains {forbidden:?}");
    }
    // Escaped by the template (maud): <, >, & and " always; ' needs none in text or in the
    // double-quoted attributes maud writes.
    assert!(page.contains("&lt;script&gt;alert('pwned')&lt;/script&gt; &amp; more"));
    for d in &report.discrepancies {
        assert!(page.contains(&d.id), "discrepancy {} is missing", d.id);
    }
    assert!(page.contains("Incomplete report"));
    assert!(page.contains("sync of user u-5000 failed: P100 answered P500 three times"));
    assert!(page.contains("run-2026-11-26-0001"));
    assert!(page.contains("<svg"));
    // Amounts exactly as in the model.
    for amount in [
        "1250300.75",
        "1500.000000",
        "0.00150000",
        "-75.00",
        "125000.50",
    ] {
        assert!(page.contains(amount), "amount {amount} is missing");
    }

    // High before medium before low.
    let pos = |needle: &str| {
        page.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing"))
    };
    assert!(pos("id=\"severity-high\"") < pos("id=\"severity-medium\""));
    assert!(pos("id=\"severity-medium\"") < pos("id=\"severity-low\""));
    assert!(
        pos("id=\"severity-high\"") < pos("70109") && pos("70109") < pos("id=\"severity-medium\"")
    );
    assert!(pos("id=\"severity-low\"") < pos("70110"));

    // The trend shows the last 14 runs, oldest left.
    assert!(!page.contains("run-trend-05"));
    assert!(page.contains("run-trend-06"));
    assert!(pos("run-trend-06") < pos("run-trend-18"));

    // A complete report has no banner.
    let mut complete = sample();
    complete.complete = true;
    complete.incomplete_reasons.clear();
    assert!(!render::html(&complete, &[]).contains("Incomplete report"));
}

#[test]
fn summary_text_tells_the_essentials() {
    let text = render::summary_text(&sample());
    for needle in [
        "run-2026-11-26-0001",
        "2026-11-26T00:00:00.000Z",
        "INCOMPLETE",
        "sync of user u-5000 failed",
        "1284 checked, 1270 matched, 10 matched in flight, 10 discrepancies",
        "1250300.75",
        "high 3, medium 4, low 3",
        "balance_mismatch 1, missing_locally 1",
        "stale_pending 1",
        "412 calls / 5000 budget",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(text.lines().count() < 25, "not short:\n{text}");
}

// ---------------------------------------------------------------------------------------------
// (e) HTML, in a real browser

fn chromium() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromium"))
            .find(|p| p.is_file())
    });
    match on_path.or_else(|| Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.is_file())) {
        Some(p) => p,
        None => panic!(
            "chromium is not installed: the HTML report test needs Debian's chromium package \
             (run scripts/ensure-chromium, or `apt-get install -y chromium`)"
        ),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("recon-render-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs headless Chromium with `extra` arguments on `page`, killing it after 60 s; returns
/// its stdout. Panics with Chromium's stderr when it fails.
fn run_chromium(exe: &Path, tmp: &Path, extra: &[String], page: &Path) -> String {
    let profile = TempDir::new("profile");
    let out_path = tmp.join(format!("stdout-{}.txt", extra.len()));
    let err_path = tmp.join(format!("stderr-{}.txt", extra.len()));
    let mut child = Command::new(exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {extra:?} did not finish within 60 s; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "chromium {extra:?} failed ({status}); stderr:\n{stderr}"
    );
    std::fs::read_to_string(&out_path).unwrap()
}

#[test]
fn html_renders_in_chromium() {
    let exe = chromium();
    let tmp = TempDir::new("page");
    let report = sample();
    let page = tmp.0.join("reconciliation.html");
    std::fs::write(&page, render::html(&report, &trend(&report))).unwrap();

    let dom = run_chromium(&exe, &tmp.0, &["--dump-dom".to_string()], &page);
    assert!(
        dom.contains("<h1>Reconciliation report 2026-11-26</h1>"),
        "heading missing from the DOM Chromium rendered:\n{dom}"
    );
    assert!(
        dom.contains("70104"),
        "a discrepancy id is missing from the DOM"
    );
    assert!(
        !dom.contains("<script>"),
        "the detail's <script> became an element"
    );

    let shot = tmp.0.join("reconciliation.png");
    run_chromium(
        &exe,
        &tmp.0,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1800".to_string(),
        ],
        &page,
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a PNG"
    );
    assert!(png.len() > 10_000, "the screenshot is suspiciously small");
    if let Some(dest) = std::env::var_os("P100_RECON_SCREENSHOT") {
        std::fs::copy(&shot, &dest)
            .unwrap_or_else(|e| panic!("copying the screenshot to {dest:?}: {e}"));
    }
}

/// Issue 15: one table showed `0.75` beside `0.75000000` and `80.5` beside `85.50`. The
/// summary and the page show each currency in its decimal places; the JSON keeps P100's
/// exact strings (the contract).
#[test]
fn the_summary_and_page_show_each_currency_in_its_places_and_the_json_stays_exact() {
    let mut report = sample();
    report.summary.by_currency[0].provider_total = d("80.5");
    report.summary.by_currency[0].ledger_total = d("85.50");
    report.summary.by_currency[2].provider_total = d("0.75");
    let summary = render::summary_text(&report);
    assert!(
        summary.contains("80.50") && summary.contains("85.50"),
        "{summary}"
    );
    assert!(summary.contains("0.75000000"), "{summary}");
    assert!(
        !summary.contains(" 80.5 ") && !summary.contains(" 0.75 "),
        "{summary}"
    );
    let page = render::html(&report, &trend(&report));
    assert!(
        page.contains(">80.50<") && page.contains(">0.75000000<"),
        "mixed places in the page"
    );
    let json = report_json(&report);
    assert_eq!(json["summary"]["by_currency"][0]["provider_total"], "80.5");
    assert_eq!(json["summary"]["by_currency"][2]["provider_total"], "0.75");
}

/// Issue 15: the page was assembled with a hand-placed `escape` per value; one forgotten call
/// was an injection. Now the template escapes every value, in text and in attributes.
#[test]
fn outside_text_cannot_break_out_of_the_page_anywhere() {
    let mut report = sample();
    let hostile = "x\" onmouseover=\"alert(1)\" '<script>=1+2\u{7}";
    for d in report.discrepancies.iter_mut() {
        d.id = format!("{}{hostile}", d.id);
        d.subject = Some(hostile.to_owned());
        d.detail = Some(hostile.to_owned());
        d.owner = hostile.to_owned();
    }
    report.run_id = hostile.to_owned();
    report.scope = hostile.to_owned();
    let page = render::html(&report, &trend(&report));
    assert!(!page.contains("<script"), "a raw script tag");
    assert!(
        !page.contains("onmouseover=\"alert"),
        "an attribute broke out"
    );
    assert!(page.contains("x&quot; onmouseover=&quot;alert(1)&quot; '&lt;script&gt;=1+2"));
}

/// Issue 15: snapshots of the report's three files for a fixed report (the sample: every class,
/// severity and state, an incomplete run, hostile text), so any change to what operators and
/// scripts read shows in review. Update with `INSTA_UPDATE=always cargo test -p recon`.
#[test]
fn the_report_files_match_their_snapshots() {
    let report = sample();
    insta::assert_snapshot!("reconciliation.json", render::json(&report));
    insta::assert_snapshot!("reconciliation.csv", render::csv(&report));
    insta::assert_snapshot!(
        "reconciliation.html",
        render::html(&report, &trend(&report))
    );
    insta::assert_snapshot!("summary.txt", render::summary_text(&report));
}
