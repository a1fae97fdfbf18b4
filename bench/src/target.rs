//! The call target: an address and its transport, which is h2c, TLS (the
//! server verified against a CA file) or mutual TLS with a mesh identity
//! from `valora_mesh::tls`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body_util::Full;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use valora_mesh::identity::Identity;
use valora_mesh::tls::{MeshTls, TlsFiles, read_certs};

/// A sender of HTTP/2 requests on one connection.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// Connection settings shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TargetArgs {
    /// Server address, HOST:PORT.
    #[arg(long)]
    pub(crate) addr: String,

    /// Speak TLS and verify the server against --ca.
    #[arg(long, requires = "ca")]
    pub(crate) tls: bool,

    /// PEM bundle that signs the server's certificate (with --tls).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,

    /// Name the server's certificate must carry (with --tls).
    #[arg(long, default_value = "localhost")]
    pub(crate) server_name: String,

    /// Mutual TLS: folder written by `valora certs dev`; the client presents
    /// the certificate of --identity and accepts only a server carrying
    /// --expect.
    #[arg(long, value_name = "DIR", conflicts_with = "tls")]
    pub(crate) certs_dir: Option<PathBuf>,

    /// Mesh identity presented with --certs-dir.
    #[arg(long, default_value = "edge")]
    pub(crate) identity: String,

    /// Mesh identity the server must prove with --certs-dir.
    #[arg(long, default_value = "marketplace")]
    pub(crate) expect: String,

    /// Sent as x-api-key on every call; empty sends none.
    #[arg(long, env = "VALORA_LOAD_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,

    /// Extra request header, NAME:VALUE; repeatable.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub(crate) headers: Vec<String>,
}

enum Security {
    Plain,
    Tls { config: Arc<ClientConfig>, name: ServerName<'static> },
}

/// A resolved target: address, transport security and request headers.
pub(crate) struct Target {
    addr: String,
    security: Security,
    headers: HeaderMap,
}

impl Target {
    pub(crate) fn new(args: &TargetArgs) -> anyhow::Result<Self> {
        let security = if let Some(dir) = &args.certs_dir {
            let identity = Identity::from_name(&args.identity)?;
            let expected = Identity::from_name(&args.expect)?;
            let tls = MeshTls::load(TlsFiles::in_dir(dir, &identity), &identity)
                .with_context(|| format!("loading the {identity} certificate from {}", dir.display()))?;
            let config = tls.client_config(&expected)?;
            let name = ServerName::try_from(expected.dns_name())?;
            Security::Tls { config, name }
        } else if args.tls {
            let Some(ca) = &args.ca else { bail!("--tls needs --ca") };
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert)?;
            }
            let mut config = ClientConfig::builder_with_provider(valora_mesh::tls::provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let name = ServerName::try_from(args.server_name.clone())?;
            Security::Tls { config: Arc::new(config), name }
        } else {
            Security::Plain
        };
        let mut headers = HeaderMap::new();
        if let Some(key) = args.api_key.as_deref().filter(|k| !k.is_empty()) {
            headers.insert("x-api-key", HeaderValue::from_str(key).context("--api-key")?);
        }
        for header in &args.headers {
            let Some((name, value)) = header.split_once(':') else {
                bail!("--header {header:?} is not NAME:VALUE");
            };
            headers.append(
                HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())?,
                HeaderValue::from_str(value.trim())?,
            );
        }
        Ok(Self { addr: args.addr.clone(), security, headers })
    }

    /// The request URI of a gRPC method path on this target.
    pub(crate) fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        let scheme = match self.security {
            Security::Plain => "http",
            Security::Tls { .. } => "https",
        };
        Ok(Uri::builder().scheme(scheme).authority(self.addr.as_str()).path_and_query(path).build()?)
    }

    /// Headers sent with every call.
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Opens one HTTP/2 connection (TCP, then TLS when configured).
    pub(crate) async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = TcpStream::connect(&self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        match &self.security {
            Security::Plain => handshake(TokioIo::new(tcp)).await,
            Security::Tls { config, name } => {
                let tls = TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.addr))?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    bail!("{} did not negotiate ALPN h2", self.addr);
                }
                handshake(TokioIo::new(tls)).await
            }
        }
    }
}

async fn handshake<I>(io: I) -> anyhow::Result<Sender>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
