//! Mutual-TLS channels to internal services.

use std::path::PathBuf;
use std::sync::Arc;

use tonic::transport::Channel;
use tower::ServiceExt;
use valora_mesh::Identity;
use valora_mesh::tls::{ChannelError, MeshConnector, MeshTls, TlsFiles, mesh_channel};

use crate::ClientError;
use crate::error::identity_mismatch;

/// Where the caller's certificate, key and CA bundle are.
#[derive(Clone, Debug)]
enum Certificates {
    /// A folder laid out like `valora certs dev` writes it.
    Dir(PathBuf),
    /// Explicit files.
    Files(TlsFiles),
}

/// Builds a mutual-TLS [`Channel`] to one internal service, such as the
/// marketplace.
///
/// The caller presents the certificate of its own identity
/// ([`identity`](Self::identity)) and accepts only a server whose
/// certificate chains to the CA bundle and carries the SPIFFE ID of
/// [`target`](Self::target) as its URI subject alternative name. TLS is
/// valora-mesh's: [`MeshTls`] holds the material, [`MeshConnector`] and
/// [`mesh_channel`] dial; TLS 1.3 only, ALPN `h2`.
///
/// The channel:
///
/// - connects lazily, at the first call, and keeps one long-lived HTTP/2
///   connection that every clone of the channel and every client made from
///   it share; calls are multiplexed on it;
/// - reconnects on the next call after the connection drops, and sends
///   HTTP/2 pings so that a dead server is noticed; connecting gives up
///   after 5 seconds;
/// - re-reads the certificate files when they change, while a tokio
///   runtime is running ([`MeshTls::spawn_watcher`]); new connections use
///   the new certificate.
///
/// The channel sets no deadline of its own: wrap it with
/// [`Calls`](crate::Calls), which adds the API key and a default deadline.
///
/// A server with a valid certificate of another workload fails the first
/// call with UNAVAILABLE; [`explain`](crate::explain) names both
/// identities. [`connect`](Self::connect) checks this before any call.
#[derive(Clone, Debug)]
pub struct MeshChannelBuilder {
    address: String,
    identity: Option<Identity>,
    target: Option<Identity>,
    certificates: Option<Certificates>,
    watch: bool,
}

impl MeshChannelBuilder {
    /// A channel to the service listening at `address` (`HOST:PORT`).
    pub fn new(address: impl Into<String>) -> Self {
        Self { address: address.into(), identity: None, target: None, certificates: None, watch: true }
    }

    /// The caller's own identity, such as [`Identity::engineer`]; its
    /// certificate is presented to the server.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The identity the server must prove, such as
    /// [`Identity::marketplace`].
    pub fn target(mut self, target: Identity) -> Self {
        self.target = Some(target);
        self
    }

    /// Reads `ca.pem`, `NAME.pem` and `NAME.key` from `dir`, where NAME is
    /// the caller's identity name: the layout of `valora certs dev`.
    pub fn certs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.certificates = Some(Certificates::Dir(dir.into()));
        self
    }

    /// Reads the CA bundle, the certificate chain (leaf first) and the
    /// private key from these files.
    pub fn files(mut self, ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.certificates =
            Some(Certificates::Files(TlsFiles { ca: ca.into(), cert: cert.into(), key: key.into() }));
        self
    }

    /// Whether to re-read the certificate files when they change (on by
    /// default). The watcher runs on the tokio runtime the channel is built
    /// in, until that runtime stops.
    pub fn watch_certificates(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// Loads and checks the caller's TLS material: the files are readable
    /// and parse, the key belongs to the certificate, the certificate
    /// carries the caller's identity, is within its validity period and
    /// chains to the CA bundle. Errors name the file.
    pub fn load_tls(&self) -> Result<Arc<MeshTls>, ClientError> {
        let identity = self.identity.clone().ok_or(ClientError::Missing {
            setting: "the caller's identity",
            hint: "call MeshChannelBuilder::identity",
        })?;
        let files = match &self.certificates {
            Some(Certificates::Dir(dir)) => TlsFiles::in_dir(dir, &identity),
            Some(Certificates::Files(files)) => files.clone(),
            None => {
                return Err(ClientError::Missing {
                    setting: "the certificate files",
                    hint: "call MeshChannelBuilder::certs_dir or MeshChannelBuilder::files",
                });
            }
        };
        MeshTls::load(files, &identity).map_err(|source| ClientError::Material { identity, source })
    }

    fn target_identity(&self) -> Result<Identity, ClientError> {
        self.target.clone().ok_or(ClientError::Missing {
            setting: "the server's identity",
            hint: "call MeshChannelBuilder::target",
        })
    }

    /// The channel, connecting at the first call. Must run inside a tokio
    /// runtime.
    pub fn build(&self) -> Result<Channel, ClientError> {
        require_runtime()?;
        let target = self.target_identity()?;
        let tls = self.load_tls()?;
        let channel = self.channel(&tls, &target)?;
        self.start_watching(&tls);
        Ok(channel)
    }

    /// The channel, after one TLS handshake with the server proved that it
    /// is reachable and is the target. A server of another workload is
    /// [`ClientError::IdentityMismatch`], naming both identities.
    ///
    /// The checking connection is closed again; the channel opens its own
    /// at the first call.
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        require_runtime()?;
        let target = self.target_identity()?;
        let tls = self.load_tls()?;
        let channel = self.channel(&tls, &target)?;
        let connector = MeshConnector::new(&tls, &target).map_err(|e| ClientError::Tls(e.to_string()))?;
        let uri: http::Uri = format!("http://{}", self.address).parse().map_err(|e: http::uri::InvalidUri| {
            ClientError::Address { address: self.address.clone(), reason: e.to_string() }
        })?;
        let handshake = connector.oneshot(uri);
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(_connection)) => {}
            Ok(Err(error)) => return Err(self.connect_error(&error)),
            Err(_) => {
                return Err(ClientError::Connect {
                    address: self.address.clone(),
                    reason: format!("no TLS handshake within {} seconds", CONNECT_TIMEOUT.as_secs()),
                });
            }
        }
        self.start_watching(&tls);
        Ok(channel)
    }

    fn channel(&self, tls: &Arc<MeshTls>, target: &Identity) -> Result<Channel, ClientError> {
        mesh_channel(tls, &self.address, target).map_err(|error| match error {
            ChannelError::Address(address, reason) => ClientError::Address { address, reason },
            ChannelError::Tls(error) => ClientError::Tls(error.to_string()),
        })
    }

    fn connect_error(&self, error: &std::io::Error) -> ClientError {
        if let Some(mismatch) = identity_mismatch(error) {
            return ClientError::IdentityMismatch {
                address: self.address.clone(),
                expected: mismatch.expected,
                presented: mismatch.presented,
            };
        }
        ClientError::Connect { address: self.address.clone(), reason: error.to_string() }
    }

    fn start_watching(&self, tls: &Arc<MeshTls>) {
        if !self.watch {
            return;
        }
        tls.spawn_watcher();
        tracing::debug!(identity = %tls.identity(), files = ?tls.files(), "watching certificate files");
    }
}

/// Tonic's channels and the certificate watcher spawn tasks on the current
/// tokio runtime, which panics without one; this turns that into an error.
pub(crate) fn require_runtime() -> Result<(), ClientError> {
    tokio::runtime::Handle::try_current().map(|_| ()).map_err(|_| ClientError::NoRuntime)
}

/// Limit of the handshake of [`MeshChannelBuilder::connect`], the same as
/// the channel's own connect timeout.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use valora_mesh::pki::write_dev_pki;

    use super::*;
    use crate::EdgeChannelBuilder;

    fn builder(dir: &std::path::Path) -> MeshChannelBuilder {
        MeshChannelBuilder::new("127.0.0.1:1")
            .certs_dir(dir)
            .identity(Identity::engineer())
            .target(Identity::marketplace())
    }

    #[tokio::test]
    async fn builds_from_a_certificate_folder() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), false).unwrap();
        builder(dir.path()).build().unwrap();
    }

    #[test]
    fn outside_a_runtime_building_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), false).unwrap();
        let error = builder(dir.path()).build().unwrap_err();
        assert!(matches!(error, ClientError::NoRuntime), "{error}");
        let error = EdgeChannelBuilder::new("http://127.0.0.1:8080").build().unwrap_err();
        assert!(matches!(error, ClientError::NoRuntime), "{error}");
    }

    #[tokio::test]
    async fn missing_settings_are_named() {
        let error = MeshChannelBuilder::new("127.0.0.1:1").target(Identity::auth()).build().unwrap_err();
        assert!(error.to_string().contains("the caller's identity"), "{error}");
        let error = MeshChannelBuilder::new("127.0.0.1:1").identity(Identity::engineer()).build().unwrap_err();
        assert!(error.to_string().contains("the server's identity"), "{error}");
        let error = MeshChannelBuilder::new("127.0.0.1:1")
            .identity(Identity::engineer())
            .target(Identity::auth())
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("certificate files"), "{error}");
    }

    #[tokio::test]
    async fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = builder(&dir.path().join("nowhere")).build().unwrap_err();
        let message = error.to_string();
        assert!(message.contains("nowhere/engineer.pem"), "{message}");
        assert!(message.contains("spiffe://valora.internal/engineer"), "{message}");
    }

    #[tokio::test]
    async fn an_unparseable_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), false).unwrap();
        let key = dir.path().join("broken.key");
        std::fs::write(&key, "not a key").unwrap();
        let error = MeshChannelBuilder::new("127.0.0.1:1")
            .files(dir.path().join("ca.pem"), dir.path().join("engineer.pem"), &key)
            .identity(Identity::engineer())
            .target(Identity::marketplace())
            .build()
            .unwrap_err();
        assert!(error.to_string().contains(&key.display().to_string()), "{error}");
    }

    #[tokio::test]
    async fn a_certificate_of_another_identity_names_both() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), false).unwrap();
        let error = MeshChannelBuilder::new("127.0.0.1:1")
            .files(dir.path().join("ca.pem"), dir.path().join("edge.pem"), dir.path().join("edge.key"))
            .identity(Identity::engineer())
            .target(Identity::marketplace())
            .build()
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("edge.pem"), "{message}");
        assert!(message.contains("spiffe://valora.internal/edge"), "{message}");
        assert!(message.contains("spiffe://valora.internal/engineer"), "{message}");
    }

    #[tokio::test]
    async fn a_malformed_address_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), false).unwrap();
        let error = MeshChannelBuilder::new("not an address")
            .certs_dir(dir.path())
            .identity(Identity::engineer())
            .target(Identity::marketplace())
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("not an address"), "{error}");
    }

    #[tokio::test]
    async fn connect_reports_an_unreachable_server() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), false).unwrap();
        // Port 1 on the loopback address has no listener.
        let error = builder(dir.path()).connect().await.unwrap_err();
        assert!(error.to_string().contains("cannot connect to 127.0.0.1:1"), "{error}");
    }
}
