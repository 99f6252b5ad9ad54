//! Who a balance belongs to.

use std::fmt;

/// The partner itself or one of its users (by the partner's `externalUserId`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The partner's own balances.
    Partner,
    /// A user's balances.
    User(String),
}

/// Longest `externalUserId` accepted.
pub const MAX_USER_ID_CHARS: usize = 200;

/// The one check of an `externalUserId`, wherever it enters (CLI, job arguments, intake
/// tables through migration 0017's `CHECK`s): 1 to 200 characters, no control characters, no
/// surrounding whitespace, and not `.` or `..` (a URL library resolves those as path segments,
/// so `--user ..` would have asked P100 for the partner's own data).
pub fn check_external_user_id(id: &str) -> Result<(), String> {
    let problem = if id.is_empty() {
        "is empty"
    } else if id.chars().count() > MAX_USER_ID_CHARS {
        "is longer than 200 characters"
    } else if id.chars().any(char::is_control) {
        "contains control characters"
    } else if id.trim() != id {
        "has surrounding whitespace"
    } else if id == "." || id == ".." {
        "is a path segment (. or ..)"
    } else {
        return Ok(());
    };
    let shown: String = id
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    Err(format!("invalid externalUserId {shown:?}: it {problem}"))
}

impl Owner {
    /// A user, if `id` is a valid `externalUserId` ([`check_external_user_id`]).
    pub fn user(id: &str) -> Result<Owner, String> {
        check_external_user_id(id)?;
        Ok(Owner::User(id.to_owned()))
    }

    /// `partner` or `user`, as stored in `owner_kind` columns.
    pub fn kind(&self) -> &'static str {
        match self {
            Owner::Partner => "partner",
            Owner::User(_) => "user",
        }
    }

    /// The user's id, or `None` for the partner.
    pub fn external_user_id(&self) -> Option<&str> {
        match self {
            Owner::Partner => None,
            Owner::User(id) => Some(id),
        }
    }

    /// Rebuilds an owner from its stored columns.
    pub fn from_columns(
        kind: &str,
        external_user_id: Option<String>,
    ) -> Result<Owner, crate::Error> {
        match (kind, external_user_id) {
            ("partner", None) => Ok(Owner::Partner),
            ("user", Some(id)) => Ok(Owner::User(id)),
            (kind, id) => Err(crate::Error::Corrupt(format!(
                "owner_kind {kind:?} with external_user_id {id:?}"
            ))),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Partner => f.write_str("partner"),
            Owner::User(id) => write!(f, "user {id}"),
        }
    }
}
