//! Test certificates signed by a mesh's own CA, for cases the development
//! PKI never produces: expired, not yet valid, foreign identities.

use std::path::Path;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use time::{Duration, OffsetDateTime};

/// A leaf's PEM chain and key.
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Options of a test leaf.
pub struct LeafSpec<'a> {
    /// URI SAN, such as `spiffe://valora.internal/engineer`; none when `None`.
    pub uri: Option<&'a str>,
    pub dns: &'a str,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl<'a> LeafSpec<'a> {
    /// A valid client/server leaf for `uri`.
    pub fn valid(uri: &'a str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self { uri: Some(uri), dns: "localhost", not_before: now - Duration::hours(1), not_after: now + Duration::days(30) }
    }
}

/// Signs a leaf with the CA in `certs_dir` (`ca.pem`, `ca.key`).
pub fn sign_leaf(certs_dir: &Path, spec: &LeafSpec<'_>) -> Leaf {
    let ca_pem = std::fs::read_to_string(certs_dir.join("ca.pem")).unwrap();
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(certs_dir.join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![spec.dns.to_owned()]).unwrap();
    if let Some(uri) = spec.uri {
        params.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
    }
    params.distinguished_name.push(DnType::CommonName, spec.dns);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    let cert = params.signed_by(&key, &issuer).unwrap();
    Leaf { chain_pem: format!("{}{ca_pem}", cert.pem()), key_pem: key.serialize_pem() }
}
