//! Key verification inside the auth service itself: no network hop.

use valora_mesh::apikey::{KeyVerifier, VerifyFuture};

use crate::service::Auth;

/// Verifies issued keys against the auth database directly.
#[derive(Clone, Debug)]
pub struct LocalKeys(pub Auth);

impl KeyVerifier for LocalKeys {
    fn verify<'a>(&'a self, key: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move { self.0.verify_api_key(key).await.map(|v| v.principal()) })
    }
}
