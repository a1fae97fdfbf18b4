//! Connecting to a mesh service over mutual TLS.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use super::MeshTls;
use crate::identity::Identity;

/// A tower connector that dials TCP and runs a mutual-TLS handshake that
/// accepts only the expected server identity.
#[derive(Clone)]
pub struct MeshConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl MeshConnector {
    /// A connector presenting `tls`' certificate to a server that must be
    /// `expected`.
    pub fn new(tls: &Arc<MeshTls>, expected: &Identity) -> Result<Self, rustls::Error> {
        let server_name = ServerName::try_from(expected.dns_name())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Self { config: tls.client_config(expected)?, server_name })
    }
}

impl tower::Service<Uri> for MeshConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = TlsConnector::from(self.config.clone());
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let authority = uri.authority().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} has no host and port"))
            })?;
            let tcp = TcpStream::connect(authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A lazily connecting, multiplexed HTTP/2 channel to the mesh service
/// `expected` at `addr` (`host:port`).
///
/// The channel keeps one long-lived connection, reconnects when it drops
/// and sends HTTP/2 pings so that a dead peer is noticed.
pub fn mesh_channel(
    tls: &Arc<MeshTls>,
    addr: &str,
    expected: &Identity,
) -> Result<Channel, ChannelError> {
    let connector = MeshConnector::new(tls, expected).map_err(ChannelError::Tls)?;
    // The connector does TLS itself, so tonic sees a plain http URI.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ChannelError::Address(addr.to_owned(), e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .http2_adaptive_window(true);
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// A failure to set up a mesh channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid service address {0:?}: {1}; expected HOST:PORT")]
    Address(String, String),
    #[error("cannot build the TLS client configuration: {0}")]
    Tls(rustls::Error),
}
