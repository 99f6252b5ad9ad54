//! The operator console in a real browser (Debian's chromium, driven through chromedriver):
//! a morning's work on the demo's data, as an operator and then as a viewer, with a screenshot
//! of every page. Screenshots go to `$CONSOLE_SCREENSHOTS` when set (the committed ones are in
//! `docs/console/`), else to a temporary directory.

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::console::{OPERATOR, VIEWER, tokens_file_text};
use common::{BIN, Daemon, free_port, url_of, write_schedule};
use fantoccini::{Client, ClientBuilder, Locator};
use p100_sandbox::{Sandbox, Scenario};
use sqlx::PgPool;

/// chromedriver in a process group of its own, with the chromium it starts; the whole group is
/// killed on drop, so a failed test leaves no browser behind.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--"])
            .arg(format!("-{}", self.0.id()))
            .status();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromedriver"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "chromedriver is not installed: the console's browser test needs Debian's chromium and \
             chromium-driver packages (scripts/ensure-chromium installs both)"
        )
    })
}

async fn browser() -> (Driver, Client) {
    let port = free_port();
    let driver = Driver(
        Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1360,1000", "--force-device-scale-factor=1", "--lang=en-US"
        ] }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("a chromium session");
    (driver, client)
}

struct Shots {
    dir: PathBuf,
}

impl Shots {
    fn new() -> Shots {
        let dir = match std::env::var_os("CONSOLE_SCREENSHOTS") {
            Some(d) => PathBuf::from(d),
            None => std::env::temp_dir().join(format!("p100-console-shots-{}", std::process::id())),
        };
        std::fs::create_dir_all(&dir).unwrap();
        Shots { dir }
    }

    /// A screenshot of the whole page as it is now: the window grows to the page's height first.
    async fn take(&self, c: &Client, name: &str) {
        let height = c
            .execute("return document.documentElement.scrollHeight", vec![])
            .await
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(1000)
            .clamp(600, 4000) as u32;
        c.set_window_size(1360, height + 120).await.unwrap();
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
        std::fs::write(self.dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// The element, once the page shows it: a click on a link or a form's button returns before
/// the next page has loaded.
async fn arrived(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => panic!(
            "{css} did not show ({e}); the browser is at {}: {}",
            c.current_url().await.unwrap(),
            c.source().await.unwrap()
        ),
    }
}

async fn click(c: &Client, css: &str) {
    arrived(c, css).await.click().await.unwrap();
}

async fn type_into(c: &Client, css: &str, text: &str) {
    arrived(c, css).await.send_keys(text).await.unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    arrived(c, css).await.text().await.unwrap()
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path() == "/login");
    type_into(c, "#token", token).await;
    click(c, "button[type=submit]").await;
    // Only signed-in pages have the navigation bar.
    arrived(c, "nav.top").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/");
}

async fn sign_out(c: &Client) {
    click(c, "nav form button").await;
    arrived(c, "#token").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/login");
}

#[sqlx::test(migrations = false)]
async fn an_operator_does_a_mornings_work_in_the_browser_and_a_viewer_changes_nothing(
    pool: PgPool,
) {
    // The demo's cycle fills the database: nine discrepancies, users, SEPA transfers, an
    // exchange, a stored report.
    let name = pool.connect_options().get_database().unwrap().to_owned();
    let server = std::env::var("DATABASE_URL").expect("tests need DATABASE_URL");
    let reports = std::env::temp_dir().join(format!("console-reports-{}", std::process::id()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["demo", "--database", &name])
            .env("DATABASE_URL", server)
            .env("REPORT_DIR", reports)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And what the night left for a person: a dead job, an exchange in review.
    let dead: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, finished_at, last_error, errors)
         VALUES ('kyc_poll', '{\"v\":1,\"user\":\"alice-0001\"}', 'dead', 3, 3, now(), now(),
                 'P100 answered P500 three times', '[]') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let review = {
        let mut conn = pool.acquire().await.unwrap();
        let owner = ledger::Owner::user("alice-0001").unwrap();
        let id = ledger::exchanges::submit(
            &mut *conn,
            &ledger::exchanges::NewExchange {
                owner: &owner,
                lock_id: "lock-console-1",
                from: "eur",
                to: "btc",
                amount: "250.00".parse().unwrap(),
                expires_at: chrono::Utc::now() + chrono::Duration::minutes(10),
            },
            ledger::intake::FirstJob::LeftToSweep,
        )
        .await
        .unwrap();
        ledger::exchanges::transition(
            &mut conn,
            id,
            "NEEDS_REVIEW",
            None,
            Some("P100 documents no user-level execute path; finalize it by hand"),
        )
        .await
        .unwrap();
        id
    };

    // The daemon with its console on, running no schedule and only a kind nothing is queued for.
    let p100 = Sandbox::from_scenario(Scenario::default())
        .spawn()
        .await
        .unwrap();
    let tokens = std::env::temp_dir().join(format!("console-tokens-{}", std::process::id()));
    std::fs::write(&tokens, tokens_file_text()).unwrap();
    let console_port = free_port();
    let console_addr = format!("127.0.0.1:{console_port}");
    let _daemon = Daemon::start_with(
        &url_of(&pool),
        &p100,
        &write_schedule("console-browser", ""),
        &["--kinds", "report"],
        &[
            ("CONSOLE_TOKENS_FILE", tokens.to_str().unwrap()),
            ("CONSOLE_ADDR", &console_addr),
        ],
        None,
    )
    .await;
    let base = format!("http://{console_addr}");
    // The console starts listening just after the health endpoint.
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/login")).await.is_err() {
        assert!(Instant::now() < deadline, "the console did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_driver, c) = browser().await;
    let shots = Shots::new();

    // Sign-in page, then the overview.
    c.goto(&format!("{base}/")).await.unwrap();
    shots.take(&c, "01-sign-in").await;
    sign_in(&c, &base, OPERATOR).await;
    assert_eq!(text_of(&c, "h1").await, "Overview");
    assert!(text_of(&c, "nav").await.contains("olivia"));
    shots.take(&c, "02-overview").await;

    // Filter the discrepancies: medium ones only.
    c.find(Locator::LinkText("Discrepancies"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrived(&c, "#discrepancies").await;
    let all = c
        .find_all(Locator::Css("#discrepancies tbody tr"))
        .await
        .unwrap()
        .len();
    assert_eq!(all, 9, "the demo's nine discrepancies");
    c.find(Locator::Css("select[name=severity]"))
        .await
        .unwrap()
        .select_by_value("medium")
        .await
        .unwrap();
    click(&c, "form.filters button").await;
    arrived(&c, "select[name=severity] option[value=medium][selected]").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .query()
            .unwrap()
            .contains("severity=medium")
    );
    let rows = c
        .find_all(Locator::Css("#discrepancies tbody tr"))
        .await
        .unwrap();
    assert!(
        !rows.is_empty() && rows.len() < all,
        "{} of {all}",
        rows.len()
    );
    for row in &rows {
        let text = row.text().await.unwrap().to_lowercase();
        assert!(
            text.contains("medium") && !text.contains("low"),
            "only medium ones: {text}"
        );
    }
    shots.take(&c, "03-discrepancies").await;

    // Acknowledge the first with a note, and see the event.
    rows[0]
        .find(Locator::Css("td a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    arrived(&c, "#events").await;
    let detail = c.current_url().await.unwrap();
    shots.take(&c, "04-discrepancy").await;
    type_into(
        &c,
        "form[action$='/acknowledge'] textarea",
        "Asking P100 about the fee on this account",
    )
    .await;
    click(&c, "form[action$='/acknowledge'] button").await;
    assert!(text_of(&c, "[role=status]").await.contains("Acknowledged"));
    let last_event = text_of(&c, "#events tbody tr:last-child").await;
    assert!(
        last_event.contains("acknowledged")
            && last_event.contains("olivia")
            && last_event.contains("Asking P100 about the fee on this account"),
        "{last_event}"
    );
    let id: i64 = detail.path().rsplit('/').next().unwrap().parse().unwrap();
    let state: String = sqlx::query_scalar("SELECT state FROM discrepancies WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "acknowledged");
    shots.take(&c, "05-discrepancy-acknowledged").await;

    // Retry the dead job.
    c.goto(&format!("{base}/jobs?state=dead")).await.unwrap();
    shots.take(&c, "06-jobs").await;
    click(&c, &format!("a[href='/jobs/{dead}']")).await;
    arrived(&c, "form[action$='/retry']").await;
    shots.take(&c, "07-job-dead").await;
    click(&c, "form[action$='/retry'] button").await;
    assert!(
        text_of(&c, "[role=status]")
            .await
            .contains("Queued to run again now.")
    );
    assert!(text_of(&c, "dl.fields").await.contains("pending"));
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(dead)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "pending");

    // Every other page, as an operator finds it.
    let day: chrono::NaiveDate = sqlx::query_scalar("SELECT max(day) FROM reports")
        .fetch_one(&pool)
        .await
        .unwrap();
    for (shot, path, heading) in [
        ("08-users", "/users".to_owned(), "Users & KYC"),
        ("09-user", "/users/bob-0002".to_owned(), "User bob-0002"),
        ("10-sepa", "/sepa".to_owned(), "SEPA transfers"),
        (
            "11-sepa-transfer",
            "/sepa/demo-sepa-ghost".to_owned(),
            "SEPA transfer demo-sepa-ghost",
        ),
        ("12-exchanges", "/exchanges".to_owned(), "Exchanges"),
        (
            "13-exchange-needs-review",
            format!("/exchanges/{review}"),
            &*format!("Exchange {review}"),
        ),
        ("14-reports", "/reports".to_owned(), "Reports"),
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        assert_eq!(text_of(&c, "h1").await, heading, "{path}");
        shots.take(&c, shot).await;
    }
    c.goto(&format!("{base}/exchanges/{review}")).await.unwrap();
    assert!(
        text_of(&c, ".banner")
            .await
            .contains("What a person must check")
    );
    // The transfer P100 never heard of: its hold is released, with a note.
    c.goto(&format!("{base}/sepa/demo-sepa-ghost"))
        .await
        .unwrap();
    assert!(
        text_of(&c, ".banner")
            .await
            .contains("P100 does not know this transfer.")
    );
    type_into(
        &c,
        "form[action$='/release'] textarea",
        "P100 support: never created",
    )
    .await;
    click(&c, "form[action$='/release'] button").await;
    assert!(
        text_of(&c, "[role=status]")
            .await
            .contains("The hold is released")
    );
    assert!(
        text_of(&c, "#events")
            .await
            .contains("hold released by olivia: P100 support: never created")
    );
    let (status, hold): (String, String) = sqlx::query_as(
        "SELECT status, hold_state FROM sepa_transfers WHERE transfer_id = 'demo-sepa-ghost'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), hold.as_str()), ("RELEASED", "released"));
    c.goto(&format!("{base}/reports/{day}")).await.unwrap();
    assert!(text_of(&c, "h1").await.starts_with("Reconciliation report"));
    shots.take(&c, "15-report").await;
    // The archive's files are the report's own, behind the same session.
    let operator = c.get_named_cookie("p100_console").await.unwrap();
    let download = |file: &'static str| {
        let url = format!("{base}/reports/{day}/{file}");
        let cookie = format!("p100_console={}", operator.value());
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::OK, "{file}");
            let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
            let disposition = r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .to_owned();
            (kind, disposition, r.text().await.unwrap())
        }
    };
    let (kind, disposition, json) = download("reconciliation.json").await;
    assert_eq!(kind, "application/json");
    assert!(
        disposition.contains(&format!("reconciliation-{day}.json")),
        "{disposition}"
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["summary"]["discrepancies"], 9);
    let (kind, _, csv) = download("reconciliation.csv").await;
    assert!(kind.starts_with("text/csv"));
    assert!(csv.starts_with("id,owner,external_user_id,currency,class"));
    assert_eq!(csv.lines().count(), 10, "a header and nine rows");
    c.goto(&format!("{base}/")).await.unwrap();
    sign_out(&c).await;

    // A viewer sees the same pages and no way to change anything.
    sign_in(&c, &base, VIEWER).await;
    c.goto(&format!("{base}/discrepancies/{id}")).await.unwrap();
    assert!(
        c.find_all(Locator::Css("main form"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        text_of(&c, ".readonly")
            .await
            .contains("need the operator role")
    );
    shots.take(&c, "16-viewer-discrepancy").await;
    c.goto(&format!("{base}/jobs")).await.unwrap();
    assert!(
        c.find_all(Locator::Css("main form[method=post]"))
            .await
            .unwrap()
            .is_empty()
    );
    // Posting directly, with the viewer's session: refused with and without a CSRF token.
    let cookie = c.get_named_cookie("p100_console").await.unwrap();
    let csrf = c
        .find(Locator::Css("nav input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for form in [
        vec![("note", "viewer")],
        vec![("note", "viewer"), ("csrf", &*csrf)],
    ] {
        for path in [
            format!("/discrepancies/{id}/resolve"),
            format!("/jobs/{dead}/cancel"),
            "/kinds/tx_sync/pause".to_owned(),
        ] {
            let r = http
                .post(format!("{base}{path}"))
                .header("cookie", format!("p100_console={}", cookie.value()))
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                reqwest::StatusCode::FORBIDDEN,
                "{path} {form:?}"
            );
        }
    }
    let unchanged: (String, String, i64) = sqlx::query_as(
        "SELECT (SELECT state FROM discrepancies WHERE id = $1), (SELECT state FROM jobs WHERE id = $2),
                (SELECT count(*) FROM paused_kinds)",
    )
    .bind(id)
    .bind(dead)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unchanged, ("acknowledged".into(), "pending".into(), 0));
    c.close().await.unwrap();
}
