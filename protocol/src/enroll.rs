//! Enrollment: how a party that holds only a join token gets its certificate.
//!
//! A join token (`windflow cluster token create`) carries the SHA-256 fingerprint of the
//! cluster CA and a secret. The newcomer connects with ALPN [`ALPN_ENROLL`], *without* a
//! client certificate, and accepts the server only if the server's chain holds the CA with
//! that fingerprint. It sends one [`EnrollRequest`] and reads one [`EnrollResponse`]; the
//! server spends one use of the token through raft before it signs anything.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::messages::VersionRange;

/// The ALPN of enrollment connections, the only one served without a client certificate.
pub const ALPN_ENROLL: &[u8] = b"windflow-enroll/1";

/// What a join token lets its holder become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinKind {
    /// A server: it gets a server certificate and the cluster CA.
    Server,
    /// An agent: it gets a node certificate.
    Agent,
}

impl fmt::Display for JoinKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JoinKind::Server => "server",
            JoinKind::Agent => "agent",
        })
    }
}

/// The text of a join token: `wfjoin1.<CA fingerprint, 64 hex>.<secret, 64 hex>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the CA certificate (DER).
    pub ca_fingerprint: String,
    /// Lowercase hex random secret; the servers keep only its hash.
    pub secret: String,
}

const TOKEN_PREFIX: &str = "wfjoin1.";

/// Shows the fingerprint, never the secret.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}{}.{}", self.ca_fingerprint, self.secret)
    }
}

/// Why a string is not a join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenParseError(pub &'static str);

impl std::error::Error for JoinTokenParseError {}

impl fmt::Display for JoinTokenParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a Windflow join token: {}", self.0)
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl FromStr for JoinToken {
    type Err = JoinTokenParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(JoinTokenParseError("it must start with `wfjoin1.`"))?;
        let (fingerprint, secret) = rest.split_once('.').ok_or(JoinTokenParseError(
            "it must be `wfjoin1.<fingerprint>.<secret>`",
        ))?;
        if !is_hex64(fingerprint) {
            return Err(JoinTokenParseError(
                "the CA fingerprint must be 64 hex digits",
            ));
        }
        if !is_hex64(secret) {
            return Err(JoinTokenParseError("the secret must be 64 hex digits"));
        }
        Ok(JoinToken {
            ca_fingerprint: fingerprint.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

/// The one message a newcomer sends.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub versions: VersionRange,
    /// The token's secret (the fingerprint was already checked against the server's chain).
    pub secret: String,
    pub kind: JoinKind,
    /// A server's name in the cluster (its certificate becomes `server-<name>`); the
    /// agent's hostname, informational, for an agent.
    pub name: String,
    /// A certificate signing request for the newcomer's own key, which never leaves it.
    pub csr_pem: String,
    /// IP addresses to put in a server certificate (where peers and clients reach it).
    pub ips: Vec<String>,
}

/// Never prints the secret.
impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("versions", &self.versions)
            .field("secret", &"<redacted>")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("ips", &self.ips)
            .finish_non_exhaustive()
    }
}

/// The server's one answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollResponse {
    /// A new server's certificate, and the cluster CA it needs to sign agents' certificates.
    Server {
        cert_pem: String,
        ca_cert_pem: String,
        ca_key_pem: String,
    },
    /// The request was refused; nothing was issued.
    Refused { reason: String },
    /// An agent's node certificate (for its CSR's key), and the cluster CA to trust.
    Node {
        node: NodeId,
        cert_pem: String,
        ca_cert_pem: String,
    },
}

/// Never prints the CA key.
impl fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnrollResponse::Server { cert_pem, .. } => f
                .debug_struct("Server")
                .field("cert_pem", cert_pem)
                .field("ca_key_pem", &"<redacted>")
                .finish_non_exhaustive(),
            EnrollResponse::Refused { reason } => {
                f.debug_struct("Refused").field("reason", reason).finish()
            }
            EnrollResponse::Node { node, cert_pem, .. } => f
                .debug_struct("Node")
                .field("node", node)
                .field("cert_pem", cert_pem)
                .finish_non_exhaustive(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_hides_its_secret() {
        let token = JoinToken {
            ca_fingerprint: "ab".repeat(32),
            secret: "0f".repeat(32),
        };
        let text = token.to_string();
        assert!(text.starts_with("wfjoin1."));
        assert_eq!(text.parse::<JoinToken>(), Ok(token.clone()));
        assert!(!format!("{token:?}").contains(&"0f".repeat(32)));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let fp = "ab".repeat(32);
        let secret = "cd".repeat(32);
        let cases = [
            ("wf_123".to_owned(), "start with"),
            ("wfjoin1.abc".to_owned(), "wfjoin1.<fingerprint>.<secret>"),
            (format!("wfjoin1.{}.{secret}", &fp[..10]), "fingerprint"),
            (format!("wfjoin1.{fp}.zz{}", &secret[2..]), "secret"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<JoinToken>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }
}
