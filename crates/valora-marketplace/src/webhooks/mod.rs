//! Signed webhooks: endpoints, the outbox and delivery.

pub mod dispatcher;
pub mod endpoints;
pub mod entity;
pub mod outbox;
pub mod signing;
pub mod ssrf;
