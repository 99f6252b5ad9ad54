//! The operator console over real HTTP against a fresh database: who may see and change what,
//! the CSRF token on every change, each action's effect as the database records it, hostile
//! text escaped on every page, and snapshots of the pages.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicU8;

use chrono::{TimeZone, Utc};
use common::console::{OPERATOR, VIEWER, Visitor, field, tokens_file_text};
use ledger::Owner;
use ledger::discrepancies::Finding;
use ledger::exchanges::NewExchange;
use ledger::intake::FirstJob;
use p100_recon::console::{Console, Tokens};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use sqlx::PgPool;

/// Ids, texts and notes an attacker could place: markup, quotes, a spreadsheet formula and
/// control characters (escape sequences, NUL is refused by Postgres itself).
const HOSTILE: &str = "<script>alert(1)</script>\"'=1+2";
const HOSTILE_CONTROL: &str = "<img src=x onerror=alert(1)>\u{1b}[31m\u{7}bell";

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Serves the console on a free port; returns its base URL.
async fn serve(pool: &PgPool, tokens: &str) -> String {
    let console = Console {
        pool: pool.clone(),
        tokens: Arc::new(Tokens::parse(tokens).unwrap()),
        p100: Arc::new(AtomicU8::new(0)),
        schedule: Arc::new(p100_recon::commands::daemon::load_schedule(None).unwrap()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, p100_recon::console::router(console))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

/// What the tests find on the pages: returns (open discrepancy, hostile discrepancy, dead job,
/// pending job, exchange in review).
async fn seed(pool: &PgPool) -> (i64, i64, i64, i64, i64) {
    let mut conn = pool.acquire().await.unwrap();
    ledger::users::track(
        &mut *conn,
        &[
            "alice-0001".to_owned(),
            "alice smith".to_owned(),
            HOSTILE.to_owned(),
        ],
        "test",
        FirstJob::LeftToSweep,
    )
    .await
    .unwrap();
    let partner = Finding {
        owner: Owner::Partner,
        currency: Some("eur".into()),
        subject: None,
        class: "balance_mismatch".into(),
        provider_balance: Some(dec("24337.51")),
        ledger_balance: Some(dec("24330.01")),
        delta: Some(dec("7.5")),
        amount: None,
        explanations: serde_json::json!([{ "provider_tx_id": "tx-fee-9", "class": "missing_locally", "amount": "7.50" }]),
        detail: Some("P100 holds 7.50 EUR more than the ledger".into()),
    };
    let (open, _) = ledger::discrepancies::raise(&mut conn, &partner, "reconcile", None, |_| {
        "high".to_owned()
    })
    .await
    .unwrap();
    let hostile = Finding {
        owner: Owner::user(HOSTILE).unwrap(),
        currency: Some("usdc".into()),
        subject: Some(HOSTILE.into()),
        class: "missing_locally".into(),
        provider_balance: None,
        ledger_balance: None,
        delta: None,
        amount: Some(dec("50.000000")),
        explanations: serde_json::json!([]),
        detail: Some(format!("{HOSTILE_CONTROL}\nsecond line")),
    };
    let (hostile_id, _) =
        ledger::discrepancies::raise(&mut conn, &hostile, "reconcile", None, |_| "low".to_owned())
            .await
            .unwrap();
    let job = |user: &str| queue::NewJob {
        kind: "kyc_poll".into(),
        payload: serde_json::json!({ "v": 1, "user": user }),
        dedup_key: Some(format!("kyc:{user}")),
        run_at: Some(Utc::now() + chrono::Duration::hours(1)),
        max_attempts: 3,
    };
    let dead = queue::store::enqueue(&mut conn, &job(HOSTILE))
        .await
        .unwrap()
        .id;
    sqlx::query(
        "UPDATE jobs SET state = 'dead', attempts = 3, finished_at = now(), last_error = $2 WHERE id = $1",
    )
    .bind(dead)
    .bind(format!("P100 said {HOSTILE_CONTROL}"))
    .execute(&mut *conn)
    .await
    .unwrap();
    let pending = queue::store::enqueue(&mut conn, &job("alice-0001"))
        .await
        .unwrap()
        .id;
    let owner = Owner::user("alice-0001").unwrap();
    let exchange = ledger::exchanges::submit(
        &mut *conn,
        &NewExchange {
            owner: &owner,
            lock_id: "lock-review-1",
            from: "eur",
            to: "btc",
            amount: dec("100.00"),
            expires_at: Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap(),
        },
        FirstJob::LeftToSweep,
    )
    .await
    .unwrap();
    ledger::exchanges::transition(
        &mut conn,
        exchange,
        "NEEDS_REVIEW",
        None,
        Some(&format!(
            "P100 documents no user-level execute path; {HOSTILE}"
        )),
    )
    .await
    .unwrap();
    seed_missing_transfer(pool).await;
    (open, hostile_id, dead, pending, exchange)
}

/// A partner SEPA transfer P100 never showed (`ghost-1`, 42.00 EUR held).
async fn seed_missing_transfer(pool: &PgPool) {
    let mut tx = pool.begin().await.unwrap();
    let t = ledger::sepa::track(
        &mut tx,
        &Owner::Partner,
        "ghost-1",
        dec("42.00"),
        "eur",
        FirstJob::LeftToSweep,
    )
    .await
    .unwrap();
    ledger::sepa::place_hold(&mut tx, &t).await.unwrap();
    let t = ledger::sepa::load_for_update(&mut tx, t.id)
        .await
        .unwrap()
        .unwrap();
    let missing = ledger::sepa::Observation {
        status: ledger::sepa::MISSING.into(),
        note: Some("P100 does not know it (P428)".into()),
        ..Default::default()
    };
    ledger::sepa::record(&mut tx, &t, &missing).await.unwrap();
    tx.commit().await.unwrap();
}

async fn state_of_discrepancy(pool: &PgPool, id: i64) -> (String, i64) {
    sqlx::query_as(
        "SELECT state, (SELECT count(*) FROM discrepancy_events WHERE discrepancy = $1) FROM discrepancies WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn state_of_transfer(pool: &PgPool, transfer: &str) -> (String, String) {
    sqlx::query_as("SELECT status, hold_state FROM sepa_transfers WHERE transfer_id = $1")
        .bind(transfer)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn state_of_job(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn paused(pool: &PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT kind, paused_by, note FROM paused_kinds ORDER BY kind")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn pages(open: i64, dead: i64, exchange: i64) -> Vec<String> {
    vec![
        "/".into(),
        "/discrepancies".into(),
        format!("/discrepancies/{open}"),
        "/jobs".into(),
        format!("/jobs/{dead}"),
        "/users".into(),
        "/users/alice-0001".into(),
        "/sepa".into(),
        "/exchanges".into(),
        format!("/exchanges/{exchange}"),
        "/reports".into(),
    ]
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn nothing_is_shown_without_signing_in_with_a_token_from_the_file(pool: PgPool) {
    let (open, _, dead, _, exchange) = seed(&pool).await;
    let base = serve(&pool, &tokens_file_text()).await;
    let mut v = Visitor::new(&base);

    for path in pages(open, dead, exchange) {
        let a = v.get(&path).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{path}");
        let to = a.location.unwrap();
        assert!(to.starts_with("/login?next="), "{path} → {to}");
        assert!(!a.body.contains("balance_mismatch"), "{path}");
    }
    let a = v
        .post(&format!("/discrepancies/{open}/resolve"), &[("note", "x")])
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // A wrong token: 401, no session.
    let a = v.sign_in("olivia-token-0123456789abcdeX").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("That token is not valid."));
    assert!(v.session.is_none());
    assert!(
        !a.body.contains("olivia-token"),
        "the token is not echoed back"
    );

    // A sign-in form posted from elsewhere (no form cookie): refused.
    let a = v
        .post(
            "/login",
            &[("token", OPERATOR), ("form", "0"), ("next", "/")],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.cookies.iter().all(|c| !c.starts_with("p100_console=")));

    let a = v.sign_in(OPERATOR).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let cookie = a
        .cookies
        .iter()
        .find(|c| c.starts_with("p100_console="))
        .unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    // Only the SHA-256 of the session id is stored (computed by the daemon: the id itself is
    // never sent to Postgres).
    let sid = v.session.clone().unwrap();
    let (stored, expected): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT id_hash, sha256(convert_to($1, 'UTF8')) FROM console_sessions")
            .bind(&sid)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, expected);

    for path in pages(open, dead, exchange) {
        let r = v
            .http
            .get(format!("{base}{path}"))
            .header("cookie", format!("p100_console={sid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["cache-control"], "no-store");
        let body = r.text().await.unwrap();
        assert!(body.contains("olivia"), "{path} names who is signed in");
        assert!(!body.contains("<script"), "{path} runs no script");
    }

    // Signing out needs the CSRF token too, and then ends the session for good.
    let a = v.post("/logout", &[]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(v.get("/").await.status, StatusCode::OK, "still signed in");
    let csrf = v.csrf("/").await;
    let a = v.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(v.get("/").await.status, StatusCode::SEE_OTHER);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_viewer_reads_everything_and_changes_nothing(pool: PgPool) {
    let (open, _, dead, pending, _) = seed(&pool).await;
    let base = serve(&pool, &tokens_file_text()).await;
    let mut v = Visitor::new(&base);
    assert_eq!(v.sign_in(VIEWER).await.status, StatusCode::SEE_OTHER);

    let page = v.get(&format!("/discrepancies/{open}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("balance_mismatch"));
    assert!(
        !page.body.contains("/acknowledge\""),
        "no form for a viewer"
    );
    assert!(
        page.body
            .contains("acknowledging and resolving need the operator role")
    );
    let page = v.get(&format!("/jobs/{dead}")).await;
    assert!(!page.body.contains("/retry\""));
    assert!(!v.get("/jobs").await.body.contains("/pause\""));

    let before = (
        state_of_discrepancy(&pool, open).await,
        state_of_job(&pool, dead).await,
        state_of_job(&pool, pending).await,
        state_of_transfer(&pool, "ghost-1").await,
    );
    // The viewer's own CSRF token (from the sign-out form) does not make them an operator;
    // without it the POST is refused before the role is even considered.
    let csrf = v.csrf("/").await;
    let actions: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/discrepancies/{open}/acknowledge"),
            vec![("note", "on it")],
        ),
        (
            format!("/discrepancies/{open}/resolve"),
            vec![("note", "fixed")],
        ),
        (format!("/jobs/{dead}/retry"), vec![]),
        (format!("/jobs/{pending}/cancel"), vec![]),
        (
            "/kinds/kyc_poll/pause".into(),
            vec![("note", "maintenance")],
        ),
        ("/kinds/kyc_poll/resume".into(), vec![]),
        ("/sepa/ghost-1/release".into(), vec![("note", "never made")]),
        (format!("/discrepancies/{open}/recheck"), vec![]),
    ];
    for (path, form) in &actions {
        let mut with = form.clone();
        with.push(("csrf", &csrf));
        let a = v.post(path, &with).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}");
        assert!(a.body.contains("Viewers cannot change anything"), "{path}");
        let a = v.post(path, form).await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{path} without a CSRF token"
        );
        assert!(a.body.contains("did not come from this console"), "{path}");
    }
    let after = (
        state_of_discrepancy(&pool, open).await,
        state_of_job(&pool, dead).await,
        state_of_job(&pool, pending).await,
        state_of_transfer(&pool, "ghost-1").await,
    );
    assert_eq!(before, after, "nothing changed");
    assert!(paused(&pool).await.is_empty());
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn an_operator_acknowledges_resolves_retries_cancels_and_pauses_under_their_name(
    pool: PgPool,
) {
    let (open, _, dead, pending, _) = seed(&pool).await;
    let base = serve(&pool, &tokens_file_text()).await;
    let mut v = Visitor::new(&base);
    v.sign_in(OPERATOR).await;
    let detail = format!("/discrepancies/{open}");
    let csrf = v.csrf(&detail).await;

    // Another session's token (or none) is refused.
    let a = v
        .post(
            &format!("{detail}/acknowledge"),
            &[("note", "x"), ("csrf", &"0".repeat(64))],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // A note is required.
    let a = v
        .post(
            &format!("{detail}/acknowledge"),
            &[("note", "  "), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(a.body.contains("A note is required"));
    // And at most 2,000 characters.
    let long = "x".repeat(2001);
    let a = v
        .post(
            &format!("{detail}/acknowledge"),
            &[("note", &long), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(a.body.contains("at most 2,000 characters"));
    assert_eq!(state_of_discrepancy(&pool, open).await, ("open".into(), 1));

    let a = v
        .post(
            &format!("{detail}/acknowledge"),
            &[("note", "Asking P100 about tx-fee-9"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        a.location.as_deref(),
        Some(&*format!("{detail}?done=acknowledged"))
    );
    let page = v.get(a.location.as_deref().unwrap()).await;
    assert!(
        page.body
            .contains("Acknowledged; the note is in the event log.")
    );
    assert!(page.body.contains("Asking P100 about tx-fee-9"));
    let events: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT event, actor, note FROM discrepancy_events WHERE discrepancy = $1 ORDER BY id",
    )
    .bind(open)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        events.last().unwrap(),
        &(
            "acknowledged".to_owned(),
            "olivia".to_owned(),
            Some("Asking P100 about tx-fee-9".to_owned())
        )
    );
    // Acknowledging twice says why not.
    let a = v
        .post(
            &format!("{detail}/acknowledge"),
            &[("note", "again"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(
        a.body.contains("is acknowledged; ack applies to open ones"),
        "{}",
        a.body
    );
    // Check the owner again now: a reconciliation of the partner alone, with its sync.
    let a = v
        .post(&format!("{detail}/recheck"), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let to = a.location.unwrap();
    let job: i64 = to
        .trim_start_matches("/jobs/")
        .trim_end_matches("?done=queued")
        .parse()
        .unwrap();
    let (kind, payload): (String, serde_json::Value) =
        sqlx::query_as("SELECT kind, payload FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(kind, "reconcile");
    assert_eq!(
        (payload["partner"].as_bool(), payload["sync"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(
        v.get(&to)
            .await
            .body
            .contains("Queued: reload to follow it")
    );

    // Asked again while that job waits: the same job is brought forward, and the page says so.
    let a = v
        .post(&format!("{detail}/recheck"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        a.location.as_deref(),
        Some(&*format!("/jobs/{job}?done=brought_forward"))
    );
    assert!(
        v.get(a.location.as_deref().unwrap())
            .await
            .body
            .contains("was already waiting")
    );

    let a = v
        .post(
            &format!("{detail}/resolve"),
            &[("note", "Fee booked by hand"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        state_of_discrepancy(&pool, open).await,
        ("resolved".into(), 3)
    );

    // A resolved one is not rechecked from here.
    let a = v
        .post(&format!("{detail}/recheck"), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(a.body.contains("It is resolved"));

    // Retry a dead job: it is due now with its kind's attempts afresh.
    let a = v
        .post(&format!("/jobs/{dead}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let (state, attempts, max, due): (String, i32, i32, bool) = sqlx::query_as(
        "SELECT state, attempts, max_attempts, run_at <= now() FROM jobs WHERE id = $1",
    )
    .bind(dead)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((state.as_str(), due), ("pending", true));
    assert!(max > attempts, "{attempts} of {max}");
    // A pending job cannot be retried; it can be cancelled.
    let a = v
        .post(&format!("/jobs/{pending}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(
        a.body
            .contains("only failed, dead or cancelled jobs can be retried")
    );
    let a = v
        .post(&format!("/jobs/{pending}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(state_of_job(&pool, pending).await, "cancelled");

    // Pause needs a note; the pause is recorded under the name.
    let a = v.post("/kinds/kyc_poll/pause", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let a = v
        .post(
            "/kinds/kyc_poll/pause",
            &[("note", "KYC provider outage"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        paused(&pool).await,
        vec![(
            "kyc_poll".into(),
            "olivia".into(),
            "KYC provider outage".into()
        )]
    );
    let jobs_page = v.get("/jobs").await.body;
    assert!(jobs_page.contains("KYC provider outage"));
    assert!(jobs_page.contains("/kinds/kyc_poll/resume"));
    let a = v.post("/kinds/kyc_poll/resume", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(paused(&pool).await.is_empty());
    let a = v
        .post(
            "/kinds/no_such_kind/pause",
            &[("note", "x"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = v
        .post(
            "/sepa/never-tracked/release",
            &[("note", "x"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.contains("no SEPA transfer never-tracked is tracked"));
    // Ids are numbers: anything else is no page, and changes nothing.
    for path in ["/discrepancies/1e3", "/jobs/-x", "/discrepancies/%3Cb%3E"] {
        let a = v.get(path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert!(a.body.contains("Ids are numbers."), "{path}");
    }
    let a = v.post("/jobs/x/retry", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn hostile_ids_and_texts_are_escaped_on_every_page(pool: PgPool) {
    let (open, hostile, dead, _, exchange) = seed(&pool).await;
    let base = serve(&pool, &tokens_file_text()).await;
    let mut v = Visitor::new(&base);
    v.sign_in(OPERATOR).await;
    let user_page = format!(
        "/users/{}",
        url::form_urlencoded::byte_serialize(HOSTILE.as_bytes()).collect::<String>()
    );
    let mut all = pages(open, dead, exchange);
    all.extend([
        format!("/discrepancies/{hostile}"),
        user_page,
        "/discrepancies?owner=%3Cscript%3E".into(),
    ]);
    for path in &all {
        let a = v.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        for raw in ["<script", "<img", "\u{1b}", "\u{7}"] {
            assert!(!a.body.contains(raw), "{path} shows {raw:?} raw");
        }
    }
    let page = v.get(&format!("/discrepancies/{hostile}")).await.body;
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'=1+2"),
        "{page}"
    );
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;\u{fffd}[31m\u{fffd}bell\nsecond line")
    );
    let page = v.get(&format!("/jobs/{dead}")).await.body;
    assert!(page.contains("P100 said &lt;img src=x onerror=alert(1)&gt;\u{fffd}[31m"));
    // A filter value is shown back escaped too.
    let page = v.get("/discrepancies?owner=%3Cscript%3E%22").await.body;
    assert!(page.contains("value=\"&lt;script&gt;&quot;\""), "{page}");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn sign_in_goes_on_only_to_a_page_of_the_console_and_sessions_expire(pool: PgPool) {
    let base = serve(&pool, &tokens_file_text()).await;
    // Browsers drop tabs and line breaks from a Location: `/\t/evil.example/` would be
    // `//evil.example/`, another site.
    for next in [
        "/\t/evil.example/",
        "/\n/evil.example/",
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let mut v = Visitor::new(&base);
        let a = v.sign_in_to(OPERATOR, next).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(a.location.as_deref(), Some("/"), "{next:?}");
    }
    let mut v = Visitor::new(&base);
    let a = v.sign_in_to(OPERATOR, "/jobs?state=dead").await;
    assert_eq!(a.location.as_deref(), Some("/jobs?state=dead"));

    // A session past its time signs nobody in.
    assert_eq!(v.get("/").await.status, StatusCode::OK);
    sqlx::query("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(v.get("/").await.status, StatusCode::SEE_OTHER);
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn links_to_users_work_whatever_their_ids_hold(pool: PgPool) {
    seed(&pool).await;
    let base = serve(&pool, &tokens_file_text()).await;
    let mut v = Visitor::new(&base);
    v.sign_in(OPERATOR).await;
    let page = v.get("/users").await.body;
    let hrefs: Vec<&str> = page
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|h| h.starts_with("/users/"))
        .collect();
    assert_eq!(hrefs.len(), 3, "{hrefs:?}");
    for href in hrefs {
        // The page's href, as a browser would follow it (maud escaped `&` as `&amp;`).
        let a = v.get(&href.replace("&amp;", "&")).await;
        assert_eq!(a.status, StatusCode::OK, "{href}");
        assert!(a.body.contains("<h1>User "), "{href}");
    }
    assert!(
        v.get("/users/alice%20smith")
            .await
            .body
            .contains("<h1>User alice smith</h1>")
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_pause_someone_else_made_first_stands_and_filters_not_applied_are_said(pool: PgPool) {
    seed(&pool).await;
    let base = serve(&pool, &tokens_file_text()).await;
    let mut v = Visitor::new(&base);
    v.sign_in(OPERATOR).await;
    let csrf = v.csrf("/jobs").await;
    let pause = |note: &'static str| [("note", note), ("csrf", csrf.as_str())];
    assert_eq!(
        v.post("/kinds/tx_sync/pause", &pause("first")).await.status,
        StatusCode::SEE_OTHER
    );
    let a = v.post("/kinds/tx_sync/pause", &pause("second")).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(a.body.contains("tx_sync was already paused"));
    assert_eq!(
        paused(&pool).await,
        vec![("tx_sync".into(), "olivia".into(), "first".into())]
    );
    assert_eq!(
        v.post("/kinds/tx_sync/resume", &[("csrf", &csrf)])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let a = v.post("/kinds/tx_sync/resume", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::CONFLICT);

    let page = v.get("/jobs?kind=bogus&state=dead").await.body;
    assert!(
        page.contains("Not applied: </strong>kind &quot;bogus&quot; is not one of noop"),
        "{page}"
    );
    assert!(
        page.contains("<option value=\"dead\" selected>"),
        "the valid filter applies"
    );
    let page = v.get("/discrepancies?severity=urgent&owner=%20").await.body;
    assert!(page.contains("severity &quot;urgent&quot; is not one of high, medium, low"));
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn a_name_taken_out_of_the_file_is_signed_out_and_a_role_taken_away_applies_at_once(
    pool: PgPool,
) {
    let (open, ..) = seed(&pool).await;
    let base = serve(&pool, &tokens_file_text()).await;
    let mut olivia = Visitor::new(&base);
    olivia.sign_in(OPERATOR).await;
    let mut victor = Visitor::new(&base);
    victor.sign_in(VIEWER).await;
    let csrf = olivia.csrf("/").await;

    // The same database, served with a file where olivia only views and victor is gone (as
    // after an edit of the file and a restart).
    let edited = format!("olivia viewer {OPERATOR}\n");
    let base2 = serve(&pool, &edited).await;
    victor.base = base2.clone();
    assert_eq!(victor.get("/").await.status, StatusCode::SEE_OTHER);
    olivia.base = base2;
    assert_eq!(olivia.get("/").await.status, StatusCode::OK);
    let a = olivia
        .post(
            &format!("/discrepancies/{open}/resolve"),
            &[("note", "x"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(state_of_discrepancy(&pool, open).await.0, "open");

    // A new token for olivia (the old one leaked): sessions of the old one no longer count.
    let rotated = "olivia operator olivia-new-token-0123456789abcdef\n";
    olivia.base = serve(&pool, rotated).await;
    assert_eq!(olivia.get("/").await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        olivia.sign_in(OPERATOR).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        olivia
            .sign_in("olivia-new-token-0123456789abcdef")
            .await
            .status,
        StatusCode::SEE_OTHER
    );
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn the_pages_look_as_recorded(pool: PgPool) {
    let (open, hostile, dead, _, exchange) = seed(&pool).await;
    let base = serve(&pool, &tokens_file_text()).await;
    let mut v = Visitor::new(&base);
    v.sign_in(OPERATOR).await;
    let csrf = v.csrf("/").await;
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(
        r"(?s)<style>.*?</style>",
        "<style>[the report's CSS and the console's]</style>",
    );
    settings.add_filter(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "[time]");
    settings.add_filter(&regex::escape(&csrf), "[csrf]");
    settings.add_filter(
        r#"<div class="v">\d+ (s|m \d+ s)</div>"#,
        r#"<div class="v">[age]</div>"#,
    );
    let _guard = settings.bind_to_scope();
    for (name, path) in [
        ("overview", "/".to_owned()),
        ("discrepancy", format!("/discrepancies/{open}")),
        ("discrepancy_hostile", format!("/discrepancies/{hostile}")),
        ("job_dead", format!("/jobs/{dead}")),
        ("exchange_needs_review", format!("/exchanges/{exchange}")),
    ] {
        let page = v.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        // One element per line, so a change shows as the lines it touches.
        let lines = page.body.replace('>', ">\n");
        insta::assert_snapshot!(name, lines);
    }
    assert!(field(&v.get("/").await.body, "csrf").is_some());
}

#[test]
fn the_daemon_refuses_a_bad_tokens_file_without_showing_a_token() {
    let dir = std::env::temp_dir().join(format!("p100-console-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens");
    std::fs::write(&file, format!("olivia admin {OPERATOR}\n")).unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("daemon")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("P100_BASE_URL", "http://127.0.0.1:1")
        .env("P100_API_KEY", "k")
        .env("CONSOLE_TOKENS_FILE", &file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 1: role \"admin\" is neither viewer nor operator"),
        "{stderr}"
    );
    assert!(!stderr.contains(OPERATOR), "{stderr}");
}

#[sqlx::test(migrator = "ledger::MIGRATOR")]
async fn an_operator_releases_the_hold_of_a_transfer_p100_never_showed_once(pool: PgPool) {
    let hold = |pool: PgPool| async move {
        sqlx::query_scalar::<_, Decimal>(
            "SELECT COALESCE(sum(balance), 0) FROM ledger_accounts WHERE owner_kind = 'partner_hold' AND currency = 'eur'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    seed(&pool).await;
    assert_eq!(
        hold(pool.clone()).await.abs(),
        dec("42.00"),
        "the hold is placed"
    );

    let base = serve(&pool, &tokens_file_text()).await;
    let mut v = Visitor::new(&base);
    v.sign_in(OPERATOR).await;
    let page = v.get("/sepa/ghost-1").await.body;
    assert!(page.contains("P100 does not know this transfer."));
    let csrf = field(&page, "csrf").unwrap();
    let a = v.post("/sepa/ghost-1/release", &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "a note is required");
    let form = [
        ("note", "P100 support: never created"),
        ("csrf", csrf.as_str()),
    ];
    let a = v.post("/sepa/ghost-1/release", &form).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let page = v.get(a.location.as_deref().unwrap()).await.body;
    assert!(page.contains("The hold is released"));
    assert!(page.contains("hold released by olivia: P100 support: never created"));
    // Twice: refused, and the hold was reversed once.
    let a = v.post("/sepa/ghost-1/release", &form).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(
        a.body
            .contains("is RELEASED; only MISSING_AT_PROVIDER transfers can be released by hand")
    );
    assert_eq!(hold(pool.clone()).await, Decimal::ZERO);
    let reversals: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger_postings WHERE idempotency_key = 'sepa-hold-release:ghost-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reversals, 1);
}
