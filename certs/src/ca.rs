//! The cluster CA and the certificates it issues.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};
use windflow_protocol::NodeId;

use crate::{CertError, SERVER_NAME, files};

/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// How long server and node certificates are valid.
pub const LEAF_VALIDITY: Duration = Duration::days(365);
/// Leeway for clocks that are a little behind.
const BACKDATE: Duration = Duration::hours(1);

/// The cluster's certificate authority: `ca.crt` and `ca.key` in its directory.
pub struct ClusterCa {
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint_sha256())
            .finish_non_exhaustive()
    }
}

fn generated(what: &'static str) -> impl Fn(rcgen::Error) -> CertError {
    move |source| CertError::Generate { what, source }
}

fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertError::Random)?;
    bytes[0] &= 0x7f; // a positive integer
    Ok(SerialNumber::from_slice(&bytes))
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Windflow");
    dn.push(DnType::CommonName, cn);
    dn
}

impl ClusterCa {
    /// Creates a new CA in `dir` (mode 0700): `ca.crt` (0644) and `ca.key` (0600).
    /// Refuses when `dir` already holds a CA key.
    pub fn create(dir: &Path) -> Result<ClusterCa, CertError> {
        let key_path = dir.join("ca.key");
        if key_path.exists() {
            return Err(CertError::AlreadyExists(key_path));
        }
        files::create_dir(dir)?;
        let key = KeyPair::generate().map_err(generated("the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("Windflow cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(generated("the CA certificate"))?;
        let ca = ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        files::write(&key_path, &ca.key_pem, files::KEY_MODE)?;
        files::write(&dir.join("ca.crt"), &ca.cert_pem, files::CERT_MODE)?;
        Ok(ca)
    }

    /// Loads the CA from `dir`.
    pub fn load(dir: &Path) -> Result<ClusterCa, CertError> {
        let ca = ClusterCa {
            cert_pem: files::read(&dir.join("ca.crt"))?,
            key_pem: files::read(&dir.join("ca.key"))?,
        };
        // Fail now, naming the file, rather than at the first issuance.
        ca.issuer()?;
        Ok(ca)
    }

    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<ClusterCa, CertError> {
        if dir.join("ca.key").exists() {
            Self::load(dir)
        } else {
            Self::create(dir)
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The lowercase hex SHA-256 of the CA certificate (DER): what a joining party pins.
    pub fn fingerprint_sha256(&self) -> String {
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(self.cert_pem.as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'_>| c.to_vec())
            .unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CertError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| CertError::Pem {
            what: "ca.key",
            why: e.to_string(),
        })?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|e| CertError::Pem {
            what: "ca.crt",
            why: e.to_string(),
        })
    }

    fn issue(
        &self,
        cn: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<IssuedCert, CertError> {
        let key = KeyPair::generate().map_err(generated("a certificate key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn);
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(generated("a certificate"))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A server certificate: CN `server-<name>`, SANs [`SERVER_NAME`], `localhost`, the
    /// given names and IPs. Good for both ends, since servers also dial each other.
    pub fn issue_server(
        &self,
        name: &str,
        extra_dns: &[String],
        ips: &[IpAddr],
    ) -> Result<IssuedCert, CertError> {
        let mut sans = Vec::new();
        for dns in [SERVER_NAME, "localhost"]
            .into_iter()
            .chain(extra_dns.iter().map(String::as_str))
        {
            let dns = dns
                .to_owned()
                .try_into()
                .map_err(generated("a server DNS name"))?;
            sans.push(SanType::DnsName(dns));
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        self.issue(
            &format!("server-{name}"),
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// An agent certificate for `node`: CN and DNS SAN `node-N<n>`, client use only.
    pub fn issue_node(&self, node: NodeId) -> Result<IssuedCert, CertError> {
        let cn = node.certificate_name();
        let san = cn.clone().try_into().map_err(generated("a node name"))?;
        self.issue(
            &cn,
            vec![SanType::DnsName(san)],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

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
        files::create_dir(dir)?;
        files::write(
            &dir.join(format!("{stem}.key")),
            &self.key_pem,
            files::KEY_MODE,
        )?;
        files::write(
            &dir.join(format!("{stem}.crt")),
            &self.cert_pem,
            files::CERT_MODE,
        )
    }

    pub fn read(dir: &Path, stem: &str) -> Result<IssuedCert, CertError> {
        Ok(IssuedCert {
            cert_pem: files::read(&dir.join(format!("{stem}.crt")))?,
            key_pem: files::read(&dir.join(format!("{stem}.key")))?,
        })
    }

    pub fn exists(dir: &Path, stem: &str) -> bool {
        dir.join(format!("{stem}.crt")).exists() && dir.join(format!("{stem}.key")).exists()
    }
}

/// What one party needs for mutual TLS: the CA it trusts and its own certificate.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub ca_pem: String,
    pub cert: IssuedCert,
}

impl TlsIdentity {
    /// Reads `ca.crt` and `<stem>.crt`/`<stem>.key` from `dir`.
    pub fn read(dir: &Path, stem: &str) -> Result<TlsIdentity, CertError> {
        Ok(TlsIdentity {
            ca_pem: files::read(&dir.join("ca.crt"))?,
            cert: IssuedCert::read(dir, stem)?,
        })
    }

    pub fn write(&self, dir: &Path, stem: &str) -> Result<(), CertError> {
        self.cert.write(dir, stem)?;
        files::write(&dir.join("ca.crt"), &self.ca_pem, files::CERT_MODE)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_ca_is_created_once_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = ClusterCa::create(&ca_dir).unwrap();
        assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
        assert_eq!(mode(&ca_dir.join("ca.crt")), 0o644);
        assert_eq!(mode(&ca_dir), 0o700);
        assert_eq!(ca.fingerprint_sha256().len(), 64);
        let loaded = ClusterCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(loaded.fingerprint_sha256(), ca.fingerprint_sha256());
        assert!(matches!(
            ClusterCa::create(&ca_dir),
            Err(CertError::AlreadyExists(_))
        ));
    }

    #[test]
    fn issued_files_keep_keys_private_and_debug_hides_them() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(&dir.path().join("ca")).unwrap();
        let cert = ca.issue_node(NodeId(3)).unwrap();
        assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
        let out = dir.path().join("agent");
        TlsIdentity {
            ca_pem: ca.cert_pem().into(),
            cert,
        }
        .write(&out, "node")
        .unwrap();
        assert_eq!(mode(&out.join("node.key")), 0o600);
        assert!(IssuedCert::exists(&out, "node"));
        let back = TlsIdentity::read(&out, "node").unwrap();
        assert_eq!(back.ca_pem, ca.cert_pem());
    }

    #[test]
    fn loading_a_missing_ca_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClusterCa::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.crt"), "{err}");
    }

    #[test]
    fn certificates_carry_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        let parse = |pem: &str| {
            let der: rustls_pki_types::CertificateDer<'_> =
                rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let cn = cert
                .subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned();
            let sans = cert
                .subject_alternative_name()
                .unwrap()
                .map(|s| {
                    s.value
                        .general_names
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            (cn, sans)
        };
        let (cn, _) = parse(&ca.issue_node(NodeId(7)).unwrap().cert_pem);
        assert_eq!(NodeId::from_certificate_name(&cn).unwrap(), NodeId(7));
        let server = ca
            .issue_server("s1", &["db.example".into()], &["10.0.0.1".parse().unwrap()])
            .unwrap();
        let (cn, sans) = parse(&server.cert_pem);
        assert_eq!(cn, "server-s1");
        let sans = sans.join(" ");
        assert!(
            sans.contains(SERVER_NAME)
                && sans.contains("db.example")
                && sans.contains("IPAddress(0a:00:00:01)"),
            "{sans}"
        );
    }
}
