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

impl Owner {
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
