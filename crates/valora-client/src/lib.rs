//! Client kit for VALORA mesh: channels, credentials and the generated
//! clients, for Rust programs that call the marketplace and auth services.
//!
//! - [`MeshChannelBuilder`] makes a mutual-TLS channel to an internal
//!   service from a certificate folder (`ca.pem`, `NAME.pem`, `NAME.key`,
//!   as `valora certs dev` writes it) or explicit files. It presents the
//!   caller's identity and accepts only a server that proves the target
//!   identity (the SPIFFE ID in its certificate). The files are re-read
//!   when they change.
//! - [`EdgeChannelBuilder`] makes a channel to the public edge: cleartext
//!   HTTP/2 for `valora dev`, or TLS.
//! - [`Calls`] adds `x-api-key`, `authorization: Bearer …` and a default
//!   deadline ([`DEFAULT_TIMEOUT`]) to every call.
//! - [`ClientError`] and [`explain`] say what went wrong: which file,
//!   which setting, or which identity the server presented instead of the
//!   expected one.
//! - [`marketplace`] and [`auth`] are the generated messages and clients
//!   of `proto/`; [`marketplace_client`] and [`auth_client`] put a channel
//!   and [`Calls`] together.
//!
//! A tonic [`Channel`](tonic::transport::Channel) keeps one HTTP/2
//! connection, shared by its clones and every client made from it, and
//! reconnects on the next call after the connection drops: make one
//! channel per server and clone it freely.
//!
//! An engineer calling the marketplace directly, with the development
//! certificates of `valora dev` and its API key:
//!
//! ```no_run
//! use valora_client::marketplace::v1::{ListListingsRequest, ListingStatus};
//! use valora_client::{Calls, ClientError, Identity, MeshChannelBuilder, marketplace_client};
//!
//! # async fn run() -> Result<(), ClientError> {
//! let channel = MeshChannelBuilder::new("127.0.0.1:50052")
//!     .certs_dir("certs-dev")
//!     .identity(Identity::engineer())
//!     .target(Identity::marketplace())
//!     .build()?;
//! let key = std::fs::read_to_string(".valora/dev-api-key").unwrap_or_default();
//! let mut marketplace = marketplace_client(channel, Calls::new().api_key(key.trim())?);
//! let request = ListListingsRequest { status: ListingStatus::Published.into(), ..Default::default() };
//! // A failed call converts into ClientError::Call, whose message explains it.
//! let listings = marketplace.list_listings(request).await?.into_inner().listings;
//! for listing in listings {
//!     println!("{} {}", listing.id, listing.title);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The same through the edge:
//!
//! ```no_run
//! # use valora_client::{Calls, ClientError, EdgeChannelBuilder, marketplace_client};
//! # async fn run(key: &str) -> Result<(), ClientError> {
//! let channel = EdgeChannelBuilder::new("http://127.0.0.1:8080").build()?;
//! let mut marketplace = marketplace_client(channel, Calls::new().api_key(key)?);
//! # Ok(())
//! # }
//! ```

mod calls;
mod edge;
mod error;
mod mesh;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use calls::{API_KEY_HEADER, AUTHORIZATION_HEADER, Calls, Chain, DEFAULT_TIMEOUT};
pub use edge::EdgeChannelBuilder;
pub use error::{ClientError, explain, identity_mismatch};
pub use mesh::MeshChannelBuilder;
pub use tonic;
pub use valora_mesh::Identity;
pub use valora_mesh::tls::IdentityMismatch;
pub use valora_proto::{auth, marketplace};

/// A marketplace client whose calls carry the settings of [`Calls`].
pub type MarketplaceClient =
    marketplace::v1::marketplace_service_client::MarketplaceServiceClient<InterceptedService<Channel, Calls>>;

/// An auth client whose calls carry the settings of [`Calls`].
pub type AuthClient = auth::v1::auth_service_client::AuthServiceClient<InterceptedService<Channel, Calls>>;

/// A marketplace client on `channel` with the credentials and default
/// deadline of `calls`.
pub fn marketplace_client(channel: Channel, calls: Calls) -> MarketplaceClient {
    marketplace::v1::marketplace_service_client::MarketplaceServiceClient::with_interceptor(channel, calls)
}

/// An auth client on `channel` with the credentials and default deadline
/// of `calls`.
pub fn auth_client(channel: Channel, calls: Calls) -> AuthClient {
    auth::v1::auth_service_client::AuthServiceClient::with_interceptor(channel, calls)
}
