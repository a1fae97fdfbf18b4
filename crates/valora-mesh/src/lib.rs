//! Mesh identity for VALORA: workload identities, the development PKI,
//! mutual-TLS listeners and connectors with live certificate reload, the
//! authorization policy between services, and the principal that travels
//! with each call.

pub mod apikey;
pub mod apikey_remote;
pub mod balance;
pub mod guard;
pub mod identity;
pub mod pki;
pub mod policy;
pub mod principal;
pub mod security_headers;
pub mod server;
pub mod tls;

pub use identity::Identity;
pub use principal::Principal;
