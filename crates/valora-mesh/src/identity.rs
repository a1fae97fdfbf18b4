//! Workload identities: SPIFFE IDs in the trust domain `valora.internal`.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Trust domain of every mesh identity.
pub const TRUST_DOMAIN: &str = "valora.internal";

const SPIFFE_PREFIX: &str = "spiffe://valora.internal/";

/// A workload identity such as `spiffe://valora.internal/marketplace`.
///
/// The name is the last path segment: lowercase ASCII letters, digits and
/// `-`, at most 63 characters, so it is also a valid DNS label.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    name: String,
}

/// Reasons an identity string or certificate is rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity name {0:?} is invalid: use 1 to 63 lowercase letters, digits or '-'")]
    InvalidName(String),
    #[error("{0:?} is not a SPIFFE ID of trust domain {TRUST_DOMAIN}")]
    ForeignUri(String),
    #[error("certificate could not be parsed: {0}")]
    Unparseable(String),
    #[error("certificate has no spiffe://{TRUST_DOMAIN}/ URI subject alternative name")]
    Missing,
    #[error("certificate carries more than one SPIFFE ID: {0} and {1}")]
    Ambiguous(String, String),
}

impl Identity {
    /// The edge (`valora-gateway`).
    pub fn edge() -> Self {
        Self::from_static("edge")
    }

    /// The auth service.
    pub fn auth() -> Self {
        Self::from_static("auth")
    }

    /// The marketplace service.
    pub fn marketplace() -> Self {
        Self::from_static("marketplace")
    }

    /// Engineers calling internal services directly, for example with grpcurl.
    pub fn engineer() -> Self {
        Self::from_static("engineer")
    }

    fn from_static(name: &'static str) -> Self {
        Self { name: name.to_owned() }
    }

    /// Builds an identity from its short name, such as `marketplace`.
    pub fn from_name(name: &str) -> Result<Self, IdentityError> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self { name: name.to_owned() })
        } else {
            Err(IdentityError::InvalidName(name.to_owned()))
        }
    }

    /// Short name, such as `marketplace`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SPIFFE ID, such as `spiffe://valora.internal/marketplace`.
    pub fn spiffe_id(&self) -> String {
        format!("{SPIFFE_PREFIX}{}", self.name)
    }

    /// DNS name of the workload, such as `marketplace.valora.internal`.
    pub fn dns_name(&self) -> String {
        format!("{}.{TRUST_DOMAIN}", self.name)
    }

    /// Reads the single SPIFFE ID of a DER certificate.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let (_, parsed) = X509Certificate::from_der(cert.as_ref())
            .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
        let mut found: Option<Identity> = None;
        let sans = parsed
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparseable(e.to_string()))?;
        for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
            let GeneralName::URI(uri) = name else { continue };
            if !uri.starts_with("spiffe://") {
                continue;
            }
            let identity: Identity = uri.parse()?;
            if let Some(previous) = &found {
                return Err(IdentityError::Ambiguous(previous.spiffe_id(), identity.spiffe_id()));
            }
            found = Some(identity);
        }
        found.ok_or(IdentityError::Missing)
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    /// Parses either a SPIFFE ID or a short name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix(SPIFFE_PREFIX) {
            Some(name) => Self::from_name(name),
            None if s.contains("://") => Err(IdentityError::ForeignUri(s.to_owned())),
            None => Self::from_name(s),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spiffe_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spiffe_ids_and_names() {
        let id: Identity = "spiffe://valora.internal/marketplace".parse().unwrap();
        assert_eq!(id, Identity::marketplace());
        assert_eq!("edge".parse::<Identity>().unwrap(), Identity::edge());
        assert_eq!(id.dns_name(), "marketplace.valora.internal");
    }

    #[test]
    fn rejects_foreign_and_malformed_ids() {
        assert!(matches!(
            "spiffe://evil.example/marketplace".parse::<Identity>(),
            Err(IdentityError::ForeignUri(_))
        ));
        for bad in ["", "Market", "a/b", "-x", "x-", &"a".repeat(64), "spiffe://valora.internal/"] {
            assert!(bad.parse::<Identity>().is_err(), "{bad:?} parsed");
        }
    }
}
