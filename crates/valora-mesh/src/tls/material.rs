//! Loading and checking a workload's certificate, key and CA bundle.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::{Identity, IdentityError};
use crate::pki;

/// Paths of the files that make up a workload's TLS material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM bundle of trusted CA certificates.
    pub ca: PathBuf,
    /// PEM chain: the leaf first, then any intermediates.
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, SEC1 or PKCS#1.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files of `identity` in a folder laid out like `valora certs dev`
    /// writes it: `ca.pem`, `<name>.pem` and `<name>.key`.
    pub fn in_dir(dir: &Path, identity: &Identity) -> Self {
        Self {
            ca: dir.join(pki::CA_CERT_FILE),
            cert: pki::cert_path(dir, identity),
            key: pki::key_path(dir, identity),
        }
    }

    /// The folders that hold the files, for watching.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.ca, &self.cert, &self.key]
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// A failure to load TLS material, naming the file and the step.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("private key {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("certificate {path} has identity {found}, expected {expected}")]
    WrongIdentity { path: PathBuf, expected: Identity, found: Identity },
    #[error("certificate {path} has no usable identity: {source}")]
    NoIdentity { path: PathBuf, source: IdentityError },
    #[error("certificate {path} expired at {not_after} ({ago} seconds ago)")]
    Expired { path: PathBuf, not_after: String, ago: i64 },
    #[error("certificate {path} is not valid before {not_before} (in {wait} seconds)")]
    NotYetValid { path: PathBuf, not_before: String, wait: i64 },
    #[error("certificate {cert} does not chain to a CA in {ca}: {reason}")]
    Untrusted { cert: PathBuf, ca: PathBuf, reason: String },
}

/// Facts about a loaded leaf certificate, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    /// Serial number in lowercase hex.
    pub serial: String,
    /// Start of validity, in seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// A workload's checked TLS material.
pub struct Material {
    pub(crate) identity: Identity,
    pub(crate) certified_key: Arc<CertifiedKey>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
    pub(crate) server_verifier: Arc<WebPkiServerVerifier>,
    pub(crate) leaf: LeafInfo,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key stays out of debug output.
        f.debug_struct("Material")
            .field("identity", &self.identity)
            .field("leaf", &self.leaf)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Reads and checks the files: the key matches the leaf, the leaf carries
    /// `identity`, is within its validity period and chains to the CA bundle.
    pub fn load(
        files: &TlsFiles,
        identity: &Identity,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, MaterialError> {
        let chain = read_certs(&files.cert)?;
        let ca_certs = read_certs(&files.ca)?;
        let key = read_key(&files.key)?;

        let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
            MaterialError::Parse { path: files.key.clone(), reason: e.to_string() }
        })?;
        let certified_key = CertifiedKey::new(chain.clone(), signing_key);
        certified_key.keys_match().map_err(|_| MaterialError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        })?;

        let leaf_cert = &chain[0];
        let found = Identity::from_certificate(leaf_cert)
            .map_err(|source| MaterialError::NoIdentity { path: files.cert.clone(), source })?;
        if &found != identity {
            return Err(MaterialError::WrongIdentity {
                path: files.cert.clone(),
                expected: identity.clone(),
                found,
            });
        }
        let leaf = leaf_info(leaf_cert, &files.cert)?;
        check_validity(&leaf, &files.cert)?;

        let mut roots = RootCertStore::empty();
        for cert in ca_certs {
            roots.add(cert).map_err(|e| MaterialError::Parse {
                path: files.ca.clone(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| MaterialError::Parse {
                    path: files.ca.clone(),
                    reason: e.to_string(),
                })?;

        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| MaterialError::Parse {
                    path: files.ca.clone(),
                    reason: e.to_string(),
                })?;

        // Every mesh leaf authenticates as a client, so checking the chain the
        // way a server checks its clients proves the leaf chains to the CA.
        client_verifier
            .verify_client_cert(leaf_cert, &chain[1..], UnixTime::now())
            .map_err(|e| MaterialError::Untrusted {
                cert: files.cert.clone(),
                ca: files.ca.clone(),
                reason: e.to_string(),
            })?;

        Ok(Self {
            identity: identity.clone(),
            certified_key: Arc::new(certified_key),
            roots,
            client_verifier,
            server_verifier,
            leaf,
        })
    }

    /// The identity of this workload.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Facts about the leaf certificate.
    pub fn leaf(&self) -> &LeafInfo {
        &self.leaf
    }
}

fn read(path: &Path) -> Result<Vec<u8>, MaterialError> {
    std::fs::read(path).map_err(|source| MaterialError::Read { path: path.to_owned(), source })
}

/// Reads every certificate of a PEM file; at least one is required.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let bytes = read(path)?;
    let parse = |reason: String| MaterialError::Parse { path: path.to_owned(), reason };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(e.to_string()))?;
    if certs.is_empty() {
        return Err(parse("no CERTIFICATE block found".to_owned()));
    }
    Ok(certs)
}

/// Reads a PEM private key in PKCS#8, SEC1 or PKCS#1 form.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, MaterialError> {
    let bytes = read(path)?;
    let parse = |reason: String| MaterialError::Parse { path: path.to_owned(), reason };
    if bytes.windows(21).any(|w| w == b"ENCRYPTED PRIVATE KEY") {
        return Err(parse("the key is encrypted; provide it unencrypted".to_owned()));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| parse(format!("no private key found: {e}")))
}

fn leaf_info(cert: &CertificateDer<'_>, path: &Path) -> Result<LeafInfo, MaterialError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).map_err(|e| {
        MaterialError::Parse { path: path.to_owned(), reason: e.to_string() }
    })?;
    Ok(LeafInfo {
        serial: parsed.raw_serial_as_string().replace(':', ""),
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
    })
}

fn check_validity(leaf: &LeafInfo, path: &Path) -> Result<(), MaterialError> {
    let now = unix_now();
    if now >= leaf.not_after {
        return Err(MaterialError::Expired {
            path: path.to_owned(),
            not_after: format_time(leaf.not_after),
            ago: now - leaf.not_after,
        });
    }
    if now < leaf.not_before {
        return Err(MaterialError::NotYetValid {
            path: path.to_owned(),
            not_before: format_time(leaf.not_before),
            wait: leaf.not_before - now,
        });
    }
    Ok(())
}

pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}
