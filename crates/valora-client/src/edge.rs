//! Channels to the public edge.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use valora_mesh::tls::MaterialError;

use crate::ClientError;
use crate::mesh::require_runtime;

/// How long connecting to the edge may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a [`Channel`] to the edge, the public gRPC listener.
///
/// - `http://HOST:PORT` speaks cleartext HTTP/2 (h2c), as `valora dev`
///   serves it;
/// - `https://HOST[:PORT]` speaks TLS. The edge's certificate is checked
///   against the system's trusted roots, or only against the bundle given
///   with [`ca_file`](Self::ca_file).
///
/// Like every tonic channel it keeps one HTTP/2 connection shared by all
/// clones and clients made from it, reconnects on the next call after the
/// connection drops, and sends HTTP/2 pings to notice a dead peer.
/// Connecting gives up after 5 seconds. The edge needs an API key on every
/// call: wrap the channel with [`Calls`](crate::Calls).
#[derive(Clone, Debug)]
pub struct EdgeChannelBuilder {
    url: String,
    ca_file: Option<PathBuf>,
    domain_name: Option<String>,
}

impl EdgeChannelBuilder {
    /// A channel to the edge at `url`, such as `http://127.0.0.1:8080` or
    /// `https://api.example.com`.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ca_file: None, domain_name: None }
    }

    /// Trusts only the CA certificates in this PEM file for an `https://`
    /// edge, instead of the system's roots.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// The name the edge's certificate must carry, when it differs from the
    /// URL's host (for example when dialling an IP address).
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    fn endpoint(&self) -> Result<Endpoint, ClientError> {
        let address_error = |reason: String| ClientError::Address { address: self.url.clone(), reason };
        let uri: http::Uri = self.url.parse().map_err(|e: http::uri::InvalidUri| address_error(e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(address_error(
                    "expected http://HOST:PORT (cleartext HTTP/2) or https://HOST[:PORT] (TLS)".to_owned(),
                ));
            }
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(address_error("the URL has no host".to_owned()));
        }
        let mut endpoint = Endpoint::from(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .http2_adaptive_window(true);
        if tls {
            endpoint = endpoint.tls_config(self.tls_config()?).map_err(|e| ClientError::Tls(e.to_string()))?;
        } else if self.ca_file.is_some() || self.domain_name.is_some() {
            return Err(address_error(
                "a CA file or domain name is set, but the URL is http://; use https:// for TLS".to_owned(),
            ));
        }
        Ok(endpoint)
    }

    fn tls_config(&self) -> Result<ClientTlsConfig, ClientError> {
        let mut config = ClientTlsConfig::new();
        match &self.ca_file {
            Some(path) => {
                // Parsed here so that a bad file is named now, not at the
                // first call.
                let file_error = |reason: String| ClientError::File { what: "CA bundle", path: path.clone(), reason };
                valora_mesh::tls::read_certs(path).map_err(|error| match error {
                    MaterialError::Read { source, .. } => file_error(format!("cannot read it: {source}")),
                    MaterialError::Parse { reason, .. } => file_error(format!("cannot parse it: {reason}")),
                    other => file_error(other.to_string()),
                })?;
                let pem = std::fs::read(path).map_err(|e| file_error(format!("cannot read it: {e}")))?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            None => config = config.with_native_roots(),
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }

    /// The channel, connecting at the first call. Must run inside a tokio
    /// runtime.
    pub fn build(&self) -> Result<Channel, ClientError> {
        require_runtime()?;
        Ok(self.endpoint()?.connect_lazy())
    }

    /// The channel, connected now: an unreachable edge or a TLS failure is
    /// an error here rather than at the first call.
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        require_runtime()?;
        self.endpoint()?.connect().await.map_err(|error| {
            let mut reason = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(inner) = cause {
                reason.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            ClientError::Connect { address: self.url.clone(), reason }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cleartext_and_tls_urls_build() {
        EdgeChannelBuilder::new("http://127.0.0.1:8080").build().unwrap();
        EdgeChannelBuilder::new("https://api.example.com").build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        valora_mesh::pki::write_dev_pki(dir.path(), false).unwrap();
        EdgeChannelBuilder::new("https://127.0.0.1:8443")
            .ca_file(dir.path().join("ca.pem"))
            .domain_name("edge.valora.internal")
            .build()
            .unwrap();
    }

    #[tokio::test]
    async fn a_url_without_scheme_is_refused() {
        let error = EdgeChannelBuilder::new("127.0.0.1:8080").build().unwrap_err();
        let message = error.to_string();
        assert!(message.contains("127.0.0.1:8080") && message.contains("http://HOST:PORT"), "{message}");
    }

    #[tokio::test]
    async fn tls_settings_on_a_cleartext_url_are_refused() {
        let error = EdgeChannelBuilder::new("http://127.0.0.1:8080").ca_file("ca.pem").build().unwrap_err();
        assert!(error.to_string().contains("use https://"), "{error}");
    }

    #[tokio::test]
    async fn a_missing_or_broken_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = EdgeChannelBuilder::new("https://127.0.0.1:8443").ca_file(&missing).build().unwrap_err();
        assert!(error.to_string().contains(&missing.display().to_string()), "{error}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "garbage").unwrap();
        let error = EdgeChannelBuilder::new("https://127.0.0.1:8443").ca_file(&broken).build().unwrap_err();
        let message = error.to_string();
        assert!(message.contains("CA bundle") && message.contains(&broken.display().to_string()), "{message}");
    }

    #[tokio::test]
    async fn connect_reports_an_unreachable_edge() {
        let error = EdgeChannelBuilder::new("http://127.0.0.1:1").connect().await.unwrap_err();
        assert!(error.to_string().contains("cannot connect to http://127.0.0.1:1"), "{error}");
    }
}
