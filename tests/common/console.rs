//! A browser-less client of the operator console: real HTTP, cookies and forms by hand.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

pub const OPERATOR: &str = "olivia-token-0123456789abcdef";
pub const VIEWER: &str = "victor-token-0123456789abcdef";

/// The tokens file of the tests: olivia operates, victor views.
pub fn tokens_file_text() -> String {
    format!("# console test tokens\nolivia operator {OPERATOR}\nvictor viewer {VIEWER}\n")
}

/// A signed-in (or not) visitor.
pub struct Visitor {
    pub base: String,
    pub http: reqwest::Client,
    pub session: Option<String>,
}

pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub cookies: Vec<String>,
    pub body: String,
}

impl Visitor {
    pub fn new(base: &str) -> Visitor {
        Visitor {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            session: None,
        }
    }

    async fn answer(r: reqwest::Response) -> Answer {
        let status = r.status();
        let location = r
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        let cookies = r
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        Answer {
            status,
            location,
            cookies,
            body: r.text().await.unwrap(),
        }
    }

    fn cookie_header(&self, extra: Option<&str>) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.session {
            parts.push(format!("p100_console={s}"));
        }
        if let Some(e) = extra {
            parts.push(e.to_owned());
        }
        parts.join("; ")
    }

    pub async fn get(&self, path: &str) -> Answer {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header(None))
            .send()
            .await
            .unwrap();
        Visitor::answer(r).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header(None))
            .form(form)
            .send()
            .await
            .unwrap();
        Visitor::answer(r).await
    }

    /// Signs in with `token`; returns the sign-in answer.
    pub async fn sign_in(&mut self, token: &str) -> Answer {
        self.sign_in_to(token, "/").await
    }

    /// Signs in with `token`, asking to go on to `next`.
    pub async fn sign_in_to(&mut self, token: &str, next: &str) -> Answer {
        let page = self.get("/login").await;
        let form_token = field(&page.body, "form").expect("the sign-in form has its token");
        let login_cookie = format!("p100_console_login={form_token}");
        let r = self
            .http
            .post(format!("{}/login", self.base))
            .header(COOKIE, self.cookie_header(Some(&login_cookie)))
            .form(&[("token", token), ("form", &form_token), ("next", next)])
            .send()
            .await
            .unwrap();
        let a = Visitor::answer(r).await;
        if let Some(c) = a.cookies.iter().find(|c| c.starts_with("p100_console=")) {
            let value = c["p100_console=".len()..].split(';').next().unwrap();
            self.session = Some(value.to_owned());
        }
        a
    }

    /// The CSRF token on a page this visitor sees.
    pub async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await;
        field(&page.body, "csrf").unwrap_or_else(|| panic!("{path} has no form: {}", page.body))
    }
}

/// The value of the hidden input `name` on a page.
pub fn field(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_owned())
}
