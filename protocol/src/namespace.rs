//! Namespaces: the walls between teams sharing a cluster. Jobs (and their runs and
//! contexts) live in one; users and tokens may be bound to one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A namespace's name: 1 to 63 lowercase letters, digits and `-`, starting with a letter
/// or digit. Checked on every way in (the API and decoding), so a name never holds `/`,
/// which keys in the state use as a separator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

impl Namespace {
    /// The namespace that always exists, where work goes when none is named.
    pub const DEFAULT: &'static str = "default";
    pub const MAX_LEN: usize = 63;

    pub fn parse(name: &str) -> Result<Self, String> {
        let well_formed = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if well_formed {
            Ok(Namespace(name.to_owned()))
        } else {
            Err(format!(
                "`{name}` is not a namespace name (1 to {} lowercase letters, digits and -, \
                 not starting with -)",
                Self::MAX_LEN
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace(Self::DEFAULT.to_owned())
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Namespace {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Namespace::parse(&s)
    }
}

impl From<Namespace> for String {
    fn from(n: Namespace) -> Self {
        n.0
    }
}

impl std::str::FromStr for Namespace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Namespace::parse(s)
    }
}

/// A namespace as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceInfo {
    pub name: Namespace,
    #[serde(default)]
    pub description: String,
    pub created_at: Timestamp,
}

impl NamespaceInfo {
    /// The `default` namespace, which exists without having been created.
    pub fn builtin_default() -> Self {
        NamespaceInfo {
            name: Namespace::default(),
            description: "where work goes when no namespace is named".into(),
            created_at: Timestamp(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_on_parse_and_on_decode() {
        for good in ["default", "team-a", "a", "0ps", &"x".repeat(63)] {
            assert!(Namespace::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Team", "a/b", "-a", "a b", "é", &"x".repeat(64)] {
            assert!(Namespace::parse(bad).is_err(), "{bad}");
        }
        let ns: Namespace = serde_json::from_str("\"team-a\"").unwrap();
        assert_eq!(ns.as_str(), "team-a");
        assert!(serde_json::from_str::<Namespace>("\"a/b\"").is_err());
        assert_eq!(serde_json::to_string(&ns).unwrap(), "\"team-a\"");
    }
}
