//! rustls verifiers and certificate resolvers that read the live material.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::MeshTls;
use crate::identity::Identity;

/// Presents the current leaf, as a server and as a client.
#[derive(Debug)]
pub(super) struct LiveCertResolver(pub(super) Arc<MeshTls>);

impl ResolvesServerCert for LiveCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().certified_key.clone())
    }
}

impl ResolvesClientCert for LiveCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().certified_key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Requires a client certificate that chains to the current CA bundle.
#[derive(Debug)]
pub(super) struct LiveClientVerifier {
    tls: Arc<MeshTls>,
}

impl LiveClientVerifier {
    pub(super) fn new(tls: Arc<MeshTls>) -> Self {
        Self { tls }
    }
}

impl ClientCertVerifier for LiveClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; mesh clients always present their one leaf.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verifier = self.tls.current.load().client_verifier.clone();
        verifier.verify_client_cert(end_entity, intermediates, now)?;
        // A chain without a mesh identity is useless for authorization, so
        // it is refused here rather than at the first call.
        Identity::from_certificate(end_entity).map_err(identity_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let verifier = self.tls.current.load().client_verifier.clone();
        verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let verifier = self.tls.current.load().client_verifier.clone();
        verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.tls.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the server's chain against the current CA bundle, its DNS name,
/// and that its SPIFFE ID is the expected identity.
#[derive(Debug)]
pub(super) struct IdentityServerVerifier {
    tls: Arc<MeshTls>,
    expected: Identity,
}

/// The server presented a valid certificate for another workload.
#[derive(Debug, thiserror::Error)]
#[error("server presented identity {presented}, expected {expected}")]
pub struct IdentityMismatch {
    pub expected: Identity,
    pub presented: Identity,
}

impl IdentityServerVerifier {
    pub(super) fn new(tls: Arc<MeshTls>, expected: Identity) -> Self {
        Self { tls, expected }
    }

}

impl ServerCertVerifier for IdentityServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let webpki = self.tls.current.load().server_verifier.clone();
        webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        let presented = Identity::from_certificate(end_entity).map_err(identity_error)?;
        if presented != self.expected {
            let mismatch = IdentityMismatch { expected: self.expected.clone(), presented };
            return Err(Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                mismatch,
            )))));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.tls.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.tls.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.tls.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn identity_error(e: crate::identity::IdentityError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}
