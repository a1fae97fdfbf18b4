//! The public listener: TCP, optional TLS, HTTP/1.1 and HTTP/2 (including
//! h2c with prior knowledge), and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;

/// Maximum time for a TLS handshake or for the headers of an HTTP/1.1
/// request to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent streams per HTTP/2 connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Largest accepted header block, in bytes.
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// The service the listener runs for every request.
pub type EdgeService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Accepts connections until `delay` after `shutdown` turns true (so that
/// load balancers see health turn NOT_SERVING first), then lets in-flight
/// requests finish for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    service: EdgeService,
    mut shutdown: watch::Receiver<bool>,
    delay: Duration,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(http_builder());
    let acceptor = tls.map(TlsAcceptor::from);
    let stop_accepting = async move {
        stopped(&mut shutdown).await;
        tokio::time::sleep(delay).await;
    };
    tokio::pin!(stop_accepting);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop_accepting => break,
        };
        let _ = tcp.set_nodelay(true);
        let connection = serve_connection(
            builder.clone(),
            acceptor.clone(),
            tcp,
            peer,
            service.clone(),
            graceful.watcher(),
        );
        tokio::spawn(connection);
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "edge draining");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(?drain, "edge drain timed out; closing remaining connections");
    }
}

fn http_builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .adaptive_window(true);
    builder
}

async fn serve_connection(
    builder: Arc<Builder<TokioExecutor>>,
    acceptor: Option<TlsAcceptor>,
    tcp: TcpStream,
    peer: SocketAddr,
    service: EdgeService,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let service = tower::ServiceBuilder::new()
        .map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ClientAddr(peer));
            request.map(Body::new)
        })
        .service(service);
    let hyper_service = TowerToHyperService::new(service);
    let result = match acceptor {
        None => watcher.watch(builder.serve_connection(TokioIo::new(tcp), hyper_service)).await,
        Some(acceptor) => {
            let tls = match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "edge TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "edge TLS handshake timed out");
                    return;
                }
            };
            watcher.watch(builder.serve_connection(TokioIo::new(tls), hyper_service)).await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// The TCP peer address of a request, inserted into its extensions.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Completes when `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
