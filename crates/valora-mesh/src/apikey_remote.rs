//! Verifying issued API keys with the auth service, behind a short cache.
//!
//! Verdicts are cached for at most [`POSITIVE_TTL`] (valid keys) or
//! [`NEGATIVE_TTL`] (rejected keys), so a revocation takes effect within
//! [`POSITIVE_TTL`] and the auth service sees at most one lookup per key and
//! interval from each process. Cache entries are keyed by the key's SHA-256
//! digest; the key itself is never stored. "Unavailable" is never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use valora_proto::auth::v1::VerifyApiKeyRequest;
use valora_proto::auth::v1::api_key_verifier_client::ApiKeyVerifierClient;

use crate::balance::{PoolService, UpstreamPool};
use crate::apikey::{KeyRejection, KeyVerifier, StaticKeys, VerifyFuture};
use crate::principal::Principal;

/// How long a valid verdict is reused: the upper bound on how long a
/// revoked key keeps working at a process that saw it just before.
pub const POSITIVE_TTL: Duration = Duration::from_secs(5);
/// How long a rejection is reused.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Deadline of one verification call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries kept before the cache is cleared.
const MAX_ENTRIES: usize = 50_000;

type Verdict = Result<Principal, KeyRejection>;

/// Verifies keys through `valora.auth.v1.ApiKeyVerifier`.
#[derive(Clone)]
pub struct RemoteKeys {
    client: ApiKeyVerifierClient<PoolService>,
    cache: Arc<Mutex<HashMap<[u8; 32], (Verdict, Instant)>>>,
}

impl RemoteKeys {
    /// Verifies with the auth service replicas in `auth`.
    pub fn new(auth: Arc<UpstreamPool>) -> Self {
        Self { client: ApiKeyVerifierClient::new(PoolService(auth)), cache: Arc::default() }
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Verdict> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(digest).filter(|(_, until)| *until > Instant::now()).map(|(v, _)| v.clone())
    }

    fn remember(&self, digest: [u8; 32], verdict: &Verdict, ttl: Duration) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(digest, (verdict.clone(), Instant::now() + ttl));
    }

    async fn ask(&self, key: &str) -> (Verdict, Duration) {
        let mut request = tonic::Request::new(VerifyApiKeyRequest { api_key: key.to_owned() });
        request.set_timeout(CALL_TIMEOUT);
        match self.client.clone().verify_api_key(request).await {
            Ok(response) => {
                let reply = response.into_inner();
                let ttl = reply
                    .expire_time
                    .map(|t| Duration::from_secs(u64::try_from(t.seconds - unix_now()).unwrap_or(0)))
                    .map_or(POSITIVE_TTL, |left| left.min(POSITIVE_TTL));
                let principal = Principal {
                    key_id: reply.key_id,
                    key_owner: (!reply.owner_id.is_empty()).then_some(reply.owner_id),
                    scopes: reply.scopes,
                    user: None,
                };
                (Ok(principal), ttl)
            }
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                let rejection = match status.message() {
                    m if m.contains("revoked") => KeyRejection::Revoked,
                    m if m.contains("expired") => KeyRejection::Expired,
                    _ => KeyRejection::Unknown,
                };
                (Err(rejection), NEGATIVE_TTL)
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "API key verification unavailable");
                (Err(KeyRejection::Unavailable), Duration::ZERO)
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl KeyVerifier for RemoteKeys {
    fn verify<'a>(&'a self, key: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move {
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            if let Some(verdict) = self.cached(&digest) {
                return verdict;
            }
            let (verdict, ttl) = self.ask(key).await;
            if !ttl.is_zero() {
                self.remember(digest, &verdict, ttl);
            }
            verdict
        })
    }
}

/// Static keys first, then issued keys (recognised by their prefix).
#[derive(Clone)]
pub struct CompositeKeys {
    pub static_keys: StaticKeys,
    pub issued: Option<Arc<dyn KeyVerifier>>,
    /// Prefix of issued keys, such as `vlk_`.
    pub issued_prefix: &'static str,
}

impl KeyVerifier for CompositeKeys {
    fn verify<'a>(&'a self, key: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move {
            match &self.issued {
                Some(issued) if key.starts_with(self.issued_prefix) => issued.verify(key).await,
                _ => self.static_keys.lookup(key).ok_or(KeyRejection::Unknown),
            }
        })
    }
}
