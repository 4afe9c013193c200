#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server refused the session (wrong version, unknown node): retrying won't help.
    #[error("the server refused this agent: {reason}")]
    Refused { reason: String },
    #[error("no server addresses configured")]
    NoServers,
    #[error("the agent needs a data dir for its state and its tasks' files")]
    NoDataDir,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot find the agent's own binary, which supervises its tasks: {0}")]
    OwnBinary(std::io::Error),
    #[error(transparent)]
    Tls(#[from] windflow_certs::CertError),
    #[error("local endpoint: {0}")]
    Io(#[from] std::io::Error),
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Wire(#[from] windflow_certs::wire::WireError),
    #[error("no Welcome from the server within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// TLS alerts a server sends when it refuses this node's certificate for good.
const ALERT_CERTIFICATE_REVOKED: u8 = 44;
const ALERT_CERTIFICATE_EXPIRED: u8 = 45;

impl AgentError {
    /// Why the server refused this node's certificate at the TLS handshake, when retrying
    /// cannot help: it was revoked, or it expired (renewal needs a valid one).
    pub(crate) fn certificate_refusal(&self) -> Option<&'static str> {
        use windflow_certs::wire::WireError;
        let conn = match self {
            AgentError::Connection(e) => e,
            // The refusal reaches the first read or the first write (the Hello), whichever
            // the server's alert overtakes.
            AgentError::Wire(WireError::Read(quinn::ReadExactError::ReadError(
                quinn::ReadError::ConnectionLost(e),
            )))
            | AgentError::Wire(WireError::Write(quinn::WriteError::ConnectionLost(e))) => e,
            _ => return None,
        };
        let quinn::ConnectionError::ConnectionClosed(close) = conn else {
            return None;
        };
        if close.error_code == quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_REVOKED) {
            Some(
                "the servers refuse this node's certificate: it was revoked (windflow node revoke)",
            )
        } else if close.error_code == quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_EXPIRED) {
            Some(
                "the servers refuse this node's certificate: it expired; enroll again with a new \
                 token and an empty data dir",
            )
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use windflow_certs::wire::WireError;

    fn closed(alert: u8) -> quinn::ConnectionError {
        quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(alert),
            frame_type: None,
            reason: Default::default(),
        })
    }

    #[test]
    fn a_revoked_certificate_is_told_on_the_first_read_or_write_alike() {
        let read = AgentError::Wire(WireError::Read(quinn::ReadExactError::ReadError(
            quinn::ReadError::ConnectionLost(closed(ALERT_CERTIFICATE_REVOKED)),
        )));
        let write = AgentError::Wire(WireError::Write(quinn::WriteError::ConnectionLost(closed(
            ALERT_CERTIFICATE_REVOKED,
        ))));
        for e in [read, write] {
            assert!(
                e.certificate_refusal()
                    .is_some_and(|r| r.contains("revoked"))
            );
        }
        let expired = AgentError::Connection(closed(ALERT_CERTIFICATE_EXPIRED));
        assert!(
            expired
                .certificate_refusal()
                .is_some_and(|r| r.contains("expired"))
        );
        // Any other alert may pass: the agent tries again.
        assert_eq!(
            AgentError::Connection(closed(40)).certificate_refusal(),
            None
        );
    }
}
