//! The public listener: TCP, optional TLS, HTTP/1.1 and HTTP/2 (including
//! h2c with prior knowledge), and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;

/// Maximum time for a TLS handshake, for the headers of an HTTP/1.1
/// request, and for the first bytes of a connection (the HTTP/2 preface)
/// to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a client must send within [`HEADER_TIMEOUT`] of connecting: the
/// length of the HTTP/2 connection preface.
const OPENING_BYTES: usize = 24;
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
        None => {
            let tcp = OpeningDeadline::new(tcp, HEADER_TIMEOUT);
            watcher.watch(builder.serve_connection(TokioIo::new(tcp), hyper_service)).await
        }
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
            let tls = OpeningDeadline::new(tls, HEADER_TIMEOUT);
            watcher.watch(builder.serve_connection(TokioIo::new(tls), hyper_service)).await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// A connection that fails its reads with `TimedOut` unless the client
/// sends [`OPENING_BYTES`] bytes before a deadline.
///
/// hyper's HTTP/1.1 header timeout starts only with the first byte of a
/// request, and the protocol detection waits for the whole HTTP/2 preface
/// without a limit, so a client that connects and stays silent, or stops
/// inside the preface, would otherwise hold its connection forever.
struct OpeningDeadline<T> {
    inner: T,
    received: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> OpeningDeadline<T> {
    fn new(inner: T, limit: Duration) -> Self {
        Self { inner, received: 0, deadline: Some(Box::pin(tokio::time::sleep(limit))) }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for OpeningDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.received += buf.filled().len() - before;
            if this.received >= OPENING_BYTES {
                this.deadline = None;
            }
        }
        if read.is_pending()
            && let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client sent too little within the opening timeout",
            )));
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for OpeningDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The TCP peer address of a request, inserted into its extensions.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Completes when `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
