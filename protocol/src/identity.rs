//! Who may do what: roles, users and API tokens as the API shows them, and the audit
//! log's entries. Secrets and password hashes never appear in these types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{AuditId, TokenId, UserId};
use crate::namespace::Namespace;
use crate::time::Timestamp;

/// What a user or token may do. Ordered: each role may do everything of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything of the cluster's work.
    Reader,
    /// Also creates, changes, runs and deletes jobs, pipelines, schedules, stacks and apps.
    Writer,
    /// Also manages users, tokens, nodes, join tokens, the cluster and the log level.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Writer, Role::Admin];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role (admin, writer or reader)"))
    }
}

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub id: UserId,
    pub name: String,
    pub role: Role,
    /// The namespace the role holds in; `None` for the whole cluster.
    #[serde(default)]
    pub namespace: Option<Namespace>,
    pub created_at: Timestamp,
    pub password_changed_at: Timestamp,
}

/// How a token came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Made by `windflow token create` (or the bootstrap): has a unique name.
    Api,
    /// Made by `windflow login`; ends with `windflow logout` or its expiry.
    Session,
}

/// An API token as the API shows it: never its secret, only the secret's first characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: TokenId,
    pub name: String,
    pub kind: TokenKind,
    pub role: Role,
    /// The user it acts for, if any (a session's user, or who a named token belongs to).
    pub user: Option<String>,
    /// The namespace it is bound to: it sees nothing of the others. `None` for the whole
    /// cluster.
    #[serde(default)]
    pub namespace: Option<Namespace>,
    /// The secret's first characters, to tell tokens apart in a list.
    pub prefix: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub rotated_at: Option<Timestamp>,
}

impl TokenView {
    /// Whether the token opens the API at `now`.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// The outcome of an audited request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// Allowed and succeeded.
    Success,
    /// Allowed, but it failed (bad input, a conflict, a server error).
    Failed,
    /// Refused: no valid credentials, or a role too small.
    Denied,
}

impl AuditOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Failed => "failed",
            AuditOutcome::Denied => "denied",
        }
    }
}

impl FromStr for AuditOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AuditOutcome::Success,
            AuditOutcome::Failed,
            AuditOutcome::Denied,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| format!("`{s}` is not an outcome (success, failed or denied)"))
    }
}

/// One audited request: a change made (or refused) through the API, or a login attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Assigned by `apply`; `A0` in a proposal.
    pub id: AuditId,
    pub at: Timestamp,
    /// The user acting, when known (a token without a user has none).
    pub user: Option<String>,
    pub token: Option<TokenId>,
    /// The client's address as the server saw it.
    pub source: String,
    /// The route's action name, such as `jobs.create` or `login`.
    pub action: String,
    /// What it acted on: the request path.
    pub resource: String,
    pub outcome: AuditOutcome,
    /// The HTTP status answered.
    pub status: u16,
    /// The `x-request-id` the server answered with.
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse_back() {
        assert!(Role::Reader < Role::Writer && Role::Writer < Role::Admin);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().unwrap_err().contains("root"));
    }

    #[test]
    fn a_token_is_usable_until_revoked_or_expired() {
        let mut t = TokenView {
            id: TokenId(1),
            name: "ci".into(),
            kind: TokenKind::Api,
            role: Role::Reader,
            user: None,
            namespace: None,
            prefix: "wf_ab".into(),
            created_at: Timestamp(0),
            expires_at: Some(Timestamp(100)),
            revoked_at: None,
            rotated_at: None,
        };
        assert!(t.is_usable(Timestamp(99)));
        assert!(!t.is_usable(Timestamp(100)));
        t.expires_at = None;
        assert!(t.is_usable(Timestamp(u64::MAX)));
        t.revoked_at = Some(Timestamp(5));
        assert!(!t.is_usable(Timestamp(1)));
    }
}
