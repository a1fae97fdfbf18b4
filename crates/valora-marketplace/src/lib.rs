//! The marketplace service: listings, pricing plans, publishing and plan
//! rotation.
//!
//! Layers: [`grpc`] translates requests, [`service`] decides and
//! [`store`] persists. [`access`] holds the authorization rules.

pub mod access;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod page;
pub mod service;
pub mod store;
pub mod webhooks;

pub use grpc::{MarketplaceApi, WebhookApi};
pub use service::Marketplace;
pub use store::{PoolOptions, Store};
