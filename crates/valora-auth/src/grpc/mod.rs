//! gRPC handlers of `valora.auth.v1.AuthService` and
//! `valora.auth.v1.ApiKeyVerifier`.

mod status;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tonic::{Request, Response, Status};
use valora_mesh::Principal;
use valora_mesh::guard::CallContext;
use valora_proto::auth::v1 as pb;
use valora_proto::auth::v1::api_key_verifier_server::ApiKeyVerifier;
use valora_proto::auth::v1::auth_service_server::AuthService;

use crate::apikeys::display_prefix;
use crate::domain::{ApiKeyInfo, AuthError, Role, User};
use crate::service::{Auth, Session};

/// Default and maximum page sizes of ListApiKeys.
const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 100;

/// The tonic implementation of both auth services.
#[derive(Clone, Debug)]
pub struct AuthApi {
    auth: Auth,
}

impl AuthApi {
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

fn context<T>(request: &Request<T>) -> Result<&CallContext, Status> {
    request.extensions().get::<CallContext>().ok_or_else(|| Status::unauthenticated("missing caller credentials"))
}

fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    context(request)?.require_principal().cloned()
}

fn client_addr<T>(request: &Request<T>) -> String {
    context(request).ok().and_then(|c| c.client_addr.clone()).unwrap_or_else(|| "unknown".to_owned())
}

fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

fn user_to_pb(user: &User) -> pb::User {
    pb::User {
        id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        role: match user.role {
            Role::User => pb::Role::User,
            Role::Admin => pb::Role::Admin,
        } as i32,
        create_time: Some(timestamp(user.create_time)),
    }
}

fn key_to_pb(key: &ApiKeyInfo) -> pb::ApiKey {
    pb::ApiKey {
        id: key.id.clone(),
        prefix: display_prefix(&key.id),
        name: key.name.clone(),
        scopes: key.scopes.clone(),
        create_time: Some(timestamp(key.create_time)),
        expire_time: key.expire_time.map(timestamp),
        revoke_time: key.revoke_time.map(timestamp),
        owner_id: key.owner_id.clone().unwrap_or_default(),
    }
}

fn duration(field: &str, value: Option<&prost_types::Duration>) -> Result<Option<std::time::Duration>, Status> {
    match value {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(AuthError::invalid(field, "must not be negative").into())
        }
        Some(d) => Ok(Some(std::time::Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

fn key_id(field: &str, id: &str) -> Result<String, Status> {
    let valid = id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(id.to_owned())
    } else {
        Err(AuthError::invalid(field, "must be an API key id: 16 lowercase hex digits").into())
    }
}

fn page(request: &pb::ListApiKeysRequest) -> Result<(Option<String>, u64), Status> {
    let limit = match request.page_size {
        n if n < 0 => return Err(AuthError::invalid("page_size", "must not be negative").into()),
        0 => DEFAULT_PAGE_SIZE,
        n => (n as u64).min(MAX_PAGE_SIZE),
    };
    let after = match request.page_token.as_str() {
        "" => None,
        token => Some(key_id("page_token", token)?),
    };
    Ok((after, limit))
}

fn session_parts(session: Session) -> (String, String, i64, Option<pb::User>) {
    let user = Some(user_to_pb(&session.user));
    (session.access_token, session.refresh_token, session.expires_in, user)
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        principal(&request)?;
        let m = request.get_ref();
        let user = self.auth.register(&m.email, &m.password, &m.display_name).await?;
        Ok(Response::new(pb::RegisterResponse { user: Some(user_to_pb(&user)) }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        principal(&request)?;
        let addr = client_addr(&request);
        let m = request.get_ref();
        let (access_token, refresh_token, expires_in, user) =
            session_parts(self.auth.login(&m.email, &m.password, &addr).await?);
        Ok(Response::new(pb::LoginResponse { access_token, refresh_token, expires_in, user }))
    }

    async fn refresh_token(&self, request: Request<pb::RefreshTokenRequest>) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        principal(&request)?;
        let (access_token, refresh_token, expires_in, user) =
            session_parts(self.auth.refresh(&request.get_ref().refresh_token).await?);
        Ok(Response::new(pb::RefreshTokenResponse { access_token, refresh_token, expires_in, user }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        principal(&request)?;
        self.auth.logout(&request.get_ref().refresh_token).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn change_password(&self, request: Request<pb::ChangePasswordRequest>) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = principal(&request)?;
        let user = caller
            .user
            .ok_or_else(|| Status::unauthenticated("changing a password needs a signed-in user: send Authorization: Bearer ACCESS_TOKEN"))?;
        let addr = client_addr(&request);
        let m = request.get_ref();
        self.auth.change_password(&user.id, &m.current_password, &m.new_password, &addr).await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::GetJwksResponse>, Status> {
        let keys = self
            .auth
            .signing()
            .jwks()
            .into_iter()
            .map(|k| pb::Jwk {
                kty: k.kty.into(),
                crv: k.crv.into(),
                x: k.x,
                kid: k.kid,
                alg: k.alg.into(),
                r#use: k.use_.into(),
            })
            .collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }

    async fn create_api_key(&self, request: Request<pb::CreateApiKeyRequest>) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = principal(&request)?;
        let m = request.get_ref();
        let ttl = duration("ttl", m.ttl.as_ref())?;
        let created = self.auth.create_api_key(&caller, &m.name, &m.scopes, ttl).await?;
        Ok(Response::new(pb::CreateApiKeyResponse { api_key: Some(key_to_pb(&created.info)), secret: created.secret }))
    }

    async fn list_api_keys(&self, request: Request<pb::ListApiKeysRequest>) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let caller = principal(&request)?;
        let (after, limit) = page(request.get_ref())?;
        let mut keys = self.auth.list_api_keys(&caller, after.as_deref(), limit + 1).await?;
        let next_page_token = if keys.len() as u64 > limit {
            keys.truncate(limit as usize);
            keys.last().map(|k| k.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListApiKeysResponse { api_keys: keys.iter().map(key_to_pb).collect(), next_page_token }))
    }

    async fn rotate_api_key(&self, request: Request<pb::RotateApiKeyRequest>) -> Result<Response<pb::RotateApiKeyResponse>, Status> {
        let caller = principal(&request)?;
        let m = request.get_ref();
        let id = key_id("id", &m.id)?;
        let grace = duration("grace_period", m.grace_period.as_ref())?;
        let rotated = self.auth.rotate_api_key(Some(&caller), &id, grace).await?;
        Ok(Response::new(pb::RotateApiKeyResponse { api_key: Some(key_to_pb(&rotated.info)), secret: rotated.secret }))
    }

    async fn revoke_api_key(&self, request: Request<pb::RevokeApiKeyRequest>) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let caller = principal(&request)?;
        let id = key_id("id", &request.get_ref().id)?;
        let key = self.auth.revoke_api_key(Some(&caller), &id).await?;
        Ok(Response::new(pb::RevokeApiKeyResponse { api_key: Some(key_to_pb(&key)) }))
    }
}

#[tonic::async_trait]
impl ApiKeyVerifier for AuthApi {
    async fn verify_api_key(&self, request: Request<pb::VerifyApiKeyRequest>) -> Result<Response<pb::VerifyApiKeyResponse>, Status> {
        let verdict = self
            .auth
            .verify_api_key(&request.get_ref().api_key)
            .await
            .map_err(|rejection| match rejection {
                valora_mesh::apikey::KeyRejection::Unavailable => Status::unavailable(rejection.to_string()),
                other => Status::unauthenticated(other.to_string()),
            })?;
        Ok(Response::new(pb::VerifyApiKeyResponse {
            key_id: verdict.info.id.clone(),
            owner_id: verdict.info.owner_id.clone().unwrap_or_default(),
            scopes: verdict.info.scopes.clone(),
            expire_time: verdict.info.expire_time.map(timestamp),
        }))
    }
}
