//! Accepting mutual-TLS connections for a tonic server.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::{CertificateError, Error as TlsError, PeerIncompatible, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::ALPN_H2;

/// Maximum time a peer may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum number of handshakes in progress; more connections wait in the
/// kernel's accept queue.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// Why an incoming connection was refused during its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer did not speak TLS, for example plaintext HTTP/2.
    NotTls,
    /// The peer offered no TLS 1.3.
    ProtocolVersion,
    /// The peer sent no client certificate.
    NoClientCertificate,
    /// The client certificate does not chain to the mesh CA.
    UnknownCa,
    /// The client certificate has expired.
    Expired,
    /// The client certificate is not valid yet.
    NotYetValid,
    /// The client certificate carries no usable mesh identity.
    BadIdentity,
    /// The peer did not negotiate ALPN `h2`.
    NoAlpn,
    /// The peer did not finish the handshake in time.
    Timeout,
    /// Any other failure.
    Other,
}

impl HandshakeFailure {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotTls => "not_tls",
            Self::ProtocolVersion => "protocol_version",
            Self::NoClientCertificate => "no_client_certificate",
            Self::UnknownCa => "unknown_ca",
            Self::Expired => "certificate_expired",
            Self::NotYetValid => "certificate_not_yet_valid",
            Self::BadIdentity => "bad_identity",
            Self::NoAlpn => "no_alpn_h2",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    fn classify(error: &io::Error) -> Self {
        let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) else {
            return Self::Other;
        };
        match tls {
            TlsError::InvalidMessage(_) => Self::NotTls,
            TlsError::NoCertificatesPresented => Self::NoClientCertificate,
            TlsError::NoApplicationProtocol => Self::NoAlpn,
            TlsError::PeerIncompatible(
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::ServerDoesNotSupportTls12Or13,
            ) => Self::ProtocolVersion,
            TlsError::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => Self::UnknownCa,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => Self::Expired,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Self::NotYetValid
                }
                CertificateError::Other(_) => Self::BadIdentity,
                _ => Self::Other,
            },
            _ => Self::Other,
        }
    }
}

/// Established mutual-TLS connections, for `serve_with_incoming`.
pub struct MeshIncoming {
    rx: mpsc::Receiver<TlsStream<TcpStream>>,
    local_addr: SocketAddr,
}

impl MeshIncoming {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Stream for MeshIncoming {
    type Item = Result<TlsStream<TcpStream>, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|conn| conn.map(Ok))
    }
}

/// Accepts connections on `listener` and completes each TLS handshake in its
/// own task, so that a slow or hostile peer never stalls the accept loop.
///
/// Refused handshakes are logged with their reason and passed to
/// `on_failure` (for metrics). The loop ends when the returned stream is
/// dropped.
pub fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    listener_name: &'static str,
    on_failure: Arc<dyn Fn(HandshakeFailure) + Send + Sync>,
) -> io::Result<MeshIncoming> {
    let local_addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));

    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Usually file descriptor exhaustion; back off briefly.
                    tracing::warn!(listener = listener_name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, on_failure) = (acceptor.clone(), tx.clone(), on_failure.clone());
            tokio::spawn(async move {
                let outcome = handshake(&acceptor, tcp).await;
                drop(permit);
                match outcome {
                    Ok(stream) => {
                        let _ = tx.send(stream).await;
                    }
                    Err((reason, detail)) => {
                        tracing::info!(
                            listener = listener_name,
                            %peer,
                            reason = reason.as_str(),
                            detail = %detail,
                            "TLS handshake refused"
                        );
                        on_failure(reason);
                    }
                }
            });
        }
    });
    Ok(MeshIncoming { rx, local_addr })
}

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, (HandshakeFailure, String)> {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Err(_) => return Err((HandshakeFailure::Timeout, "no handshake in time".to_owned())),
        Ok(Err(error)) => return Err((HandshakeFailure::classify(&error), error.to_string())),
        Ok(Ok(stream)) => stream,
    };
    if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
        return Err((HandshakeFailure::NoAlpn, "client did not offer ALPN h2".to_owned()));
    }
    Ok(stream)
}
