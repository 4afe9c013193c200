//! The cluster CA and the certificates it issues.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use windflow_protocol::NodeId;

use crate::{CertError, IssuedCert, SERVER_NAME, files};

/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// How long server and node certificates are valid.
pub const LEAF_VALIDITY: Duration = Duration::days(365);
/// How long a node certificate enrolled with a join token is valid unless configured
/// otherwise; agents renew theirs before it ends.
pub const NODE_CERT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// Leeway for clocks that are a little behind.
const BACKDATE: Duration = Duration::hours(1);

/// The cluster's certificate authority: `ca.crt` and `ca.key` in its directory.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    /// Parsed once, so a bad key fails at load, naming the file, not at the first issuance.
    issuer: Issuer<'static, KeyPair>,
}

/// Shows the fingerprint, never the key.
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

/// 127 random bits: serials must be unique per CA and unpredictable.
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

fn dns(name: &str) -> Result<SanType, CertError> {
    let ia5 = name
        .to_owned()
        .try_into()
        .map_err(generated("a DNS name"))?;
    Ok(SanType::DnsName(ia5))
}

impl ClusterCa {
    /// Creates a new CA in `dir` (mode 0700): `ca.crt` (0644) and `ca.key` (0600).
    /// Refuses when `dir` already holds a CA key: overwriting it would orphan every
    /// certificate the cluster has issued.
    pub fn create(dir: &Path) -> Result<ClusterCa, CertError> {
        let key_path = dir.join("ca.key");
        if key_path.exists() {
            return Err(CertError::AlreadyExists(key_path));
        }
        files::create_dir(dir)?;
        let key = KeyPair::generate().map_err(generated("the CA key"))?;
        let mut params = CertificateParams::default();
        let serial = random_serial()?;
        // Each cluster's CA gets its own name, so a certificate from another cluster is
        // reported as from an unknown issuer rather than as a bad signature.
        let tag: String = serial.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.distinguished_name = name(&format!("Windflow cluster CA {tag}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(serial);
        let cert = params
            .self_signed(&key)
            .map_err(generated("the CA certificate"))?;
        let key_pem = key.serialize_pem();
        // The key last: its presence is what marks the CA as created.
        files::write(&dir.join("ca.crt"), &cert.pem(), files::CERT_MODE)?;
        files::write(&key_path, &key_pem, files::KEY_MODE)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Installs a CA received from the cluster (server enrollment) into `dir`, after
    /// checking that the key and certificate load together. Refuses to overwrite a CA key.
    pub fn install(dir: &Path, cert_pem: &str, key_pem: &str) -> Result<ClusterCa, CertError> {
        let key_path = dir.join("ca.key");
        if key_path.exists() {
            return Err(CertError::AlreadyExists(key_path));
        }
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CertError::parse("the received CA certificate", e))?
            .to_vec();
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| CertError::parse("the received CA key", e))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(|e| CertError::parse("the received CA certificate", e))?;
        files::create_dir(dir)?;
        files::write(&dir.join("ca.crt"), cert_pem, files::CERT_MODE)?;
        files::write(&key_path, key_pem, files::KEY_MODE)?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer,
        })
    }

    /// The CA's private key (PEM), for a server that joins with a join token: servers sign
    /// agents' certificates, so each holds the key. Sent only over a pinned TLS channel.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Loads the CA from `dir` (`ca.crt` and `ca.key`).
    pub fn load(dir: &Path) -> Result<ClusterCa, CertError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let cert_pem = files::read(&cert_path)?;
        let key_pem = files::read(&key_path)?;
        let bad_cert =
            |e: &dyn std::fmt::Display| CertError::parse(cert_path.display().to_string(), e);
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad_cert(&e))?
            .to_vec();
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| CertError::parse(key_path.display().to_string(), e))?;
        let issuer =
            Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key).map_err(|e| bad_cert(&e))?;
        Ok(ClusterCa {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<ClusterCa, CertError> {
        if dir.join("ca.key").exists() {
            Self::load(dir)
        } else {
            Self::create(dir)
        }
    }

    /// The CA certificate, for every party to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The lowercase hex SHA-256 of the CA certificate (DER): what a joining party pins.
    pub fn fingerprint_sha256(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.cert_der);
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Signs a leaf for `public_key`, valid for [`LEAF_VALIDITY`]; every name and use in it
    /// comes from us.
    fn sign(
        &self,
        cn: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
        public_key: &impl PublicKeyData,
    ) -> Result<String, CertError> {
        let now = OffsetDateTime::now_utc();
        let window = (now - BACKDATE, now + LEAF_VALIDITY);
        self.sign_in(cn, sans, usages, public_key, random_serial()?, window)
    }

    fn sign_in(
        &self,
        cn: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
        public_key: &impl PublicKeyData,
        serial: SerialNumber,
        (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    ) -> Result<String, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn);
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(serial);
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(generated("a certificate"))?;
        Ok(cert.pem())
    }

    fn issue(
        &self,
        cn: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<IssuedCert, CertError> {
        let key = KeyPair::generate().map_err(generated("a certificate key"))?;
        Ok(IssuedCert {
            cert_pem: self.sign(cn, sans, usages, &key)?,
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
        let (cn, sans, usages) = server_names(name, extra_dns, ips)?;
        self.issue(&cn, sans, usages)
    }

    /// A certificate for the HTTPS API of server `name`: CN `https-<name>`, SANs
    /// `localhost`, the given DNS names and IPs, server use only. Its own CN keeps it from
    /// passing as a peer server (`peer_identity` knows only `server-*` and `node-*`), so a
    /// leaked API key cannot speak raft.
    pub fn issue_https(
        &self,
        name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<IssuedCert, CertError> {
        let mut sans = vec![dns("localhost")?];
        for n in dns_names {
            sans.push(dns(n)?);
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        self.issue(
            &format!("https-{name}"),
            sans,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    /// Signs a joining server's CSR (PEM) as `server-<name>` with the same names and uses
    /// as [`ClusterCa::issue_server`]; only the CSR's key is taken from it.
    pub fn sign_server_csr(
        &self,
        name: &str,
        csr_pem: &str,
        ips: &[IpAddr],
    ) -> Result<String, CertError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CertError::parse("the certificate signing request", e))?;
        let (cn, sans, usages) = server_names(name, &[], ips)?;
        self.sign(&cn, sans, usages, &csr.public_key)
    }

    /// An agent certificate for `node`: CN and DNS SAN `node-N<n>`, client use only.
    pub fn issue_node(&self, node: NodeId) -> Result<IssuedCert, CertError> {
        let (cn, sans, usages) = node_names(node)?;
        self.issue(&cn, sans, usages)
    }

    /// Signs an agent's CSR (PEM) as `node`, so its key never leaves the agent. Only the
    /// CSR's public key is used (after checking its signature): the names and uses it asks
    /// for are ignored, since who a node is is decided here, not by the requester.
    /// Returns the certificate PEM.
    pub fn sign_node_csr(&self, node: NodeId, csr_pem: &str) -> Result<String, CertError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CertError::parse("the certificate signing request", e))?;
        let (cn, sans, usages) = node_names(node)?;
        self.sign(&cn, sans, usages, &csr.public_key)
    }

    /// Like [`ClusterCa::sign_node_csr`], with the serial and validity of `plan` (recorded
    /// through raft before signing, so that the certificate can be revoked).
    pub fn sign_node_csr_planned(
        &self,
        node: NodeId,
        csr_pem: &str,
        plan: &NodeCertPlan,
    ) -> Result<String, CertError> {
        let csr = parse_csr(csr_pem)?;
        let (cn, sans, usages) = node_names(node)?;
        let serial = SerialNumber::from_slice(&plan.serial);
        let window = (plan.not_before, plan.not_after);
        self.sign_in(&cn, sans, usages, &csr.public_key, serial, window)
    }
}

/// Checks that a CSR parses and is signed by its key, so that a garbled one is refused
/// before a join token's use is spent on it.
pub fn check_csr(csr_pem: &str) -> Result<(), CertError> {
    parse_csr(csr_pem).map(drop)
}

fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, CertError> {
    CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CertError::parse("the certificate signing request", e))
}

/// A node certificate about to be issued: serial and validity are chosen first, so that
/// they can be recorded through raft before the certificate exists.
#[derive(Debug, Clone)]
pub struct NodeCertPlan {
    serial: [u8; 16],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl NodeCertPlan {
    /// A fresh random serial, valid from now for `validity`, back-dated for skewed clocks
    /// by an hour or a tenth of `validity`, whichever is less (renewal comes at two thirds
    /// of the whole span, so a short validity must not be dwarfed by the back-dating).
    pub fn new(validity: std::time::Duration) -> Result<NodeCertPlan, CertError> {
        let now = OffsetDateTime::now_utc();
        let backdate = BACKDATE.min(Duration::try_from(validity / 10).unwrap_or(BACKDATE));
        Self::between(now - backdate, now + validity)
    }

    /// A fresh random serial valid between two instants (tests issue expired certificates).
    pub fn between(
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<NodeCertPlan, CertError> {
        let mut serial = [0u8; 16];
        serial.copy_from_slice(random_serial()?.as_ref());
        Ok(NodeCertPlan {
            serial,
            not_before,
            not_after,
        })
    }

    /// The serial as the revocation list keeps it.
    pub fn serial_hex(&self) -> String {
        crate::serial_hex(&self.serial)
    }

    /// When the certificate ends, in ms since the Unix epoch.
    pub fn not_after_ms(&self) -> u64 {
        (self.not_after.unix_timestamp_nanos() / 1_000_000).max(0) as u64
    }
}

type LeafNames = (String, Vec<SanType>, Vec<ExtendedKeyUsagePurpose>);

fn server_names(name: &str, extra_dns: &[String], ips: &[IpAddr]) -> Result<LeafNames, CertError> {
    let mut sans = vec![dns(SERVER_NAME)?, dns("localhost")?];
    for name in extra_dns {
        sans.push(dns(name)?);
    }
    sans.extend(ips.iter().copied().map(SanType::IpAddress));
    let usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok((format!("server-{name}"), sans, usages))
}

fn node_names(node: NodeId) -> Result<LeafNames, CertError> {
    let cn = node.certificate_name();
    let sans = vec![dns(&cn)?];
    Ok((cn, sans, vec![ExtendedKeyUsagePurpose::ClientAuth]))
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
    fn loading_a_missing_or_broken_ca_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClusterCa::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.crt"), "{err}");
        ClusterCa::create(dir.path()).unwrap();
        std::fs::write(dir.path().join("ca.key"), "not a key").unwrap();
        let err = ClusterCa::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.key"), "{err}");
    }

    #[test]
    fn each_ca_has_its_own_fingerprint_of_its_der() {
        let dir = tempfile::tempdir().unwrap();
        let a = ClusterCa::create(&dir.path().join("a")).unwrap();
        let b = ClusterCa::create(&dir.path().join("b")).unwrap();
        assert_ne!(a.fingerprint_sha256(), b.fingerprint_sha256());
        let der = CertificateDer::from_pem_slice(a.cert_pem().as_bytes()).unwrap();
        let want = ring::digest::digest(&ring::digest::SHA256, &der);
        let hex: String = want.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(a.fingerprint_sha256(), hex);
        assert!(!format!("{a:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn a_loaded_ca_issues_certificates_it_signed() {
        let dir = tempfile::tempdir().unwrap();
        let created = ClusterCa::create(dir.path()).unwrap();
        let loaded = ClusterCa::load(dir.path()).unwrap();
        let cert = loaded.issue_node(NodeId(1)).unwrap();
        let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = CertificateDer::from_pem_slice(created.cert_pem().as_bytes()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(leaf.issuer(), ca.subject());
        let other = ClusterCa::create(&dir.path().join("other")).unwrap();
        let other_der = CertificateDer::from_pem_slice(other.cert_pem().as_bytes()).unwrap();
        let (_, other) = x509_parser::parse_x509_certificate(&other_der).unwrap();
        assert!(leaf.verify_signature(Some(ca.public_key())).is_ok());
        assert!(leaf.verify_signature(Some(other.public_key())).is_err());
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
        let (cn, sans) = parse(
            &ca.issue_https(
                "s1",
                &["api.example".into()],
                &["10.0.0.2".parse().unwrap()],
            )
            .unwrap()
            .cert_pem,
        );
        assert_eq!(cn, "https-s1");
        let sans = sans.join(" ");
        assert!(
            sans.contains("api.example")
                && sans.contains("IPAddress(0a:00:00:02)")
                && !sans.contains(SERVER_NAME),
            "{sans}"
        );
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

    #[test]
    fn an_https_config_takes_a_matching_pair_only_and_fingerprints_agree() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        assert_eq!(
            crate::pem_fingerprint_sha256(ca.cert_pem()).unwrap(),
            ca.fingerprint_sha256()
        );
        assert!(crate::pem_fingerprint_sha256("no pem here").is_err());
        let a = ca
            .issue_https("s1", &[], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        let b = ca.issue_https("s2", &[], &[]).unwrap();
        let config = crate::https_server_config(&a.cert_pem, &a.key_pem).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let err = crate::https_server_config(&a.cert_pem, &b.key_pem).unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        let err = crate::https_server_config("junk", &a.key_pem).unwrap_err();
        assert!(err.to_string().contains("HTTPS certificate"), "{err}");
    }
}
