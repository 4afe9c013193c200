#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server refused the session (wrong version, unknown node): retrying won't help.
    #[error("the server refused this agent: {reason}")]
    Refused { reason: String },
    #[error("no server addresses configured")]
    NoServers,
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
