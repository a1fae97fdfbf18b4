//! Bearer access tokens: verified locally against the auth service's JWKS.
//!
//! Only EdDSA (Ed25519) is accepted: the algorithm is pinned, so `alg:
//! none`, HMAC or RSA tokens fail whatever their header says. `exp`, `iss`
//! and `aud` are required and checked. Every failure gets the same message,
//! so a caller learns nothing about why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;
use valora_mesh::balance::{PoolService, UpstreamPool};
use valora_mesh::principal::UserPrincipal;
use valora_proto::auth::v1::GetJwksRequest;
use valora_proto::auth::v1::auth_service_client::AuthServiceClient;

/// The one message of every bearer-token rejection.
pub const INVALID_TOKEN: &str = "invalid bearer token";
/// Interval between JWKS refreshes.
const REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Minimum interval between refreshes triggered by an unknown key id.
const MISS_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Allowed clock difference for `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

#[derive(Deserialize)]
struct Claims {
    sub: String,
    role: String,
}

/// Public JWKS, kept as JSON for `/.well-known/jwks.json`, and decoding
/// keys by key id.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, DecodingKey>,
    json: String,
}

/// Verifies `Authorization: Bearer` tokens.
pub struct BearerVerifier {
    client: AuthServiceClient<PoolService>,
    validation: Validation,
    keys: ArcSwap<KeySet>,
    last_refresh: Mutex<Option<Instant>>,
}

impl BearerVerifier {
    /// A verifier fetching keys from the auth service replicas in `auth`
    /// and accepting tokens from `issuer` for `audience`.
    pub fn new(auth: Arc<UpstreamPool>, issuer: &str, audience: &str) -> Arc<Self> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        Arc::new(Self {
            client: AuthServiceClient::new(PoolService(auth)),
            validation,
            keys: ArcSwap::from_pointee(KeySet::default()),
            last_refresh: Mutex::new(None),
        })
    }

    /// Refreshes the keys now and every minute after.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let verifier = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = match verifier.refresh().await {
                    Ok(()) => REFRESH_INTERVAL,
                    Err(error) => {
                        tracing::warn!(%error, "JWKS refresh failed; retrying");
                        Duration::from_secs(2)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
    }

    async fn refresh(&self) -> Result<(), tonic::Status> {
        *self.last_refresh.lock().await = Some(Instant::now());
        let mut request = tonic::Request::new(GetJwksRequest {});
        request.set_timeout(Duration::from_secs(3));
        let reply = self.client.clone().get_jwks(request).await?.into_inner();
        let mut keys = HashMap::new();
        let mut public = Vec::new();
        for jwk in reply.keys.into_iter().filter(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.alg == "EdDSA") {
            match DecodingKey::from_ed_components(&jwk.x) {
                Ok(key) => {
                    public.push(serde_json::json!({
                        "kty": jwk.kty, "crv": jwk.crv, "x": jwk.x, "kid": jwk.kid, "alg": jwk.alg, "use": jwk.r#use,
                    }));
                    keys.insert(jwk.kid, key);
                }
                Err(error) => tracing::warn!(kid = %jwk.kid, %error, "JWKS key ignored"),
            }
        }
        let json = serde_json::json!({ "keys": public }).to_string();
        self.keys.store(Arc::new(KeySet { keys, json }));
        Ok(())
    }

    /// The JWKS document as JSON.
    pub fn jwks_json(&self) -> String {
        let json = self.keys.load().json.clone();
        if json.is_empty() { r#"{"keys":[]}"#.to_owned() } else { json }
    }

    /// Verifies the value of an `Authorization` header.
    pub async fn verify(&self, header: &[u8]) -> Result<UserPrincipal, &'static str> {
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(INVALID_TOKEN)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| INVALID_TOKEN)?;
        let kid = header.kid.ok_or(INVALID_TOKEN)?;
        if !self.keys.load().keys.contains_key(&kid) {
            self.refresh_after_miss().await;
        }
        let keys = self.keys.load();
        let key = keys.keys.get(&kid).ok_or(INVALID_TOKEN)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|_| INVALID_TOKEN)?;
        let role = match data.claims.role.as_str() {
            "USER" | "ADMIN" => data.claims.role,
            _ => return Err(INVALID_TOKEN),
        };
        Ok(UserPrincipal { id: data.claims.sub, role })
    }

    /// A token signed by a key the edge has not seen may come from a key
    /// rotated in moments ago: refresh once, at most every few seconds.
    async fn refresh_after_miss(&self) {
        let due = self.last_refresh.lock().await.is_none_or(|at| at.elapsed() >= MISS_REFRESH_INTERVAL);
        if due {
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "JWKS refresh after an unknown key id failed");
            }
        }
    }
}
