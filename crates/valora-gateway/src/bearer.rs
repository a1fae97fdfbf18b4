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
use valora_proto::auth::v1::{GetJwksRequest, Jwk};
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

/// Reason a token failed [`TokenValidator::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, badly signed, expired, or for another issuer, audience
    /// or role.
    Invalid,
    /// Well-formed, but signed by a key id the validator does not have.
    UnknownKey,
}

/// Validator of bearer tokens against a set of Ed25519 public keys. It is
/// the part of [`BearerVerifier`] that needs no network.
pub struct TokenValidator {
    validation: Validation,
    keys: ArcSwap<KeySet>,
}

impl TokenValidator {
    /// Creates a validator, without keys, for tokens from `issuer` to
    /// `audience`.
    pub fn new(issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        Self { validation, keys: ArcSwap::from_pointee(KeySet::default()) }
    }

    /// Replaces the keys with the Ed25519 keys of a JWKS, ignoring others.
    pub fn set_keys(&self, jwks: Vec<Jwk>) {
        let mut keys = HashMap::new();
        let mut public = Vec::new();
        for jwk in jwks.into_iter().filter(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.alg == "EdDSA") {
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
    }

    /// Returns the JWKS document as JSON.
    pub fn jwks_json(&self) -> String {
        let json = self.keys.load().json.clone();
        if json.is_empty() { r#"{"keys":[]}"#.to_owned() } else { json }
    }

    /// Checks the value of an `Authorization` header.
    pub fn validate(&self, header: &[u8]) -> Result<UserPrincipal, TokenError> {
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::Invalid)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let keys = self.keys.load();
        let key = keys.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|_| TokenError::Invalid)?;
        let role = match data.claims.role.as_str() {
            "USER" | "ADMIN" => data.claims.role,
            _ => return Err(TokenError::Invalid),
        };
        Ok(UserPrincipal { id: data.claims.sub, role })
    }
}

/// Verifies `Authorization: Bearer` tokens.
pub struct BearerVerifier {
    client: AuthServiceClient<PoolService>,
    validator: TokenValidator,
    last_refresh: Mutex<Option<Instant>>,
}

impl BearerVerifier {
    /// Creates a verifier that fetches keys from the auth service replicas
    /// in `auth` and accepts tokens from `issuer` for `audience`.
    pub fn new(auth: Arc<UpstreamPool>, issuer: &str, audience: &str) -> Arc<Self> {
        Arc::new(Self {
            client: AuthServiceClient::new(PoolService(auth)),
            validator: TokenValidator::new(issuer, audience),
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
        self.validator.set_keys(reply.keys);
        Ok(())
    }

    /// The JWKS document as JSON.
    pub fn jwks_json(&self) -> String {
        self.validator.jwks_json()
    }

    /// Verifies the value of an `Authorization` header, refreshing the
    /// keys once when the token names an unknown key id.
    pub async fn verify(&self, header: &[u8]) -> Result<UserPrincipal, &'static str> {
        match self.validator.validate(header) {
            Ok(user) => Ok(user),
            Err(TokenError::Invalid) => Err(INVALID_TOKEN),
            Err(TokenError::UnknownKey) => {
                self.refresh_after_miss().await;
                self.validator.validate(header).map_err(|_| INVALID_TOKEN)
            }
        }
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

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;

    const ISSUER: &str = "https://auth.valora.test";
    const AUDIENCE: &str = "valora-api";

    /// Creates a validator holding the public half of a new key named
    /// `kid`, and returns that key for signing.
    fn keyed_validator(kid: &str) -> (TokenValidator, EncodingKey) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let validator = TokenValidator::new(ISSUER, AUDIENCE);
        validator.set_keys(vec![Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            kid: kid.into(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }]);
        (validator, EncodingKey::from_ed_der(pkcs8.as_ref()))
    }

    fn bearer(key: &EncodingKey, kid: &str, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        format!("Bearer {}", jsonwebtoken::encode(&header, &claims, key).unwrap())
    }

    fn claims(audience: &str, role: &str) -> serde_json::Value {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
        serde_json::json!({ "sub": "user-1", "role": role, "iss": ISSUER, "aud": audience, "exp": exp })
    }

    #[test]
    fn valid_token_yields_its_user() {
        let (validator, key) = keyed_validator("k1");
        let user = validator.validate(bearer(&key, "k1", claims(AUDIENCE, "USER")).as_bytes()).unwrap();
        assert_eq!(user.id, "user-1");
        assert_eq!(user.role, "USER");
    }

    #[test]
    fn unknown_key_id_is_reported_apart() {
        let (validator, key) = keyed_validator("k1");
        let token = bearer(&key, "k2", claims(AUDIENCE, "USER"));
        assert_eq!(validator.validate(token.as_bytes()).err(), Some(TokenError::UnknownKey));
    }

    #[test]
    fn invalid_tokens_are_rejected() {
        let (validator, key) = keyed_validator("k1");
        let (_, other_key) = keyed_validator("k1");
        let cases = [
            ("another audience", bearer(&key, "k1", claims("elsewhere", "USER"))),
            ("an unknown role", bearer(&key, "k1", claims(AUDIENCE, "ROOT"))),
            ("another key's signature", bearer(&other_key, "k1", claims(AUDIENCE, "USER"))),
            ("no Bearer prefix", bearer(&key, "k1", claims(AUDIENCE, "USER")).replace("Bearer ", "")),
            ("an empty token", "Bearer ".to_owned()),
        ];
        for (case, header) in cases {
            assert_eq!(validator.validate(header.as_bytes()).err(), Some(TokenError::Invalid), "{case}");
        }
    }
}
