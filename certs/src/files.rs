//! Key and certificate files, and the PEM pairs kept in them. Files are created with their
//! final mode, never chmod-ed after, so a key is never readable by others even briefly.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::CertError;

/// Private keys: owner only.
pub const KEY_MODE: u32 = 0o600;
/// Certificates are public.
pub const CERT_MODE: u32 = 0o644;
/// Directories holding keys: owner only.
pub const DIR_MODE: u32 = 0o700;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` and its missing parents with mode 0700 (an existing dir is left as is).
pub(crate) fn create_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io(dir))
}

/// Writes `path` whole. A new file gets `mode` at creation; an existing one is replaced
/// through a fresh file, so an old, wider mode never carries over to a key.
pub(crate) fn write(path: &Path, content: &str, mode: u32) -> Result<(), CertError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    // A leftover from a crash may have any mode; start over.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&tmp)(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(content.as_bytes()).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Reads a whole PEM file.
pub(crate) fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Never prints the key: these end up in logs.
impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl IssuedCert {
    /// Writes `<stem>.crt` (0644) and `<stem>.key` (0600) into `dir` (created 0700).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(), CertError> {
        create_dir(dir)?;
        write(&dir.join(format!("{stem}.key")), &self.key_pem, KEY_MODE)?;
        write(&dir.join(format!("{stem}.crt")), &self.cert_pem, CERT_MODE)
    }

    /// Reads `<stem>.crt` and `<stem>.key` from `dir`.
    pub fn read(dir: &Path, stem: &str) -> Result<IssuedCert, CertError> {
        Ok(IssuedCert {
            cert_pem: read(&dir.join(format!("{stem}.crt")))?,
            key_pem: read(&dir.join(format!("{stem}.key")))?,
        })
    }

    /// Whether both files are there, e.g. to decide whether an agent still has to enroll.
    pub fn exists(dir: &Path, stem: &str) -> bool {
        dir.join(format!("{stem}.crt")).is_file() && dir.join(format!("{stem}.key")).is_file()
    }
}

/// Everything a party needs for mutual TLS: the CA it trusts and its own certificate.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub ca_pem: String,
    pub cert: IssuedCert,
}

impl TlsIdentity {
    /// Reads `ca.crt` and `<stem>.crt`/`<stem>.key` from `dir`.
    pub fn read(dir: &Path, stem: &str) -> Result<TlsIdentity, CertError> {
        Ok(TlsIdentity {
            ca_pem: read(&dir.join("ca.crt"))?,
            cert: IssuedCert::read(dir, stem)?,
        })
    }

    /// Writes `ca.crt` (0644) and `<stem>.crt`/`<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(), CertError> {
        self.cert.write(dir, stem)?;
        write(&dir.join("ca.crt"), &self.ca_pem, CERT_MODE)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use windflow_protocol::NodeId;

    use super::*;
    use crate::ClusterCa;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn issued_files_keep_keys_private_and_debug_hides_them() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(&dir.path().join("ca")).unwrap();
        let cert = ca.issue_node(NodeId(3)).unwrap();
        assert!(cert.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
        let identity = TlsIdentity {
            ca_pem: ca.cert_pem().into(),
            cert,
        };
        assert!(!format!("{identity:?}").contains("PRIVATE KEY"));
        let out = dir.path().join("agent");
        assert!(!IssuedCert::exists(&out, "node"));
        identity.write(&out, "node").unwrap();
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(&out.join("node.key")), 0o600);
        assert_eq!(mode(&out.join("node.crt")), 0o644);
        assert_eq!(mode(&out.join("ca.crt")), 0o644);
        assert!(IssuedCert::exists(&out, "node"));
        let back = TlsIdentity::read(&out, "node").unwrap();
        assert_eq!(back.ca_pem, ca.cert_pem());
        assert_eq!(back.cert.key_pem, identity.cert.key_pem);
        assert_eq!(back.cert.cert_pem, identity.cert.cert_pem);
    }

    #[test]
    fn rewriting_a_key_does_not_keep_a_wider_old_mode() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("x.key");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&key, "new", KEY_MODE).unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "new");
    }

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = IssuedCert::read(dir.path(), "node")
            .unwrap_err()
            .to_string();
        assert!(err.contains("node.crt"), "{err}");
    }
}
