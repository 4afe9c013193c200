use std::path::PathBuf;

/// What went wrong with a certificate, a key or a TLS config; file errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{}: {source}", path.display())]
    Io {
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
    #[error("{what} is not usable: {why}")]
    Parse { what: String, why: String },
    #[error("building the TLS config: {0}")]
    Tls(String),
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("the peer certificate is unreadable: {0}")]
    BadPeerCertificate(String),
    #[error("the peer certificate names `{name}`, which is neither a node nor a server")]
    UnknownPeer { name: String },
    #[error("no system randomness")]
    Random,
}

impl CertError {
    pub(crate) fn parse(what: impl Into<String>, why: impl std::fmt::Display) -> CertError {
        CertError::Parse {
            what: what.into(),
            why: why.to_string(),
        }
    }
}
