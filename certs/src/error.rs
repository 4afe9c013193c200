use std::path::PathBuf;

/// What went wrong with a certificate, a key or a TLS config.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already exists; refusing to overwrite a CA key", .0.display())]
    AlreadyExists(PathBuf),
    #[error("generating {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("{what} is not valid PEM: {why}")]
    Pem { what: &'static str, why: String },
    #[error("building the TLS config: {0}")]
    Tls(String),
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("the peer certificate is unreadable: {0}")]
    BadPeerCertificate(String),
    #[error("the peer certificate names `{0}`, which is neither a node nor a server")]
    UnknownPeer(String),
    #[error("no system randomness")]
    Random,
}
