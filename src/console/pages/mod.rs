//! One module per section of the console: its list, its detail page and its actions.

pub mod discrepancies;
pub mod exchanges;
pub mod jobs;
pub mod overview;
pub mod reports;
pub mod sepa;
pub mod users;

/// `?done=` after an action, shown as a note on the page it returns to.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Done {
    /// What was done.
    pub done: Option<String>,
}
