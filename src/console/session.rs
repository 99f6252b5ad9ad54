//! Signing in and out, the session cookie, and the checks every change goes through.
//!
//! Sign-in takes a token from the tokens file and sets an `HttpOnly`, `SameSite=Strict`
//! session cookie holding a random id (the table keeps its hash, [`ledger::console`]). Every
//! form carries the session's CSRF token; a change is made only when the session is live, its
//! name is still in the file with the operator role, and the form's token matches.
//! The sign-in form itself carries a token matched against a short-lived cookie, so another
//! site cannot sign a browser in under its own name.

use std::time::Duration;

use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::Console;
use super::tokens::Role;
use super::view;

/// The session cookie.
pub const COOKIE: &str = "p100_console";
/// The sign-in form's cookie.
const LOGIN_COOKIE: &str = "p100_console_login";
/// How long a session lasts, idle or not.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a sign-in form may be left open.
const LOGIN_TTL: Duration = Duration::from_secs(15 * 60);
/// A wrong token costs this long, so guessing is slow even from one connection.
const WRONG_TOKEN_DELAY: Duration = Duration::from_millis(400);

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the session table keeps of a session id.
fn id_hash(sid: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(sid.as_bytes()).into()
}

/// The value of cookie `name` in a request's headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    ))
    .expect("cookie values are hex")
}

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A signed-in person, for the length of one request.
#[derive(Debug, Clone)]
pub struct Who {
    /// Their name in the tokens file.
    pub name: String,
    /// Their role now.
    pub role: Role,
    /// The token this session's forms carry.
    pub csrf: String,
}

impl Who {
    /// Whether they may change things.
    pub fn operates(&self) -> bool {
        self.role == Role::Operator
    }

    /// The check before any change: the form's CSRF token, then the role. `Some` is the
    /// refusal, a whole page.
    pub fn refuse_change(&self, form_csrf: &str) -> Option<Response> {
        if !equal(form_csrf, &self.csrf) {
            return Some(view::refusal(
                StatusCode::FORBIDDEN,
                "This form is out of date or did not come from this console",
                "Nothing was changed. Reload the page and try again.",
            ));
        }
        if !self.operates() {
            return Some(view::refusal(
                StatusCode::FORBIDDEN,
                "Viewers cannot change anything",
                "Nothing was changed. Ask someone with the operator role.",
            ));
        }
        None
    }
}

impl FromRequestParts<Console> for Who {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Who, Response> {
        let not_signed_in = |parts: &Parts| -> Response {
            if parts.method == Method::GET || parts.method == Method::HEAD {
                let next = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let to = format!(
                    "/login?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                Redirect::to(&to).into_response()
            } else {
                view::refusal(
                    StatusCode::UNAUTHORIZED,
                    "Not signed in",
                    "Nothing was changed. Sign in and try again.",
                )
            }
        };
        let Some(sid) = cookie(&parts.headers, COOKIE) else {
            return Err(not_signed_in(parts));
        };
        let session = match ledger::console::find(&console.pool, &id_hash(sid)).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(not_signed_in(parts)),
            Err(e) => return Err(view::database_error(&e)),
        };
        // The file decides the role now; a name no longer in it, or whose token changed, is
        // signed out.
        let Some(role) = console.tokens.role_of(&session.name, &session.token) else {
            return Err(not_signed_in(parts));
        };
        Ok(Who {
            name: session.name,
            role,
            csrf: session.csrf,
        })
    }
}

/// Where to go after signing in: a path on this console, nothing else. Browsers drop tabs and
/// line breaks from a `Location` and read `\\` as `/`, so only printable ASCII without a
/// backslash is taken, and never a second leading slash.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n
        }
        _ => "/",
    }
}

/// `?next=` of the sign-in page.
#[derive(Debug, serde::Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// `GET /login`.
pub async fn login_page(Query(q): Query<Next>) -> Response {
    let form_token = random_token();
    let mut response = view::login(safe_next(q.next.as_deref()), &form_token, None).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &form_token, LOGIN_TTL),
    );
    response
}

/// The sign-in form.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct LoginForm {
    token: String,
    form: String,
    next: String,
}

/// `POST /login`.
pub async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(Some(&form.next)).to_owned();
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !equal(expected, &form.form) {
        return view::refusal(
            StatusCode::FORBIDDEN,
            "This sign-in form is out of date or did not come from this console",
            "Open the sign-in page again.",
        );
    }
    let Some((name, role, token)) = console.tokens.sign_in(&form.token) else {
        tracing::warn!("console: a sign-in with an unknown token was refused");
        metrics::counter!("console_sign_ins_total", "outcome" => "refused").increment(1);
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        let form_token = random_token();
        let mut response = (
            StatusCode::UNAUTHORIZED,
            view::login(&next, &form_token, Some("That token is not valid.")),
        )
            .into_response();
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(LOGIN_COOKIE, &form_token, LOGIN_TTL),
        );
        return response;
    };
    let sid = random_token();
    let csrf = random_token();
    if let Err(e) = ledger::console::prune(&console.pool).await {
        tracing::warn!(error = %e, "console: cannot forget expired sessions");
    }
    let hash = id_hash(&sid);
    let started = ledger::console::start(&console.pool, &hash, name, &token, &csrf, SESSION_TTL);
    if let Err(e) = started.await {
        return view::database_error(&e);
    }
    tracing::info!(user = name, role = role.as_str(), "console: signed in");
    metrics::counter!("console_sign_ins_total", "outcome" => "accepted").increment(1);
    let mut response = Redirect::to(&next).into_response();
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(COOKIE, &sid, SESSION_TTL));
    h.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", Duration::ZERO),
    );
    response
}

/// A form with nothing but its CSRF token.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Plain {
    /// The CSRF token.
    pub csrf: String,
}

/// The longest note kept with a change (the tables' own bound).
pub const MAX_NOTE: usize = 2000;

/// A form with its CSRF token and a person's note: acknowledge, resolve, pause, release.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Noted {
    /// The CSRF token.
    pub csrf: String,
    /// Why (kept with the change, under the signed-in name).
    pub note: String,
}

impl Noted {
    /// The note, trimmed, or the page saying it is required (`why` says what it is for;
    /// `back` is where that page links to).
    pub fn note(&self, back: &str, why: &str) -> Result<&str, Box<Response>> {
        let note = self.note.trim();
        if note.is_empty() || note.chars().count() > MAX_NOTE {
            return Err(Box::new(view::conflict(
                back,
                "A note is required",
                &format!("{why} (at most 2,000 characters). Nothing was changed."),
            )));
        }
        Ok(note)
    }
}

/// `POST /logout`: any role may sign out, with the CSRF token.
pub async fn logout(
    State(console): State<Console>,
    who: Who,
    headers: HeaderMap,
    Form(form): Form<Plain>,
) -> Response {
    if !equal(&form.csrf, &who.csrf) {
        return view::refusal(
            StatusCode::FORBIDDEN,
            "This form is out of date or did not come from this console",
            "You are still signed in. Reload the page and try again.",
        );
    }
    if let Some(sid) = cookie(&headers, COOKIE)
        && let Err(e) = ledger::console::end(&console.pool, &id_hash(sid)).await
    {
        return view::database_error(&e);
    }
    tracing::info!(user = who.name, "console: signed out");
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(COOKIE, "", Duration::ZERO));
    response
}

/// The page of someone signed in whose request failed in a way the page explains.
pub fn done_note(done: Option<&str>) -> maud::Markup {
    let text = match done {
        Some("acknowledged") => "Acknowledged; the note is in the event log.",
        Some("resolved") => "Resolved; the note is in the event log.",
        Some("retried") => "Queued to run again now.",
        Some("queued") => {
            "Queued: reload to follow it; the discrepancy resolves itself if the owner now agrees."
        }
        Some("brought_forward") => {
            "A reconciliation of this owner was already waiting: it runs now, with its own arguments (below)."
        }
        Some("rerun") => "A reconciliation of this owner is running: one more runs when it ends.",
        Some("cancelled") => "Cancelled.",
        Some("paused") => "Paused: no replica claims its jobs until it is resumed.",
        Some("resumed") => "Resumed.",
        Some("released") => "The hold is released; the transfer is no longer followed.",
        _ => return html! {},
    };
    html! { div.status-ok role="status" { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_only_goes_on_to_this_console() {
        assert_eq!(safe_next(Some("/jobs?state=dead")), "/jobs?state=dead");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "/\t/evil.example/",
            "/\n/evil.example/",
            "/\r\n/evil",
            "/ /evil",
            "",
            "jobs",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x_p100_console=a; p100_console=b; other=c"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("b"));
        assert_eq!(cookie(&h, "missing"), None);
    }
}
