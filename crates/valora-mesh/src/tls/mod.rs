//! Mutual TLS for the mesh: live material, listeners and connectors.
//!
//! A [`MeshTls`] holds the current certificate, key and CA bundle of one
//! workload. The rustls configurations built from it look the material up
//! on every handshake, so [`MeshTls::reload`] changes what new connections
//! use without touching established ones.

mod client;
mod material;
mod server;
mod verify;
mod watch;

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::version::TLS13;
use rustls::{ClientConfig, ServerConfig};

pub use client::{ChannelError, MeshConnector, mesh_channel};
pub use verify::IdentityMismatch;
pub use watch::EXPIRY_WARNING;
pub use material::{LeafInfo, Material, MaterialError, TlsFiles, read_certs, read_key};
pub use server::{HandshakeFailure, MeshIncoming, serve_tls};

use crate::identity::Identity;

/// ALPN protocol of every mesh connection.
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider of every TLS configuration in VALORA: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as rustls' process-wide default provider, for libraries
/// (such as database drivers) that build their own configurations.
pub fn install_default_provider() {
    // An error means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The live TLS material of one workload.
pub struct MeshTls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Material>,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls")
            .field("files", &self.files)
            .field("current", &self.current.load())
            .finish()
    }
}

impl MeshTls {
    /// Loads and checks the material of `identity` from `files`.
    pub fn load(files: TlsFiles, identity: &Identity) -> Result<Arc<Self>, MaterialError> {
        let provider = provider();
        let material = Material::load(&files, identity, &provider)?;
        Ok(Arc::new(Self { files, provider, current: ArcSwap::from_pointee(material) }))
    }

    /// Reloads the files. On any error the previous material stays in use.
    /// Returns the new leaf facts, or `None` when the files are unchanged.
    pub fn reload(&self) -> Result<Option<LeafInfo>, MaterialError> {
        let current = self.current.load();
        let fresh = Material::load(&self.files, &current.identity, &self.provider)?;
        if fresh.leaf == current.leaf && same_roots(&fresh, &current) {
            return Ok(None);
        }
        let leaf = fresh.leaf.clone();
        self.current.store(Arc::new(fresh));
        Ok(Some(leaf))
    }

    /// The material in use now.
    pub fn current(&self) -> Arc<Material> {
        self.current.load_full()
    }

    /// The files this material is loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The identity of this workload.
    pub fn identity(&self) -> Identity {
        self.current.load().identity.clone()
    }

    /// A server configuration: TLS 1.3 only, ALPN `h2`, and a client
    /// certificate that chains to the current CA bundle is required.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&TLS13])?
            .with_client_cert_verifier(Arc::new(verify::LiveClientVerifier::new(self.clone())))
            .with_cert_resolver(Arc::new(verify::LiveCertResolver(self.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration that presents this workload's certificate and
    /// accepts only a server whose certificate carries `expected`.
    pub fn client_config(self: &Arc<Self>, expected: &Identity) -> Result<Arc<ClientConfig>, rustls::Error> {
        let verifier = verify::IdentityServerVerifier::new(self.clone(), expected.clone());
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(verify::LiveCertResolver(self.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

fn same_roots(a: &Material, b: &Material) -> bool {
    let subjects = |m: &Material| -> Vec<Vec<u8>> {
        m.roots.roots.iter().map(|r| r.subject.as_ref().to_vec()).collect()
    };
    subjects(a) == subjects(b)
}
