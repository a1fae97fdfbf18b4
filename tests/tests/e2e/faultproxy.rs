//! A fault-injecting TCP proxy for tests. It forwards every connection made
//! to its own port on 127.0.0.1 to a target address. On command it adds
//! latency, stalls (stops moving bytes but keeps the connections open) or
//! cuts (closes every connection, and closes new ones at once).
//!
//! The proxy forwards bytes, so TLS and HTTP/2 pass through it unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the proxy does to the bytes it forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards at once.
    None,
    /// Holds every chunk for this long in each direction, so a round trip
    /// takes twice this duration longer. Chunks keep their order.
    Latency(Duration),
    /// Stops reading and writing. Connections stay open, and bytes already
    /// read wait in the proxy until the fault changes.
    Stall,
    /// Closes every open connection, and every new one right after
    /// accepting it.
    Cut,
}

/// Connection counts of a proxy.
#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// A running proxy. Dropping it closes the listener and every connection.
pub struct FaultProxy {
    /// The address clients connect to.
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    counts: Arc<Counts>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (fault, _) = watch::channel(Fault::None);
        let counts = Arc::new(Counts::default());
        let accept = tokio::spawn(accept_loop(listener, target, fault.subscribe(), counts.clone()));
        Self { addr, fault, counts, accept }
    }

    /// Changes what the proxy does, for open and new connections alike.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.fault.send_replace(Fault::Cut);
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, fault: watch::Receiver<Fault>, counts: Arc<Counts>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                eprintln!("fault proxy: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        counts.accepted.fetch_add(1, Ordering::SeqCst);
        if *fault.borrow() == Fault::Cut {
            drop(client);
            continue;
        }
        counts.open.fetch_add(1, Ordering::SeqCst);
        let (fault, counts) = (fault.clone(), counts.clone());
        tokio::spawn(async move {
            forward(client, target, fault).await;
            counts.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Moves bytes both ways until both sides have finished or the fault
/// becomes [`Fault::Cut`]. Returning drops both sockets, which closes them.
async fn forward(client: TcpStream, target: SocketAddr, fault: watch::Receiver<Fault>) {
    let Ok(upstream) = TcpStream::connect(target).await else { return };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let both_ways = async {
        tokio::join!(
            pump(client_read, upstream_write, fault.clone()),
            pump(upstream_read, client_write, fault.clone()),
        )
    };
    let mut fault = fault.clone();
    tokio::select! {
        _ = both_ways => {}
        _ = fault.wait_for(|f| *f == Fault::Cut) => {}
    }
}

/// Copies one direction. A reader queues chunks with the time they are due,
/// and a writer sends each chunk when it is due and no stall is in force.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, fault: watch::Receiver<Fault>) {
    // A bounded queue, so that a stalled or slow writer stops the reader
    // and TCP flow control pushes back on the sender.
    let (queue, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let mut reader_fault = fault.clone();
    let reader = async move {
        let mut buffer = vec![0_u8; 16 * 1024];
        loop {
            if reader_fault.wait_for(|f| *f != Fault::Stall).await.is_err() {
                return;
            }
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let delay = match *reader_fault.borrow() {
                Fault::Latency(delay) => delay,
                _ => Duration::ZERO,
            };
            if queue.send((Instant::now() + delay, buffer[..read].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let mut writer_fault = fault;
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if writer_fault.wait_for(|f| *f != Fault::Stall).await.is_err() {
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The reader reached the end of its stream, so the writer ends its own.
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
