//! Development PKI: a mesh CA and one leaf certificate per workload, made
//! with rcgen.
//!
//! Production deployments get their certificates from their own issuer (for
//! example cert-manager); the file layout is the same.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::identity::Identity;

/// Validity of the development CA.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Validity of development leaf certificates.
pub const LEAF_VALIDITY: Duration = Duration::days(90);
/// Backdating of `notBefore`, so that small clock differences between hosts
/// do not make a fresh certificate "not yet valid".
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// File name of the CA certificate bundle in a certificate folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in a development certificate folder.
pub const CA_KEY_FILE: &str = "ca.key";

/// Failures while making or writing development certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("failed to generate {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("failed to write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a usable CA: {source}")]
    BadCa { path: PathBuf, source: rcgen::Error },
}

/// The workloads that get a development leaf certificate.
pub fn dev_identities() -> [Identity; 4] {
    [Identity::edge(), Identity::auth(), Identity::marketplace(), Identity::engineer()]
}

/// Path of an identity's certificate chain in a certificate folder.
pub fn cert_path(dir: &Path, identity: &Identity) -> PathBuf {
    dir.join(format!("{}.pem", identity.name()))
}

/// Path of an identity's private key in a certificate folder.
pub fn key_path(dir: &Path, identity: &Identity) -> PathBuf {
    dir.join(format!("{}.key", identity.name()))
}

/// Whether a folder already holds a development CA.
pub fn has_ca(dir: &Path) -> bool {
    dir.join(CA_CERT_FILE).is_file() && dir.join(CA_KEY_FILE).is_file()
}

/// A certificate authority that signs mesh leaves.
pub struct MeshCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A leaf certificate and its private key, both PEM-encoded.
pub struct IssuedLeaf {
    /// Leaf certificate followed by the CA certificate.
    pub chain_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

/// Options for one leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafOptions {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Default for LeafOptions {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self { not_before: now - CLOCK_SKEW, not_after: now + LEAF_VALIDITY }
    }
}

impl MeshCa {
    /// Generates a new CA with an ECDSA P-256 key.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let generate = |source| PkiError::Generate { what: "the CA".into(), source };
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "VALORA mesh");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(Self { issuer: Issuer::new(params, key), cert_pem: cert.pem() })
    }

    /// Loads a CA from its PEM certificate and key files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let cert_pem = read_to_string(cert_path)?;
        let key_pem = read_to_string(key_path)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|source| PkiError::BadCa { path: key_path.to_owned(), source })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|source| PkiError::BadCa { path: cert_path.to_owned(), source })?;
        Ok(Self { issuer, cert_pem })
    }

    /// PEM of the CA certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// PEM of the CA private key.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a leaf for `identity`, usable as TLS server and client.
    ///
    /// Subject alternative names: the SPIFFE ID, `<name>.valora.internal`,
    /// `localhost`, `127.0.0.1` and `::1`.
    pub fn issue(&self, identity: &Identity, options: &LeafOptions) -> Result<IssuedLeaf, PkiError> {
        let generate = |source| PkiError::Generate { what: format!("the {identity} leaf"), source };
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::new(vec![identity.dns_name(), "localhost".to_owned()])
            .map_err(generate)?;
        let uri = identity.spiffe_id().try_into().map_err(generate)?;
        params.subject_alt_names.push(SanType::URI(uri));
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, identity.dns_name());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = options.not_before;
        params.not_after = options.not_after;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok(IssuedLeaf {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What [`write_dev_pki`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum PkiOutcome {
    /// A new CA and new leaves were written.
    Created,
    /// The existing CA issued fresh leaves.
    Rotated,
}

/// Writes the development PKI into `dir`.
///
/// Without a CA in `dir`, makes one. With `rotate`, keeps the CA and
/// re-issues every leaf. Files are replaced atomically (write, then rename),
/// so a process watching the folder never reads half a file.
pub fn write_dev_pki(dir: &Path, rotate: bool) -> Result<PkiOutcome, PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Write { path: dir.to_owned(), source })?;
    let (ca, outcome) = if rotate && has_ca(dir) {
        (MeshCa::load(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE))?, PkiOutcome::Rotated)
    } else {
        let ca = MeshCa::generate("VALORA mesh development CA")?;
        write_file(&dir.join(CA_KEY_FILE), &ca.key_pem(), true)?;
        write_file(&dir.join(CA_CERT_FILE), ca.cert_pem(), false)?;
        (ca, PkiOutcome::Created)
    };
    for identity in dev_identities() {
        let leaf = ca.issue(&identity, &LeafOptions::default())?;
        write_file(&key_path(dir, &identity), &leaf.key_pem, true)?;
        write_file(&cert_path(dir, &identity), &leaf.chain_pem, false)?;
    }
    Ok(outcome)
}

/// Writes `contents` to `path` through a temporary file and a rename;
/// secret files are created with mode 0600.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    let error = |source| PkiError::Write { path: path.to_owned(), source };
    let file_name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&tmp, path).map_err(error)
}

fn read_to_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read { path: path.to_owned(), source })
}

/// A random, positive 16-byte serial number (RFC 5280 allows up to 20 bytes).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_private_keys_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write_dev_pki(dir.path(), false).unwrap(), PkiOutcome::Created);
        #[cfg(unix)]
        for identity in dev_identities() {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(key_path(dir.path(), &identity)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{identity}");
        }
    }

    #[test]
    fn rotation_keeps_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), false).unwrap();
        let ca_before = fs::read_to_string(dir.path().join(CA_CERT_FILE)).unwrap();
        let leaf_before = fs::read_to_string(cert_path(dir.path(), &Identity::edge())).unwrap();
        assert_eq!(write_dev_pki(dir.path(), true).unwrap(), PkiOutcome::Rotated);
        let ca_after = fs::read_to_string(dir.path().join(CA_CERT_FILE)).unwrap();
        let leaf_after = fs::read_to_string(cert_path(dir.path(), &Identity::edge())).unwrap();
        assert_eq!(ca_before, ca_after);
        assert_ne!(leaf_before, leaf_after);
    }
}
