//! The auth service: users and passwords, access and refresh tokens, the
//! JWKS, and API keys.

pub mod apikeys;
pub mod domain;
pub mod grpc;
pub mod import;
pub mod local_keys;
pub mod store;
pub mod password;
pub mod service;
pub mod throttle;
pub mod tokens;
