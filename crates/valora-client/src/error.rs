//! Errors of the client kit, and explanations of failed calls.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::path::PathBuf;

use rustls::CertificateError;
use rustls::pki_types::ServerName;
use valora_mesh::Identity;
use valora_mesh::identity::IdentityError;
use valora_mesh::tls::{IdentityMismatch, MaterialError};

/// A failure to set up a channel or credentials, or a failed call.
///
/// Every message names what was wrong: the setting, the file, the address
/// or, for a server of another workload, both identities. `Debug` prints
/// the same message as `Display`, so that a `main` returning
/// `Result<(), ClientError>` reports it readably.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A required builder setting was not given.
    #[error("{setting} is not set: {hint}")]
    Missing {
        /// The setting, such as "the caller's identity".
        setting: &'static str,
        /// The builder method that sets it.
        hint: &'static str,
    },
    /// An identity string is not a VALORA workload identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The certificate, key or CA bundle of the caller could not be used.
    /// The source names the file and what was wrong with it.
    #[error("TLS material of {identity}: {source}")]
    Material {
        /// The caller's identity.
        identity: Identity,
        /// The loading error, which names the file.
        #[source]
        source: MaterialError,
    },
    /// A file given to a builder could not be read or parsed.
    #[error("{what} {path}: {reason}")]
    File {
        /// The role of the file, such as "CA bundle".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The reason it cannot be used.
        reason: String,
    },
    /// An address or URL is malformed.
    #[error("invalid address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// The problem, and the expected form.
        reason: String,
    },
    /// The TLS client configuration could not be built.
    #[error("cannot build the TLS client configuration: {0}")]
    Tls(String),
    /// An API key or token cannot be sent as a header value.
    #[error("the {header} value cannot be sent: {reason}")]
    Header {
        /// The header, such as `x-api-key`.
        header: &'static str,
        /// The reason the value is not a valid header value.
        reason: &'static str,
    },
    /// The server presented a valid certificate of another workload.
    #[error("the server at {address} presented identity {presented}, expected {expected}")]
    IdentityMismatch {
        /// The address dialled.
        address: String,
        /// The identity the client was configured to accept.
        expected: Identity,
        /// The identity in the server's certificate.
        presented: Identity,
    },
    /// Connecting to the server failed for another reason.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The address dialled.
        address: String,
        /// The failure and its causes.
        reason: String,
    },
    /// A channel was built outside a tokio runtime; tonic's channels run a
    /// background task on the runtime they are built in.
    #[error("channels need a tokio runtime: build them inside one (for example in #[tokio::main])")]
    NoRuntime,
    /// A call failed; the message is [`explain`]'s.
    #[error("{}", explain(.0))]
    Call(#[from] tonic::Status),
}

impl std::fmt::Debug for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl ClientError {
    /// The expected and the presented identity when the server was another
    /// workload, whether found by [`MeshChannelBuilder::connect`] or by a
    /// failed call.
    ///
    /// [`MeshChannelBuilder::connect`]: crate::MeshChannelBuilder::connect
    pub fn identity_mismatch(&self) -> Option<IdentityMismatch> {
        match self {
            Self::IdentityMismatch { expected, presented, .. } => {
                Some(IdentityMismatch { expected: expected.clone(), presented: presented.clone() })
            }
            Self::Call(status) => identity_mismatch(status),
            _ => None,
        }
    }
}

/// Finds, in the causes of `error`, that the server presented a
/// certificate of another workload than the one expected, and returns both
/// identities.
///
/// valora-mesh's verifier refuses such a server during the TLS handshake,
/// and the failure reaches the caller of a channel wrapped in rustls',
/// std's and tonic's errors; this looks through all of them. The verifier
/// checks the certificate's DNS name (`NAME.valora.internal`) before its
/// SPIFFE ID, so a certificate of another mesh workload usually fails the
/// DNS name check: the expected identity then comes from the expected DNS
/// name and the presented one from the SPIFFE ID among the names the
/// certificate holds. A certificate with the right DNS name and another
/// SPIFFE ID fails with valora-mesh's own [`IdentityMismatch`].
pub fn identity_mismatch(error: &(dyn StdError + 'static)) -> Option<IdentityMismatch> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(mismatch) = direct_mismatch(error) {
            return Some(mismatch);
        }
        // std::io::Error::source skips the error it wraps and returns that
        // error's source, so the wrapped error is looked at here.
        if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            let inner: &(dyn StdError + 'static) = inner;
            if let Some(mismatch) = identity_mismatch(inner) {
                return Some(mismatch);
            }
        }
        current = error.source();
    }
    None
}

fn direct_mismatch(error: &(dyn StdError + 'static)) -> Option<IdentityMismatch> {
    if let Some(mismatch) = error.downcast_ref::<IdentityMismatch>() {
        return Some(copy(mismatch));
    }
    match error.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            let inner: &(dyn StdError + 'static) = other.0.as_ref();
            inner.downcast_ref::<IdentityMismatch>().map(copy)
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { expected, presented }) => {
            let ServerName::DnsName(dns) = expected else { return None };
            let name = dns.as_ref().strip_suffix(MESH_DNS_SUFFIX)?;
            let expected = Identity::from_name(name).ok()?;
            let presented = presented.iter().find_map(|name| spiffe_id_in(name))?;
            (presented != expected).then_some(IdentityMismatch { expected, presented })
        }
        _ => None,
    }
}

/// Suffix of every mesh workload's DNS name.
const MESH_DNS_SUFFIX: &str = ".valora.internal";

/// The mesh identity in rustls' rendering of a certificate name, such as
/// `UniformResourceIdentifier("spiffe://valora.internal/marketplace")`.
fn spiffe_id_in(name: &str) -> Option<Identity> {
    let start = name.find("spiffe://")?;
    let uri = &name[start..];
    let end = uri.find(|c: char| c == '"' || c == ')' || c.is_whitespace()).unwrap_or(uri.len());
    uri[..end].parse().ok()
}

fn copy(mismatch: &IdentityMismatch) -> IdentityMismatch {
    IdentityMismatch { expected: mismatch.expected.clone(), presented: mismatch.presented.clone() }
}

/// A one-line explanation of a failed call: its code and message, then the
/// causes tonic keeps out of the message (such as the TLS error of a
/// failed connection).
///
/// When the server presented a certificate of another workload the
/// explanation starts with both identities:
/// `wrong server identity: expected spiffe://valora.internal/auth, the
/// server presented spiffe://valora.internal/marketplace; ...`.
pub fn explain(status: &tonic::Status) -> String {
    let mut text = String::new();
    if let Some(mismatch) = identity_mismatch(status) {
        let _ = write!(
            text,
            "wrong server identity: expected {}, the server presented {}; ",
            mismatch.expected, mismatch.presented
        );
    }
    let _ = write!(text, "{:?}: {}", status.code(), status.message());
    let mut cause = StdError::source(status);
    while let Some(error) = cause {
        let line = error.to_string();
        if !line.is_empty() && !text.contains(&line) {
            let _ = write!(text, ": {line}");
        }
        if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            let inner_line = inner.to_string();
            if !text.contains(&inner_line) {
                let _ = write!(text, ": {inner_line}");
            }
        }
        cause = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::OtherError;

    use super::*;

    /// A status whose cause is `error` wrapped like tonic wraps a failed
    /// connection: in an io::Error.
    fn failed_connection(error: rustls::Error) -> tonic::Status {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
        let mut status = tonic::Status::unavailable("connection failed");
        status.set_source(Arc::new(io));
        status
    }

    #[test]
    fn finds_both_identities_after_a_dns_name_mismatch() {
        let error = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("auth.valora.internal").unwrap(),
            presented: vec![
                "DnsName(\"marketplace.valora.internal\")".to_owned(),
                "UniformResourceIdentifier(\"spiffe://valora.internal/marketplace\")".to_owned(),
            ],
        });
        let status = failed_connection(error);
        let mismatch = identity_mismatch(&status).unwrap();
        assert_eq!(mismatch.expected, Identity::auth());
        assert_eq!(mismatch.presented, Identity::marketplace());
        let text = explain(&status);
        assert!(
            text.starts_with(
                "wrong server identity: expected spiffe://valora.internal/auth, \
                 the server presented spiffe://valora.internal/marketplace"
            ),
            "{text}"
        );
        let error = ClientError::from(status);
        assert!(error.identity_mismatch().is_some());
        assert!(format!("{error:?}").contains("spiffe://valora.internal/marketplace"));
    }

    #[test]
    fn finds_valora_mesh_identity_mismatch() {
        let mismatch = IdentityMismatch { expected: Identity::marketplace(), presented: Identity::edge() };
        let error = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(mismatch))));
        let found = identity_mismatch(&failed_connection(error)).unwrap();
        assert_eq!((found.expected, found.presented), (Identity::marketplace(), Identity::edge()));
    }

    #[test]
    fn other_failures_have_no_mismatch() {
        let status = failed_connection(rustls::Error::InvalidCertificate(CertificateError::Expired));
        assert!(identity_mismatch(&status).is_none());
        let text = explain(&status);
        assert!(text.starts_with("Unavailable: connection failed"), "{text}");
        assert!(text.contains("Expired"), "{text}");
        assert_eq!(explain(&tonic::Status::not_found("listing x")), "NotFound: listing x");
    }

    #[test]
    fn reads_spiffe_ids_from_rendered_names() {
        assert_eq!(
            spiffe_id_in("UniformResourceIdentifier(\"spiffe://valora.internal/edge\")"),
            Some(Identity::edge())
        );
        assert_eq!(spiffe_id_in("UniformResourceIdentifier(\"spiffe://other.example/edge\")"), None);
        assert_eq!(spiffe_id_in("DnsName(\"edge.valora.internal\")"), None);
    }
}
