//! One module per section of the console: its list, its detail page and its actions.

pub mod discrepancies;
pub mod exchanges;
pub mod jobs;
pub mod overview;
pub mod reports;
pub mod sepa;
pub mod users;

/// A numeric id in the path. Anything else is answered with a "no such page" page before the
/// handler runs (so before its CSRF check too: nothing can change without a valid id).
pub struct Id(pub i64);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Id {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Id, Self::Rejection> {
        let not_found = || {
            crate::console::view::refusal(
                axum::http::StatusCode::NOT_FOUND,
                "No such page",
                "Ids are numbers.",
            )
        };
        let axum::extract::Path(text) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| not_found())?;
        text.parse().map(Id).map_err(|_| not_found())
    }
}

/// `?done=` after an action, shown as a note on the page it returns to.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Done {
    /// What was done.
    pub done: Option<String>,
}
