//! Attack tables built from the proto descriptors, so that a new RPC is
//! covered without editing them: every method of every public service,
//! called with each kind of bad credential, by mesh identities without a
//! grant, with a read-only key, by another user, and with fields only the
//! server may set. Then HTTP/2 abuse of the edge of a real `valora dev`:
//! rapid reset, oversized header lists, more streams than allowed and slow
//! clients, with the process's memory, CPU time and a well-behaved client's
//! latency measured throughout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use prost::encoding::{decode_varint, encode_key, encode_varint, WireType};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use valora_mesh::identity::Identity;
use valora_mesh::tls::{MeshTls, TlsFiles, mesh_channel};
use valora_proto::auth::v1::{
    CreateApiKeyRequest, CreateApiKeyResponse, LoginRequest, LoginResponse, RegisterRequest, RevokeApiKeyRequest,
};

use crate::pki::{LeafSpec, sign_leaf};
use crate::support::{DevMesh, KEY, MeshOptions, run_valora};

const MARKET: &str = "valora.marketplace.v1.MarketplaceService";
const WEBHOOK: &str = "valora.marketplace.v1.WebhookService";
const AUTH: &str = "valora.auth.v1.AuthService";
const VERIFIER: &str = "valora.auth.v1.ApiKeyVerifier";
/// Services the edge routes.
const PUBLIC: [&str; 3] = [MARKET, WEBHOOK, AUTH];
const LIST: &str = "/valora.marketplace.v1.MarketplaceService/ListListings";
const PASSWORD: &str = "violet-otter-sings-at-dawn";
const NEW_PASSWORD: &str = "quartz-heron-drifts-over-lakes";

// ---------------------------------------------------------------------------
// The API as the descriptor set declares it.

/// One RPC of the descriptor set.
#[derive(Clone, Debug)]
struct Rpc {
    service: &'static str,
    name: String,
    input: String,
    output: String,
}

impl Rpc {
    fn path(&self) -> String {
        format!("/{}/{}", self.service, self.name)
    }

    /// Reads change nothing; every other method is a write. A method whose
    /// name fits neither list stops the tables until it is classified.
    fn is_read(&self) -> bool {
        const READ: [&str; 3] = ["Get", "List", "Watch"];
        const WRITE: [&str; 12] = [
            "Create", "Update", "Publish", "Archive", "Rotate", "Delete", "Revoke", "Register", "Login", "Logout",
            "Refresh", "Change",
        ];
        if READ.iter().any(|p| self.name.starts_with(p)) {
            return true;
        }
        assert!(
            WRITE.iter().any(|p| self.name.starts_with(p)),
            "{} is neither a read nor a write by its name; classify it in Rpc::is_read",
            self.path()
        );
        false
    }
}

struct Api {
    set: FileDescriptorSet,
}

impl Api {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(valora_proto::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes");
        Self { set }
    }

    fn rpcs(&self, service: &'static str) -> Vec<Rpc> {
        for file in &self.set.file {
            for s in &file.service {
                if format!("{}.{}", file.package(), s.name()) == service {
                    return s
                        .method
                        .iter()
                        .map(|m| Rpc {
                            service,
                            name: m.name().to_owned(),
                            input: m.input_type().trim_start_matches('.').to_owned(),
                            output: m.output_type().trim_start_matches('.').to_owned(),
                        })
                        .collect();
                }
            }
        }
        panic!("{service} is not in the descriptor set");
    }

    fn message(&self, name: &str) -> &DescriptorProto {
        let name = name.trim_start_matches('.');
        self.set
            .file
            .iter()
            .flat_map(|f| f.message_type.iter().map(move |m| (format!("{}.{}", f.package(), m.name()), m)))
            .find(|(full, _)| full == name)
            .map(|(_, m)| m)
            .unwrap_or_else(|| panic!("message {name} is not in the descriptor set"))
    }

    fn enumeration(&self, name: &str) -> &EnumDescriptorProto {
        let name = name.trim_start_matches('.');
        self.set
            .file
            .iter()
            .flat_map(|f| f.enum_type.iter().map(move |e| (format!("{}.{}", f.package(), e.name()), e)))
            .find(|(full, _)| full == name)
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("enum {name} is not in the descriptor set"))
    }

    /// Messages of the API that stand for a stored object: they have an id.
    fn is_resource(&self, name: &str) -> bool {
        name.trim_start_matches('.').starts_with("valora.")
            && self.message(name).field.iter().any(|f| f.name() == "id")
    }
}

/// Every service of the descriptor set is either routed by the edge or
/// internal; a new one must be added to one of the two lists.
#[test]
fn services_are_classified() {
    let found: BTreeSet<String> = valora_proto::services().into_iter().map(|s| s.name).collect();
    let known: BTreeSet<String> = PUBLIC.iter().chain([&VERIFIER]).map(|s| (*s).to_owned()).collect();
    assert_eq!(found, known, "services in proto/ differ from PUBLIC plus ApiKeyVerifier; classify the new one");
}

// ---------------------------------------------------------------------------
// Calls with raw message bytes.

/// Passes message bytes through unchanged, so that any method can be called
/// without its generated types.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Credentials of a call: headers, and an optional query string.
#[derive(Clone, Debug, Default)]
struct Creds {
    headers: Vec<(&'static str, String)>,
    query: Option<String>,
}

impl Creds {
    fn key(key: &str) -> Self {
        Self { headers: vec![("x-api-key", key.to_owned())], query: None }
    }

    fn user(key: &str, token: &str) -> Self {
        Self { headers: vec![("x-api-key", key.to_owned()), ("authorization", format!("Bearer {token}"))], query: None }
    }
}

async fn channel(addr: impl std::fmt::Display) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("URI").connect().await.expect("connect")
}

/// Calls `path` with `body` as the request message. A server stream that
/// is admitted and stays quiet counts as an empty success.
async fn call(channel: &Channel, path: &str, body: impl Into<Bytes>, creds: &Creds) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(body.into());
    for (name, value) in &creds.headers {
        let value = MetadataValue::try_from(value.as_str()).expect("header value");
        request.metadata_mut().append(*name, value);
    }
    let path = match &creds.query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let path = http::uri::PathAndQuery::try_from(path).expect("path");
    let mut stream = grpc.server_streaming(request, path, RawCodec).await?.into_inner();
    match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) | Err(_) => Ok(Bytes::new()),
        Ok(Err(status)) => Err(status),
    }
}

fn code_of(result: &Result<Bytes, tonic::Status>) -> Code {
    result.as_ref().map_or_else(tonic::Status::code, |_| Code::Ok)
}

// ---------------------------------------------------------------------------
// Plausible request messages, filled from the descriptors by field name.

/// Objects a filled request refers to.
#[derive(Clone, Debug, Default)]
struct Ids {
    /// A DRAFT listing with an ACTIVE plan, for `id`.
    listing: String,
    /// A DRAFT listing without plans, for `listing_id`.
    bare_listing: String,
    /// The ACTIVE plan of `listing`, for `plan_id`.
    plan: String,
    /// A webhook endpoint, for `id` of the webhook service and `endpoint_id`.
    endpoint: String,
    /// An API key id, for `id` of the auth service.
    api_key: String,
    email: String,
    refresh_token: String,
    url: String,
}

impl Ids {
    /// Ids of the same shapes that name nothing.
    fn missing() -> Self {
        let uuid = || uuid::Uuid::now_v7().to_string();
        Self {
            listing: uuid(),
            bare_listing: uuid(),
            plan: uuid(),
            endpoint: uuid(),
            api_key: uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
            ..Self::default()
        }
    }

    /// The id values with a placeholder each, for comparing messages.
    fn placeholders(&self) -> [(&str, &'static str); 5] {
        [
            (self.listing.as_str(), "{listing}"),
            (self.bare_listing.as_str(), "{bare_listing}"),
            (self.plan.as_str(), "{plan}"),
            (self.endpoint.as_str(), "{endpoint}"),
            (self.api_key.as_str(), "{api_key}"),
        ]
    }
}

fn text_for(field: &str, service: &str, ids: &Ids) -> Option<String> {
    let value = match field {
        "id" if service == WEBHOOK => &ids.endpoint,
        "id" if service == AUTH => &ids.api_key,
        "id" => &ids.listing,
        "listing_id" => &ids.bare_listing,
        "plan_id" => &ids.plan,
        "endpoint_id" => &ids.endpoint,
        "email" => &ids.email,
        "refresh_token" => &ids.refresh_token,
        "url" => &ids.url,
        "title" | "name" | "description" | "display_name" | "category" => return Some("attack".to_owned()),
        "currency_code" => return Some("EUR".to_owned()),
        "password" | "current_password" => return Some(PASSWORD.to_owned()),
        "new_password" => return Some(NEW_PASSWORD.to_owned()),
        _ => return None,
    };
    (!value.is_empty()).then(|| value.clone())
}

/// A request of type `name` that passes validation, with ids from `ids`.
fn fill(api: &Api, name: &str, service: &str, ids: &Ids, depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for field in &api.message(name).field {
        let number = field.number() as u32;
        let repeated = field.label() == Label::Repeated;
        match field.r#type() {
            Type::String if repeated => {
                let values: &[&str] = match field.name() {
                    "scopes" => &["marketplace:read"],
                    "paths" => &["title"],
                    _ => &[],
                };
                for value in values {
                    prost::encoding::string::encode(number, &(*value).to_owned(), &mut out);
                }
            }
            Type::String => {
                if let Some(value) = text_for(field.name(), service, ids) {
                    prost::encoding::string::encode(number, &value, &mut out);
                }
            }
            Type::Int64 | Type::Int32 => {
                let value = match field.name() {
                    "amount_minor" => 100,
                    "version" => 1,
                    _ => continue,
                };
                prost::encoding::int64::encode(number, &value, &mut out);
            }
            Type::Enum if field.name() == "interval" => prost::encoding::int32::encode(number, &1, &mut out),
            Type::Message if !repeated && depth < 2 => {
                let nested = field.type_name().trim_start_matches('.');
                if !nested.starts_with("google.protobuf.") || nested == "google.protobuf.FieldMask" {
                    let bytes = fill(api, nested, service, ids, depth + 1);
                    prost::encoding::bytes::encode(number, &bytes, &mut out);
                }
            }
            _ => {}
        }
    }
    out
}

/// A protobuf field value as it travels on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Wire {
    Varint(u64),
    Len(Vec<u8>),
    Fixed(u64),
}

fn parse(mut data: &[u8]) -> Vec<(u32, Wire)> {
    let mut fields = Vec::new();
    while data.has_remaining() {
        let key = decode_varint(&mut data).expect("field key");
        let number = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Wire::Varint(decode_varint(&mut data).expect("varint")),
            1 => Wire::Fixed(data.get_u64_le()),
            2 => {
                let length = decode_varint(&mut data).expect("length") as usize;
                let value = data[..length].to_vec();
                data.advance(length);
                Wire::Len(value)
            }
            5 => Wire::Fixed(u64::from(data.get_u32_le())),
            other => panic!("wire type {other} in a response"),
        };
        fields.push((number, value));
    }
    fields
}

// ---------------------------------------------------------------------------
// Users, keys and forged tokens.

fn loopback_options() -> MeshOptions {
    MeshOptions { env: vec![("VALORA_WEBHOOK_ALLOW_LOOPBACK".into(), "true".into())], ..Default::default() }
}

async fn sign_up(mesh: &DevMesh, email: &str) -> LoginResponse {
    let mut auth = mesh.auth_client(KEY, None).await;
    let request = RegisterRequest { email: email.into(), password: PASSWORD.into(), display_name: String::new() };
    auth.register(request).await.unwrap_or_else(|s| panic!("register {email}: {s:?}"));
    login(mesh, email).await
}

async fn login(mesh: &DevMesh, email: &str) -> LoginResponse {
    let mut auth = mesh.auth_client(KEY, None).await;
    auth.login(LoginRequest { email: email.into(), password: PASSWORD.into() })
        .await
        .unwrap_or_else(|s| panic!("login {email}: {s:?}"))
        .into_inner()
}

async fn create_key(mesh: &DevMesh, token: &str, scopes: &[&str], ttl_seconds: Option<i64>) -> CreateApiKeyResponse {
    let mut auth = mesh.auth_client(KEY, Some(token)).await;
    let request = CreateApiKeyRequest {
        name: "attack tables".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ttl: ttl_seconds.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
    };
    auth.create_api_key(request).await.expect("create an API key").into_inner()
}

async fn http_get(url: &str) -> String {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let response = client.get(url.parse().expect("URL")).await.expect("HTTP GET");
    let body = response.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A valid access token for `session`'s user signed with the development
/// signing key, and the bad kinds of token derived from it.
async fn forged_tokens(mesh: &DevMesh, session: &LoginResponse) -> (String, Vec<(&'static str, String)>) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let dir = mesh.layout.state_dir().join("signing-keys");
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("signing keys").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let pem = std::fs::read(files.last().expect("a signing key")).expect("read the signing key");
    let kid = jsonwebtoken::decode_header(&session.access_token).expect("token header").kid.expect("kid");
    let user = session.user.as_ref().expect("user").id.clone();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let claims = |changes: Value| {
        let mut claims = json!({
            "iss": "valora-auth", "aud": "valora", "sub": user, "exp": now + 600,
            "iat": now, "nbf": now, "jti": "attack", "role": "USER",
        });
        for (name, value) in changes.as_object().expect("object") {
            claims[name] = value.clone();
        }
        claims
    };
    let sign = |kid: &str, claims: &Value| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_pem(&pem).expect("Ed25519 key")).expect("sign")
    };
    let valid = sign(&kid, &claims(json!({})));
    let parts: Vec<&str> = valid.split('.').collect();
    let jwks: Value = serde_json::from_str(&http_get(&format!("http://{}/.well-known/jwks.json", mesh.edge())).await)
        .expect("JWKS JSON");
    let public = jwks["keys"][0]["x"].as_str().expect("public key").to_owned();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(&hs_header, &claims(json!({})), &EncodingKey::from_secret(public.as_bytes()).expect("HMAC key"))
        .expect("HS256");
    let kinds = vec![
        ("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})), parts[1])),
        ("HS256 keyed with the public key", hs256),
        ("tampered payload", format!("{}.{}.{}", parts[0], b64(&claims(json!({"role": "ADMIN"}))), parts[2])),
        ("expired", sign(&kid, &claims(json!({"exp": now - 120, "iat": now - 1000, "nbf": now - 1000})))),
        ("wrong iss", sign(&kid, &claims(json!({"iss": "evil"})))),
        ("wrong aud", sign(&kid, &claims(json!({"aud": "other"})))),
        ("unknown kid", sign("unknown-kid", &claims(json!({})))),
        ("garbage", "not.a.token".to_owned()),
    ];
    (valid, kinds)
}

/// Calls through the edge with `key` until it is rejected.
async fn wait_until_rejected(edge: &Channel, key: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while call(edge, LIST, Bytes::new(), &Creds::key(key)).await.is_ok() {
        assert!(Instant::now() < deadline, "an issued key still worked {within:?} after it ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Calls the internal services served, by component, from `/metrics`;
/// health checks, key verification and JWKS refreshes are left out, since
/// the edge makes them itself.
async fn internal_calls(mesh: &DevMesh) -> BTreeMap<String, u64> {
    let text = http_get(&format!("http://{}/metrics", mesh.layout.admin)).await;
    let mut calls = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("valora_calls_total{")) {
        let (labels, value) = line.rsplit_once(' ').expect("metric line");
        let own = ["component=\"edge\"", "grpc.health.v1.Health", "ApiKeyVerifier", "method=\"GetJwks\""];
        if own.iter().any(|o| labels.contains(o)) {
            continue;
        }
        calls.insert(labels.to_owned(), value.parse::<f64>().expect("metric value") as u64);
    }
    calls
}

// ---------------------------------------------------------------------------
// Table 1: bad credentials, through the edge.

// Two worker threads keep the client connections' tasks answering the
// edge's HTTP/2 pings while the test body waits on other work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated() {
    let started = Instant::now();
    let api = Api::load();
    let mesh = DevMesh::start(loopback_options()).await;
    let edge = channel(mesh.edge()).await;
    let ada = sign_up(&mesh, "ada@example.com").await;
    // The shortest lifetime is 60 seconds; the key is made first, so that
    // the rest of the table runs while it ages.
    let expiring = create_key(&mesh, &ada.access_token, &["marketplace:write"], Some(60)).await;
    let expiring_made = Instant::now();
    let revoked = create_key(&mesh, &ada.access_token, &["marketplace:write"], None).await;
    for key in [&expiring.secret, &revoked.secret] {
        call(&edge, LIST, Bytes::new(), &Creds::key(key)).await.expect("a fresh issued key works");
    }
    let mut auth = mesh.auth_client(KEY, Some(&ada.access_token)).await;
    let id = revoked.api_key.as_ref().expect("key").id.clone();
    auth.revoke_api_key(RevokeApiKeyRequest { id }).await.expect("revoke");
    wait_until_rejected(&edge, &revoked.secret, Duration::from_secs(10)).await;

    let (valid_token, tokens) = forged_tokens(&mesh, &ada).await;
    call(&edge, LIST, Bytes::new(), &Creds::user(KEY, &valid_token)).await.expect("a correctly signed token is admitted");

    let mut cases: Vec<(String, Creds)> = vec![
        ("no credentials".into(), Creds::default()),
        ("empty key".into(), Creds::key("")),
        ("wrong key".into(), Creds::key("wrong-key-0123456789abcdef0123456789abcdef")),
        ("issued key with a bad checksum".into(), Creds::key(&format!("vlk_0123456789abcdef_{}", "ab".repeat(36)))),
        (
            "two keys".into(),
            Creds { headers: vec![("x-api-key", KEY.to_owned()), ("x-api-key", "second".to_owned())], query: None },
        ),
        ("revoked issued key".into(), Creds::key(&revoked.secret)),
        ("key in the query string".into(), Creds { query: Some(format!("api_key={KEY}")), ..Creds::key(KEY) }),
    ];
    for (kind, token) in &tokens {
        cases.push((format!("bearer {kind} with a valid key"), Creds::user(KEY, token)));
    }

    let mut rpcs: Vec<Rpc> = PUBLIC.iter().flat_map(|s| api.rpcs(s)).collect();
    rpcs.extend(api.rpcs(VERIFIER));
    let secrets = [KEY.to_owned(), revoked.secret.clone(), expiring.secret.clone(), valid_token.clone()];
    let before = internal_calls(&mesh).await;

    // The representative write, with a body the marketplace would accept.
    let create = api.rpcs(MARKET).into_iter().find(|r| r.name == "CreateListing").expect("CreateListing");
    let valid_create = fill(&api, &create.input, MARKET, &Ids::default(), 0);
    let run = |cases: Vec<(String, Creds)>| {
        let (edge, rpcs, secrets, create, valid_create) = (&edge, &rpcs, &secrets, &create, &valid_create);
        async move {
            let mut count = 0;
            for (case, creds) in &cases {
                let mut calls: Vec<(String, Bytes)> = rpcs.iter().map(|r| (r.path(), Bytes::new())).collect();
                calls.push((create.path(), Bytes::from(valid_create.clone())));
                for (path, body) in calls {
                    let status = call(edge, &path, body, creds).await.expect_err(&format!("{case}: {path} was admitted"));
                    assert_eq!(status.code(), Code::Unauthenticated, "{case}: {path}: {status:?}");
                    for secret in secrets {
                        assert!(!status.message().contains(secret.as_str()), "{case}: {path}: the message echoes a credential");
                    }
                    count += 1;
                }
            }
            count
        }
    };
    let mut count = run(cases.clone()).await;

    // The expired key last: wait out its lifetime, then for the edge's cache.
    tokio::time::sleep_until((expiring_made + Duration::from_secs(60)).into()).await;
    wait_until_rejected(&edge, &expiring.secret, Duration::from_secs(10)).await;
    let expired = vec![("expired issued key".to_owned(), Creds::key(&expiring.secret))];
    count += run(expired).await;
    let after = internal_calls(&mesh).await;
    eprintln!(
        "unauthenticated: {} methods x {} cases, {count} calls, all UNAUTHENTICATED ({:.1?})",
        rpcs.len() + 1,
        cases.len() + 1,
        started.elapsed()
    );
    assert_eq!(before, after, "a rejected call reached an internal service");

    // Nothing was created: an administrator sees every listing.
    let output = run_valora(
        &["users", "grant-admin", "ada@example.com"],
        &[("AUTH_DATABASE_URL", &mesh.auth_database_url())],
        mesh.layout.dir.path(),
    );
    assert!(output.status.success(), "grant-admin: {}", String::from_utf8_lossy(&output.stderr));
    let admin = login(&mesh, "ada@example.com").await;
    let listed = call(&edge, LIST, Bytes::new(), &Creds::user(KEY, &admin.access_token)).await.expect("admin lists");
    assert!(listed.is_empty(), "a rejected call created a listing: {listed:?}");
    let endpoints = "/valora.marketplace.v1.WebhookService/ListWebhookEndpoints";
    for creds in [Creds::user(KEY, &admin.access_token), Creds::key(KEY)] {
        let listed = call(&edge, endpoints, Bytes::new(), &creds).await.expect("list endpoints");
        assert!(listed.is_empty(), "a rejected call created a webhook endpoint");
    }
    let keys = call(&edge, "/valora.auth.v1.AuthService/ListApiKeys", Bytes::new(), &Creds::user(KEY, &admin.access_token))
        .await
        .expect("list keys");
    let count_keys = parse(&keys).iter().filter(|(n, _)| *n == 1).count();
    assert_eq!(count_keys, 2, "a rejected call created an API key");
}

/// The internal key verifier is never routed by the edge, whatever the
/// spelling of its path; a valid key gets UNIMPLEMENTED, never a verdict.
#[tokio::test]
async fn verifier_not_routed() {
    let api = Api::load();
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let edge = channel(mesh.edge()).await;
    let mut body = Vec::new();
    prost::encoding::string::encode(1, &KEY.to_owned(), &mut body);
    for rpc in api.rpcs(VERIFIER) {
        let path = rpc.path();
        let variants = [
            path.clone(),
            format!("{path}/"),
            format!("/{VERIFIER}//{}", rpc.name),
            format!("/{AUTH}/../{VERIFIER}/{}", rpc.name),
            format!("/{}/{}", VERIFIER.to_uppercase(), rpc.name),
            format!("/{AUTH}%2F..%2F{VERIFIER}/{}", rpc.name),
        ];
        for variant in variants {
            let result = call(&edge, &variant, body.clone(), &Creds::key(KEY)).await;
            let code = code_of(&result);
            assert_eq!(code, Code::Unimplemented, "{variant} through the edge: {result:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Table 2: mesh identities without a grant, over mutual TLS.

/// Who may call each service, as the built-in policy grants it.
const GRANTS: [(&str, &[&str]); 4] = [
    (MARKET, &["edge", "engineer"]),
    (WEBHOOK, &["edge", "engineer"]),
    (AUTH, &["edge", "engineer"]),
    (VERIFIER, &["edge", "marketplace"]),
];

fn mesh_client(certs: &std::path::Path, identity: &Identity, addr: std::net::SocketAddr, server: &Identity) -> Channel {
    let tls = MeshTls::load(TlsFiles::in_dir(certs, identity), identity).expect("load the certificate");
    mesh_channel(&tls, &addr.to_string(), server).expect("mesh channel")
}

#[tokio::test]
async fn policy_denied() {
    let started = Instant::now();
    let api = Api::load();
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let certs = mesh.layout.certs_dir();
    // An identity of the trust domain that the policy does not know, with
    // a certificate of the mesh CA.
    let extra = tempfile::tempdir().expect("folder");
    let leaf = sign_leaf(&certs, &LeafSpec::valid("spiffe://valora.internal/billing"));
    std::fs::write(extra.path().join("billing.pem"), &leaf.chain_pem).expect("write");
    std::fs::write(extra.path().join("billing.key"), &leaf.key_pem).expect("write");
    std::fs::copy(certs.join("ca.pem"), extra.path().join("ca.pem")).expect("copy the CA");
    let identities = ["edge", "auth", "marketplace", "engineer", "billing"];

    let mut count = 0;
    for (service, allowed) in GRANTS {
        let (addr, server) = if service.starts_with("valora.auth.") {
            (mesh.layout.auth, Identity::auth())
        } else {
            (mesh.layout.marketplace, Identity::marketplace())
        };
        for name in identities.iter().filter(|n| !allowed.contains(n)) {
            let identity = Identity::from_name(name).expect("identity");
            let dir = if *name == "billing" { extra.path().to_path_buf() } else { certs.clone() };
            let channel = mesh_client(&dir, &identity, addr, &server);
            for rpc in api.rpcs(service) {
                let case = format!("{name} calling {}", rpc.path());
                let status = call(&channel, &rpc.path(), Bytes::new(), &Creds::key(KEY)).await.expect_err(&case);
                assert_eq!(status.code(), Code::PermissionDenied, "{case}: {status:?}");
                let expected = format!("{} may not call {service}/{}", identity_uri(name), rpc.name);
                assert_eq!(status.message(), expected, "{case}");
                count += 1;
            }
        }
    }
    eprintln!("policy_denied: {count} calls over mutual TLS, all PERMISSION_DENIED ({:.1?})", started.elapsed());

    // The grants themselves work, so the denials above are the policy's.
    let engineer = mesh_client(&certs, &Identity::engineer(), mesh.layout.marketplace, &Identity::marketplace());
    call(&engineer, LIST, Bytes::new(), &Creds::key(KEY)).await.expect("engineer lists listings");
    let market = mesh_client(&certs, &Identity::marketplace(), mesh.layout.auth, &Identity::auth());
    let mut body = Vec::new();
    prost::encoding::string::encode(1, &KEY.to_owned(), &mut body);
    let verify = format!("/{VERIFIER}/VerifyApiKey");
    let result = call(&market, &verify, body.clone(), &Creds::key(KEY)).await;
    assert_ne!(code_of(&result), Code::PermissionDenied, "the marketplace may verify keys: {result:?}");

    // Spellings of a denied path that are not gRPC method paths reach no
    // handler either.
    let engineer_auth = mesh_client(&certs, &Identity::engineer(), mesh.layout.auth, &Identity::auth());
    let auth_market = mesh_client(&certs, &Identity::auth(), mesh.layout.marketplace, &Identity::marketplace());
    let create = format!("/{MARKET}/CreateListing");
    for (channel, path, who) in [(&engineer_auth, verify.as_str(), "engineer"), (&auth_market, create.as_str(), "auth")] {
        let (service, method) = path[1..].split_once('/').expect("path");
        for variant in [
            format!("{path}/"),
            format!("/{service}//{method}"),
            format!("//{service}/{method}"),
            format!("/{service}/{method}/x"),
            format!("/{service}/./{method}"),
        ] {
            let result = call(channel, &variant, body.clone(), &Creds::key(KEY)).await;
            let code = code_of(&result);
            assert!(
                matches!(code, Code::PermissionDenied | Code::Unimplemented | Code::Unauthenticated),
                "{who} calling {variant}: {result:?}"
            );
        }
    }
}

fn identity_uri(name: &str) -> String {
    format!("spiffe://valora.internal/{name}")
}

// ---------------------------------------------------------------------------
// Objects of a user, made through the edge with filled requests.

fn rpc(api: &Api, service: &'static str, name: &str) -> Rpc {
    api.rpcs(service).into_iter().find(|r| r.name == name).unwrap_or_else(|| panic!("{service}/{name}"))
}

/// Field 1 (the object) of a response, then that object's field 1 (its id).
fn created_id(response: &[u8]) -> String {
    let object = parse(response)
        .into_iter()
        .find_map(|(n, v)| match (n, v) {
            (1, Wire::Len(bytes)) => Some(bytes),
            _ => None,
        })
        .expect("the response holds the object in field 1");
    parse(&object)
        .into_iter()
        .find_map(|(n, v)| match (n, v) {
            (1, Wire::Len(bytes)) => Some(String::from_utf8(bytes).expect("UTF-8 id")),
            _ => None,
        })
        .expect("the object has an id in field 1")
}

/// A user with a listing and its plan, a listing without plans, a webhook
/// endpoint and an API key.
async fn user_objects(mesh: &DevMesh, edge: &Channel, api: &Api, email: &str) -> (LoginResponse, Ids) {
    let session = sign_up(mesh, email).await;
    let creds = Creds::user(KEY, &session.access_token);
    let mut ids = Ids {
        email: email.to_owned(),
        refresh_token: session.refresh_token.clone(),
        url: format!("http://127.0.0.1:{}/hook", crate::support::free_port()),
        ..Ids::default()
    };
    let make = |service: &'static str, name: &str, ids: &Ids| {
        let rpc = rpc(api, service, name);
        let body = fill(api, &rpc.input, service, ids, 0);
        let creds = creds.clone();
        async move {
            let response = call(edge, &rpc.path(), body, &creds).await;
            created_id(&response.unwrap_or_else(|s| panic!("{}: {s:?}", rpc.path())))
        }
    };
    ids.listing = make(MARKET, "CreateListing", &ids).await;
    ids.bare_listing = make(MARKET, "CreateListing", &ids).await;
    let planned = Ids { bare_listing: ids.listing.clone(), ..ids.clone() };
    ids.plan = make(MARKET, "CreatePlan", &planned).await;
    ids.endpoint = make(WEBHOOK, "CreateWebhookEndpoint", &ids).await;
    ids.api_key = make(AUTH, "CreateApiKey", &ids).await;
    (session, ids)
}

/// The value of field `number` of field `object` of a response.
fn field_of(response: &[u8], object: u32, number: u32) -> Option<Wire> {
    let inner = parse(response).into_iter().find(|(n, _)| *n == object).map(|(_, v)| v)?;
    let Wire::Len(inner) = inner else { return None };
    parse(&inner).into_iter().find(|(n, _)| *n == number).map(|(_, v)| v)
}

// ---------------------------------------------------------------------------
// Table 3: a read-only key on every write method.

#[tokio::test]
async fn read_only_key() {
    let api = Api::load();
    let mesh = DevMesh::start(loopback_options()).await;
    let edge = channel(mesh.edge()).await;
    let (ada, ids) = user_objects(&mesh, &edge, &api, "ada@example.com").await;
    let read = create_key(&mesh, &ada.access_token, &["marketplace:read"], None).await;
    let creds = Creds::key(&read.secret);
    let mut writes = 0;
    let mut empty_codes = BTreeMap::<String, Code>::new();
    for service in [MARKET, WEBHOOK] {
        for rpc in api.rpcs(service) {
            let body = fill(&api, &rpc.input, service, &ids, 0);
            let result = call(&edge, &rpc.path(), body, &creds).await;
            if rpc.is_read() {
                assert!(result.is_ok(), "a read-only key may read its owner's objects: {}: {result:?}", rpc.path());
                continue;
            }
            assert_eq!(code_of(&result), Code::PermissionDenied, "read-only key, {}: {result:?}", rpc.path());
            // With an empty request the request checks may answer first,
            // but never with success.
            let empty = call(&edge, &rpc.path(), Bytes::new(), &creds).await;
            let code = code_of(&empty);
            assert!(
                matches!(code, Code::PermissionDenied | Code::InvalidArgument),
                "read-only key, empty {}: {empty:?}",
                rpc.path()
            );
            empty_codes.insert(rpc.path(), code);
            writes += 1;
        }
    }
    eprintln!("read_only_key: {writes} write methods PERMISSION_DENIED; empty requests answered {empty_codes:?}");

    // The owner's objects are untouched.
    let owner = Creds::user(KEY, &ada.access_token);
    let get = rpc(&api, MARKET, "GetListing");
    let listing = call(&edge, &get.path(), fill(&api, &get.input, MARKET, &ids, 0), &owner).await.expect("get");
    assert_eq!(field_of(&listing, 1, 11), Some(Wire::Varint(1)), "the listing's version changed");
    assert_eq!(field_of(&listing, 1, 7), Some(Wire::Varint(1)), "the listing left DRAFT");
    let plans = rpc(&api, MARKET, "ListPlans");
    let planned = Ids { bare_listing: ids.listing.clone(), ..ids.clone() };
    let listed = call(&edge, &plans.path(), fill(&api, &plans.input, MARKET, &planned, 0), &owner).await.expect("plans");
    assert_eq!(parse(&listed).iter().filter(|(n, _)| *n == 1).count(), 1, "the plans changed");
    let endpoints = call(&edge, "/valora.marketplace.v1.WebhookService/ListWebhookEndpoints", Bytes::new(), &owner)
        .await
        .expect("endpoints");
    assert!(contains(&endpoints, &ids.endpoint), "the webhook endpoint is gone");
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

// ---------------------------------------------------------------------------
// Table 4: another user's objects answer exactly like missing ones.

/// A status with the ids of `ids` replaced by placeholders: code, message
/// and details.
fn shape(result: &Result<Bytes, tonic::Status>, ids: &Ids) -> (Code, String, String) {
    let Err(status) = result else { return (Code::Ok, String::new(), String::new()) };
    let mut message = status.message().to_owned();
    let mut details = String::from_utf8_lossy(status.details()).into_owned();
    for (id, placeholder) in ids.placeholders() {
        message = message.replace(id, placeholder);
        details = details.replace(id, placeholder);
    }
    (status.code(), message, details)
}

#[tokio::test]
async fn other_users() {
    let api = Api::load();
    let mesh = DevMesh::start(loopback_options()).await;
    let edge = channel(mesh.edge()).await;
    let (ada, theirs) = user_objects(&mesh, &edge, &api, "ada@example.com").await;
    let theirs = Ids { email: String::new(), refresh_token: String::new(), ..theirs };
    let bob = sign_up(&mesh, "bob@example.com").await;
    let bob_key = create_key(&mesh, &bob.access_token, &["marketplace:write"], None).await;
    let missing = Ids { url: theirs.url.clone(), ..Ids::missing() };
    let callers = [("bob's token", Creds::user(KEY, &bob.access_token), &PUBLIC[..]), ("bob's key", Creds::key(&bob_key.secret), &PUBLIC[..2])];
    let mut compared = 0;
    for (caller, creds, services) in callers {
        for service in services {
            for rpc in api.rpcs(service) {
                let body = fill(&api, &rpc.input, service, &theirs, 0);
                if !theirs.placeholders().iter().any(|(id, _)| contains(&body, id)) {
                    continue;
                }
                let other = call(&edge, &rpc.path(), body, &creds).await;
                let absent = call(&edge, &rpc.path(), fill(&api, &rpc.input, service, &missing, 0), &creds).await;
                let (other, absent) = (shape(&other, &theirs), shape(&absent, &missing));
                assert_eq!(other.0, Code::NotFound, "{caller}, {} on ada's object: {other:?}", rpc.path());
                assert_eq!(other, absent, "{caller}, {}: ada's object and a missing one answer differently", rpc.path());
                compared += 1;
            }
        }
    }
    eprintln!("other_users: {compared} calls on another user's objects, each NOT_FOUND like a missing object");

    // Lists show none of ada's objects to bob.
    let bob_creds = Creds::user(KEY, &bob.access_token);
    let mut by_seller = Vec::new();
    prost::encoding::string::encode(4, &ada.user.as_ref().expect("user").id, &mut by_seller);
    let listed = call(&edge, LIST, by_seller, &bob_creds).await.expect("list");
    assert!(listed.is_empty(), "bob lists ada's drafts");
    for (path, id) in [
        ("/valora.marketplace.v1.WebhookService/ListWebhookEndpoints", &theirs.endpoint),
        ("/valora.auth.v1.AuthService/ListApiKeys", &theirs.api_key),
    ] {
        let listed = call(&edge, path, Bytes::new(), &bob_creds).await.expect("list");
        assert!(!contains(&listed, id), "{path} shows ada's object to bob");
    }

    // Ada's objects are untouched.
    let owner = Creds::user(KEY, &ada.access_token);
    let get = rpc(&api, MARKET, "GetListing");
    let listing = call(&edge, &get.path(), fill(&api, &get.input, MARKET, &theirs, 0), &owner).await.expect("get");
    assert_eq!(field_of(&listing, 1, 11), Some(Wire::Varint(1)), "ada's listing changed");
    assert_eq!(field_of(&listing, 1, 7), Some(Wire::Varint(1)), "ada's listing left DRAFT");
    let endpoints = call(&edge, "/valora.marketplace.v1.WebhookService/ListWebhookEndpoints", Bytes::new(), &owner)
        .await
        .expect("endpoints");
    assert!(contains(&endpoints, &theirs.endpoint), "ada's webhook endpoint is gone");
    let keys = call(&edge, "/valora.auth.v1.AuthService/ListApiKeys", Bytes::new(), &owner).await.expect("keys");
    let mut revoked = false;
    for (_, key) in parse(&keys) {
        let Wire::Len(key) = key else { continue };
        let fields = parse(&key);
        if fields.contains(&(1, Wire::Len(theirs.api_key.clone().into_bytes()))) {
            revoked = fields.iter().any(|(n, _)| *n == 7);
        }
    }
    assert!(!revoked, "ada's API key was revoked by bob");
}

// ---------------------------------------------------------------------------
// Table 5: fields only the server sets.

/// Fields of stored objects that callers never choose.
const SERVER_SET: [&str; 14] = [
    "seller_id",
    "owner_id",
    "status",
    "role",
    "revision",
    "replaces_plan_id",
    "create_time",
    "update_time",
    "publish_time",
    "retire_time",
    "revoke_time",
    "expire_time",
    "previous_secret_expire_time",
    "failure_reason",
];

/// Listing fields UpdateListing may change.
const MUTABLE: [&str; 4] = ["title", "description", "category", "price"];

const JUNK_TEXT: &str = "mallory-junk";
const JUNK_NUMBER: u64 = 987_654;
/// 2000-01-01T00:00:00Z.
const JUNK_SECONDS: u64 = 946_684_800;

/// Values for the fields of `resource` that `request` does not declare,
/// encoded as unknown fields of the request, and the wire value each
/// would have if a server copied it.
fn junk(api: &Api, request: &str, resource: &str) -> (Vec<u8>, Vec<(u32, Wire)>) {
    let known: BTreeSet<i32> = api.message(request).field.iter().map(|f| f.number()).collect();
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for field in api.message(resource).field.iter().filter(|f| !known.contains(&f.number())) {
        let number = field.number() as u32;
        let value = match field.r#type() {
            Type::String => {
                let text = if field.name() == "scopes" { "admin" } else { JUNK_TEXT };
                Wire::Len(text.as_bytes().to_vec())
            }
            Type::Int64 | Type::Int32 => Wire::Varint(JUNK_NUMBER),
            Type::Enum => {
                let highest = api.enumeration(field.type_name()).value.iter().map(|v| v.number()).max().unwrap_or(0);
                Wire::Varint(highest as u64)
            }
            Type::Message if field.type_name() == ".google.protobuf.Timestamp" => {
                let mut time = Vec::new();
                prost::encoding::int64::encode(1, &(JUNK_SECONDS as i64), &mut time);
                Wire::Len(time)
            }
            _ => continue,
        };
        match &value {
            Wire::Varint(v) => {
                encode_key(number, WireType::Varint, &mut bytes);
                encode_varint(*v, &mut bytes);
            }
            Wire::Len(v) => {
                encode_key(number, WireType::LengthDelimited, &mut bytes);
                encode_varint(v.len() as u64, &mut bytes);
                bytes.extend_from_slice(v);
            }
            Wire::Fixed(_) => unreachable!("no fixed-width junk"),
        }
        expected.push((number, value));
    }
    (bytes, expected)
}

/// The resource messages of a response, by field number and position.
fn resources(api: &Api, output: &str, response: &[u8]) -> Vec<(u32, String, Vec<(u32, Wire)>)> {
    let message = api.message(output);
    let mut found = Vec::new();
    for (number, value) in parse(response) {
        let Some(field) = message.field.iter().find(|f| f.number() as u32 == number) else { continue };
        if field.r#type() == Type::Message && api.is_resource(field.type_name()) {
            if let Wire::Len(bytes) = value {
                found.push((number, field.type_name().trim_start_matches('.').to_owned(), parse(&bytes)));
            }
        }
    }
    found
}

#[tokio::test]
async fn server_fields() {
    let api = Api::load();
    let mesh = DevMesh::start(loopback_options()).await;
    let edge = channel(mesh.edge()).await;

    // No write request declares a field the server owns.
    for service in PUBLIC {
        for rpc in api.rpcs(service).iter().filter(|r| !r.is_read()) {
            let request = api.message(&rpc.input);
            for field in &request.field {
                assert!(!SERVER_SET.contains(&field.name()), "{} lets callers set {}", rpc.path(), field.name());
            }
        }
    }

    // Fields the request lacks, sent anyway by number, are ignored: each
    // write that returns an object runs twice on fresh objects, without
    // and with them, and no sent value appears in the answer unless the
    // answer without them had it too.
    let mut users = 0;
    let mut checked = Vec::new();
    for service in PUBLIC {
        for rpc in api.rpcs(service).into_iter().filter(|r| !r.is_read()) {
            let kinds: BTreeSet<String> = api
                .message(&rpc.output)
                .field
                .iter()
                .filter(|f| f.r#type() == Type::Message && api.is_resource(f.type_name()))
                .map(|f| f.type_name().to_owned())
                .collect();
            let Some(resource) = kinds.iter().next() else { continue };
            assert_eq!(kinds.len(), 1, "{} returns several kinds of object; extend server_fields", rpc.path());
            let (extra, expected) = junk(&api, &rpc.input, resource);
            let mut answers = Vec::new();
            for with_junk in [false, true] {
                users += 1;
                let email = format!("user{users}@example.com");
                let (session, mut ids) = user_objects(&mesh, &edge, &api, &email).await;
                if rpc.name == "Register" {
                    ids.email = format!("new{users}@example.com");
                }
                let mut body = fill(&api, &rpc.input, service, &ids, 0);
                if with_junk {
                    body.extend_from_slice(&extra);
                }
                let answer = call(&edge, &rpc.path(), body, &Creds::user(KEY, &session.access_token)).await;
                answers.push(answer.unwrap_or_else(|s| panic!("{} (unknown fields: {with_junk}): {s:?}", rpc.path())));
            }
            let control = resources(&api, &rpc.output, &answers[0]);
            let tested = resources(&api, &rpc.output, &answers[1]);
            assert_eq!(control.len(), tested.len(), "{}: the answers hold different objects", rpc.path());
            for ((number, kind, fields), (_, _, plain)) in tested.iter().zip(&control) {
                for (junk_number, junk_value) in &expected {
                    let copied = fields.contains(&(*junk_number, junk_value.clone()));
                    let natural = plain.contains(&(*junk_number, junk_value.clone()));
                    let name = &api.message(kind).field.iter().find(|f| f.number() as u32 == *junk_number).expect("field").name;
                    assert!(
                        !copied || natural,
                        "{}: field {number} ({kind}) took the caller's value for {} ({junk_value:?})",
                        rpc.path(),
                        name.as_deref().unwrap_or_default()
                    );
                }
            }
            checked.push(format!("{} ({} fields)", rpc.name, expected.len()));
        }
    }
    eprintln!("server_fields: unknown server-owned fields ignored by {}", checked.join(", "));

    // UpdateListing: a mask naming a server-owned field is refused, and
    // server-owned values in the listing are ignored by other masks.
    let (session, ids) = user_objects(&mesh, &edge, &api, "masks@example.com").await;
    let creds = Creds::user(KEY, &session.access_token);
    let owner = session.user.as_ref().expect("user").id.clone();
    let update = rpc(&api, MARKET, "UpdateListing");
    let listing = api.message("valora.marketplace.v1.Listing");
    let mut refused: Vec<String> = listing
        .field
        .iter()
        .map(|f| f.name().to_owned())
        .filter(|n| !MUTABLE.contains(&n.as_str()))
        .collect();
    refused.extend(["sellerId", "SELLER_ID", "status.value", "price.currency_code.x", "title,status"].map(str::to_owned));
    for path in &refused {
        let request = update_request(&ids.listing, &owner, 1, vec![path.clone()], false);
        let result = call(&edge, &update.path(), request, &creds).await;
        assert_eq!(code_of(&result), Code::InvalidArgument, "update_mask [{path}]: {result:?}");
    }
    let mut version = 1;
    for mask in [vec!["*".to_owned()], vec!["title".to_owned()], vec!["title".to_owned(), "price".to_owned()]] {
        let request = update_request(&ids.listing, &owner, version, mask.clone(), true);
        let answer = call(&edge, &update.path(), request, &creds).await.unwrap_or_else(|s| panic!("mask {mask:?}: {s:?}"));
        version += 1;
        let changed = valora_proto::marketplace::v1::UpdateListingResponse::decode(answer).expect("decode");
        let changed = changed.listing.expect("listing");
        assert_eq!(changed.seller_id, owner, "mask {mask:?}: seller_id");
        assert_eq!(changed.status, 1, "mask {mask:?}: status");
        assert_eq!(changed.version, version, "mask {mask:?}: version");
        assert_eq!(changed.id, ids.listing, "mask {mask:?}: id");
        assert!(changed.publish_time.is_none(), "mask {mask:?}: publish_time");
        for (name, time) in [("create_time", &changed.create_time), ("update_time", &changed.update_time)] {
            let seconds = time.as_ref().map_or(0, |t| t.seconds);
            assert_ne!(seconds as u64, JUNK_SECONDS, "mask {mask:?}: {name} took the caller's value");
        }
    }
    eprintln!("server_fields: UpdateListing refused {} masks and ignored server-owned values under 3 masks", refused.len());
}

/// An UpdateListing request whose listing carries caller values for every
/// server-owned field when `junk` is set.
fn update_request(id: &str, owner: &str, version: i64, paths: Vec<String>, junk: bool) -> Vec<u8> {
    use valora_proto::marketplace::v1::{Listing, Money, UpdateListingRequest};
    let time = prost_types::Timestamp { seconds: JUNK_SECONDS as i64, nanos: 0 };
    let mut listing = Listing {
        id: id.to_owned(),
        seller_id: owner.to_owned(),
        title: "Changed title".into(),
        price: Some(Money { currency_code: "EUR".into(), amount_minor: 250 }),
        description: "changed".into(),
        category: "changed".into(),
        ..Listing::default()
    };
    if junk {
        listing.seller_id = JUNK_TEXT.into();
        listing.status = 3;
        listing.create_time = Some(time);
        listing.update_time = Some(time);
        listing.publish_time = Some(time);
        listing.version = JUNK_NUMBER as i64;
    }
    UpdateListingRequest { listing: Some(listing), update_mask: Some(prost_types::FieldMask { paths }), version }.encode_to_vec()
}

// ---------------------------------------------------------------------------
// HTTP/2 abuse of the edge: measurements.

/// The `valora dev` process of `mesh`, found by its own state folder on
/// its command line.
fn mesh_pid(mesh: &DevMesh) -> u32 {
    let state = mesh.layout.state_dir().display().to_string();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().any(|a| a == "dev") && args.iter().any(|a| *a == state) {
            return pid;
        }
    }
    panic!("no process runs with --state-dir {state}");
}

/// Resident memory of `pid` in MiB, from VmRSS.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// User plus system CPU time of `pid` in seconds, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name, which is in parentheses; utime and
    // stime are fields 14 and 15 of the line.
    let rest = &stat[stat.rfind(')').expect("stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf CLK_TCK");
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("CLK_TCK")
    })
}

/// A well-behaved client on its own thread and runtime, so that the
/// attack's tasks do not delay it: one connection, one ListListings call
/// every 100 ms, each given 10 seconds.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Result<Duration, String>>>,
}

impl Probe {
    fn start(edge: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let channel = channel(&edge).await;
                let mut results = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let outcome =
                        tokio::time::timeout(Duration::from_secs(10), call(&channel, LIST, Bytes::new(), &Creds::key(KEY)))
                            .await;
                    results.push(match outcome {
                        Ok(Ok(_)) => Ok(started.elapsed()),
                        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                        Err(_) => Err("no answer within 10 s".to_owned()),
                    });
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                results
            })
        });
        Self { stop, thread }
    }

    async fn finish(self) -> Vec<Result<Duration, String>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join().expect("probe thread")).await.expect("join")
    }
}

/// Memory, CPU time and a probe's latency around one attack.
struct Watch {
    pid: u32,
    edge: String,
    baseline_mib: f64,
    peak_kib: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<()>,
    probe: Probe,
    cpu_start: f64,
    started: Instant,
}

/// What a watch measured.
#[derive(Debug)]
struct Figures {
    baseline_mib: f64,
    peak_mib: f64,
    settled_mib: f64,
    cores_during: f64,
    cores_after: f64,
    during: Vec<Result<Duration, String>>,
    after: Vec<Result<Duration, String>>,
}

impl Watch {
    async fn start(mesh: &DevMesh) -> Self {
        let pid = mesh_pid(mesh);
        let edge = mesh.edge();
        // Warm-up, so that lazily built state is in the baseline.
        let warm = channel(&edge).await;
        for _ in 0..20 {
            call(&warm, LIST, Bytes::new(), &Creds::key(KEY)).await.expect("warm-up call");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let baseline_mib = rss_mib(pid);
        let peak_kib = Arc::new(std::sync::atomic::AtomicU64::new((baseline_mib * 1024.0) as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, flag) = (peak_kib.clone(), stop.clone());
        let sampler = tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    peak.fetch_max((rss_mib(pid) * 1024.0) as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let probe = Probe::start(edge.clone());
        Self { pid, edge, baseline_mib, peak_kib, stop, sampler, probe, cpu_start: cpu_seconds(pid), started: Instant::now() }
    }

    /// Ends the attack window: CPU per second during it, then two quiet
    /// seconds, then a fresh client's latency.
    async fn finish(self, name: &str) -> Figures {
        let cores_during = (cpu_seconds(self.pid) - self.cpu_start) / self.started.elapsed().as_secs_f64();
        let during = self.probe.finish().await;
        let quiet = cpu_seconds(self.pid);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cores_after = (cpu_seconds(self.pid) - quiet) / 2.0;
        let probe = Probe::start(self.edge.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = probe.finish().await;
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.await.expect("sampler");
        let figures = Figures {
            baseline_mib: self.baseline_mib,
            peak_mib: self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0,
            settled_mib: rss_mib(self.pid),
            cores_during,
            cores_after,
            during,
            after,
        };
        eprintln!(
            "{name}: RSS {:.1} MiB before, {:.1} MiB peak (+{:.1}), {:.1} MiB after; CPU {:.2} cores during, {:.2} after; \
             probe during: {}; probe after: {}",
            figures.baseline_mib,
            figures.peak_mib,
            figures.peak_mib - figures.baseline_mib,
            figures.settled_mib,
            figures.cores_during,
            figures.cores_after,
            latency(&figures.during),
            latency(&figures.after),
        );
        figures
    }
}

fn latency(results: &[Result<Duration, String>]) -> String {
    let mut ok: Vec<Duration> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    ok.sort();
    let failed = results.len() - ok.len();
    if ok.is_empty() {
        return format!("{failed} calls, none answered");
    }
    let at = |q: f64| ok[((ok.len() - 1) as f64 * q).round() as usize];
    format!("{} calls, p50 {:.1?}, p99 {:.1?}, max {:.1?}, {failed} failed", results.len(), at(0.5), at(0.99), at(1.0))
}

/// Memory stays within 100 MiB of the baseline, the process goes quiet
/// after the attack, and the probe is answered in time during and after.
fn assert_bounded(name: &str, figures: &Figures, max_during: Duration) {
    let growth = figures.peak_mib - figures.baseline_mib;
    assert!(growth < 100.0, "{name}: resident memory grew by {growth:.1} MiB");
    assert!(figures.cores_after < 0.5, "{name}: {:.2} cores still busy after the attack", figures.cores_after);
    for (when, results, limit) in [("during", &figures.during, max_during), ("after", &figures.after, Duration::from_secs(1))] {
        assert!(!results.is_empty(), "{name}: the probe made no call {when} the attack");
        for result in results {
            match result {
                Ok(elapsed) => assert!(*elapsed < limit, "{name}: a call {when} the attack took {elapsed:?}"),
                Err(error) => panic!("{name}: a call {when} the attack failed: {error}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP/2 frames by hand, for what the h2 crate will not send.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK integer with a `prefix`-bit prefix (RFC 7541 section 5.1).
fn hpack_int(value: usize, prefix: u8, flags: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// The header block of a gRPC request to ListListings with the test key:
/// static-table entries for `:method POST` and `:scheme http`, every
/// other field a literal without indexing or Huffman coding.
fn request_block(authority: &str) -> Vec<u8> {
    let mut out = vec![0x83, 0x86];
    for (index, value) in [(4, LIST), (1, authority)] {
        hpack_int(index, 4, 0, &mut out);
        hpack_int(value.len(), 7, 0, &mut out);
        out.extend_from_slice(value.as_bytes());
    }
    for (name, value) in [("content-type", "application/grpc"), ("te", "trailers"), ("x-api-key", KEY)] {
        out.push(0);
        for text in [name, value] {
            hpack_int(text.len(), 7, 0, &mut out);
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

async fn read_frame(tcp: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await?;
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; length];
    tcp.read_exact(&mut payload).await?;
    let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
    Ok((head[3], head[4], stream, payload))
}

/// An h2c connection after the exchange of SETTINGS, and the server's
/// SETTINGS_MAX_CONCURRENT_STREAMS.
async fn raw_h2(addr: &str) -> (TcpStream, Option<u32>) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut hello = PREFACE.to_vec();
    hello.extend(h2_frame(SETTINGS, 0, 0, &[]));
    tcp.write_all(&hello).await.expect("preface");
    loop {
        let (kind, flags, _, payload) = read_frame(&mut tcp).await.expect("server SETTINGS");
        if kind == SETTINGS && flags & 1 == 0 {
            let max = payload
                .chunks(6)
                .find(|s| s[..2] == [0, 3])
                .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
            tcp.write_all(&h2_frame(SETTINGS, 1, 0, &[])).await.expect("SETTINGS ACK");
            return (tcp, max);
        }
    }
}

fn grpc_request(edge: &str) -> http::Request<()> {
    http::Request::post(format!("http://{edge}{LIST}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", KEY)
        .body(())
        .expect("request")
}

async fn h2_client(edge: &str) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(edge).await.expect("connect");
    let (sender, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    (sender, tokio::spawn(connection))
}

fn describe(error: &h2::Error) -> String {
    match (error.is_go_away(), error.reason()) {
        (true, Some(reason)) => format!("GOAWAY {reason:?}"),
        (false, Some(reason)) => format!("reset {reason:?}"),
        _ if error.is_io() => "connection closed".to_owned(),
        _ => error.to_string(),
    }
}

// ---------------------------------------------------------------------------
// HTTP/2 abuse of the edge: the attacks.

/// Streams opened and reset at once, as fast as two connections allow,
/// for five seconds; a closed connection is replaced by a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let edge = mesh.edge();
    let watch = Watch::start(&mesh).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let edge = edge.clone();
            tokio::spawn(async move {
                let (mut streams, mut connections) = (0u64, 0u64);
                let mut endings = BTreeMap::<String, u64>::new();
                while Instant::now() < deadline {
                    connections += 1;
                    let (mut sender, connection) = h2_client(&edge).await;
                    let ending = loop {
                        if Instant::now() >= deadline {
                            break "attack over".to_owned();
                        }
                        sender = match sender.ready().await {
                            Ok(sender) => sender,
                            Err(error) => break describe(&error),
                        };
                        match sender.send_request(grpc_request(&edge), true) {
                            Ok((response, mut stream)) => {
                                stream.send_reset(h2::Reason::CANCEL);
                                drop(response);
                                streams += 1;
                            }
                            Err(error) => break describe(&error),
                        }
                        if streams % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    };
                    let ending = match tokio::time::timeout(Duration::from_secs(1), connection).await {
                        Ok(Ok(Err(error))) if ending == "attack over" => format!("attack over ({})", describe(&error)),
                        _ => ending,
                    };
                    *endings.entry(ending).or_default() += 1;
                }
                (streams, connections, endings)
            })
        })
        .collect();
    let (mut streams, mut connections) = (0, 0);
    let mut endings = BTreeMap::<String, u64>::new();
    for attacker in attackers {
        let (s, c, e) = attacker.await.expect("attacker");
        streams += s;
        connections += c;
        for (k, v) in e {
            *endings.entry(k).or_default() += v;
        }
    }
    let figures = watch.finish("rapid_reset").await;
    eprintln!("rapid_reset: {streams} streams opened and reset on {connections} connections; connections ended by {endings:?}");
    assert!(streams > 1000, "the attack opened only {streams} streams");
    assert_bounded("rapid_reset", &figures, Duration::from_secs(3));
}

/// Header lists just under and over the advertised 16 KiB, and 1 MiB of
/// header block split into CONTINUATION frames, 40 times at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_headers() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let edge = mesh.edge();
    let watch = Watch::start(&mesh).await;
    let attempt = |size: usize| {
        let edge = edge.clone();
        async move {
            let (sender, connection) = h2_client(&edge).await;
            let mut request = grpc_request(&edge);
            request.headers_mut().insert("x-padding", "a".repeat(size).parse().expect("header value"));
            let outcome = match sender.ready().await {
                Err(error) => describe(&error),
                Ok(mut sender) => match sender.send_request(request, false) {
                    Err(error) => describe(&error),
                    Ok((response, mut stream)) => match {
                        // An empty ListListingsRequest.
                        let _ = stream.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true);
                        response
                    } {
                        response => match tokio::time::timeout(Duration::from_secs(5), response).await {
                        Err(_) => "no answer within 5 s".to_owned(),
                        Ok(Err(error)) => describe(&error),
                        Ok(Ok(response)) => {
                            let grpc = response.headers().get("grpc-status").map(|v| {
                                let message = response.headers().get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or_default();
                                format!("{} ({message})", v.to_str().unwrap_or("?"))
                            });
                            let mut status = format!("HTTP {}", response.status().as_u16());
                            if let Some(code) = grpc {
                                status.push_str(&format!(", grpc-status {code}"));
                            }
                            let mut body = response.into_body();
                            while let Some(Ok(_)) = body.data().await {}
                            if let Ok(Some(trailers)) = body.trailers().await {
                                if let Some(code) = trailers.get("grpc-status") {
                                    status.push_str(&format!(", grpc-status {}", code.to_str().unwrap_or("?")));
                                }
                                if let Some(message) = trailers.get("grpc-message") {
                                    status.push_str(&format!(" ({})", message.to_str().unwrap_or("?")));
                                }
                            }
                            status
                        }
                    },
                    },
                },
            };
            let closed = match tokio::time::timeout(Duration::from_secs(2), connection).await {
                Ok(Ok(Err(error))) => format!("; connection ended: {}", describe(&error)),
                _ => String::new(),
            };
            format!("{outcome}{closed}")
        }
    };
    let under = attempt(15 * 1024).await;
    let over = attempt(20 * 1024).await;
    let huge: Vec<_> = (0..40).map(|_| tokio::spawn(attempt(1024 * 1024))).collect();
    let mut huge_outcomes = BTreeMap::<String, u32>::new();
    for task in huge {
        *huge_outcomes.entry(task.await.expect("attempt")).or_default() += 1;
    }
    let figures = watch.finish("large_headers").await;
    eprintln!("large_headers: 15 KiB: {under}; 20 KiB: {over}; 1 MiB x 40: {huge_outcomes:?}");
    assert!(under.starts_with("HTTP 200, grpc-status 0"), "a 15 KiB header list is within the limit: {under}");
    assert!(!over.starts_with("HTTP 200"), "a 20 KiB header list was served: {over}");
    for outcome in huge_outcomes.keys() {
        assert!(!outcome.starts_with("HTTP 200"), "a 1 MiB header list was served: {outcome}");
    }
    assert_bounded("large_headers", &figures, Duration::from_secs(3));
}

/// 1000 streams opened at once on each of eight connections, none ever
/// sending its body: the server refuses what exceeds its advertised limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let edge = mesh.edge();
    let watch = Watch::start(&mesh).await;
    let block = request_block(&edge);
    let mut connections = Vec::new();
    for _ in 0..8 {
        let (mut tcp, advertised) = raw_h2(&edge).await;
        let mut burst = Vec::new();
        for n in 0..1000u32 {
            burst.extend(h2_frame(HEADERS, END_HEADERS, 2 * n + 1, &block));
        }
        tcp.write_all(&burst).await.expect("send 1000 HEADERS");
        connections.push((tcp, advertised));
    }
    let mut summaries = Vec::new();
    for (tcp, advertised) in &mut connections {
        let (mut refused, mut other_resets, mut goaway) = (0, 0, None);
        let deadline = Instant::now() + Duration::from_secs(3);
        while refused + other_resets < 1000 && goaway.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Ok(Ok((kind, _, _, payload))) = tokio::time::timeout(remaining, read_frame(tcp)).await else { break };
            match kind {
                RST_STREAM if u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) == REFUSED_STREAM => {
                    refused += 1;
                }
                RST_STREAM => other_resets += 1,
                GOAWAY => goaway = Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]])),
                _ => {}
            }
        }
        summaries.push((*advertised, refused, other_resets, goaway));
    }
    let figures = watch.finish("stream_limit").await;
    eprintln!("stream_limit: per connection (advertised limit, REFUSED_STREAM, other resets, GOAWAY): {summaries:?}");
    for (advertised, refused, other_resets, goaway) in summaries {
        assert_eq!(advertised, Some(256), "SETTINGS_MAX_CONCURRENT_STREAMS");
        assert_eq!(goaway, None, "the server closed a connection that only exceeded the stream limit");
        assert_eq!(refused, 1000 - 256, "streams beyond the limit are refused ({other_resets} other resets)");
    }
    drop(connections);
    assert_bounded("stream_limit", &figures, Duration::from_secs(3));
}

/// Streams whose request body arrives one byte per second: 200 on each of
/// two connections, watched for 12 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let edge = mesh.edge();
    let watch = Watch::start(&mesh).await;
    let message = valora_proto::marketplace::v1::ListListingsRequest { query: "slow".repeat(4), ..Default::default() };
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
    body.extend(message.encode_to_vec());
    let mut streams = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..2 {
        let (mut sender, connection) = h2_client(&edge).await;
        for _ in 0..200 {
            sender = sender.ready().await.expect("stream capacity");
            let (response, stream) = sender.send_request(grpc_request(&edge), false).expect("open a stream");
            streams.push((response, stream));
        }
        connections.push((sender, connection));
    }
    let started = Instant::now();
    let mut sent = 0;
    // Streams the server has already ended; sending more on them fails.
    let mut ended = vec![false; streams.len()];
    while started.elapsed() < Duration::from_secs(12) && sent < body.len() {
        for ((_, stream), ended) in streams.iter_mut().zip(ended.iter_mut()) {
            if !*ended {
                let last = sent + 1 == body.len();
                *ended = stream.send_data(Bytes::copy_from_slice(&body[sent..=sent]), last).is_err();
            }
        }
        sent += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ended = ended.iter().filter(|e| **e).count();
    let mut answered = 0;
    for (response, _) in &mut streams {
        if futures_ready(response).await {
            answered += 1;
        }
    }
    drop(streams);
    drop(connections);
    let figures = watch.finish("slow_body").await;
    eprintln!(
        "slow_body: {} streams sent up to {sent} of {} body bytes each at 1 byte/s; {ended} ended by the server, {answered} answered",
        400,
        body.len()
    );
    assert_bounded("slow_body", &figures, Duration::from_secs(3));
    assert_eq!(answered, 400, "streams with a slow body were held open for 12 s");
}

/// Whether a response has arrived, without waiting.
async fn futures_ready(response: &mut h2::client::ResponseFuture) -> bool {
    tokio::time::timeout(Duration::from_millis(1), response).await.is_ok()
}

/// Clients that never finish: idle TCP connections, HTTP/1.1 requests
/// whose headers arrive one byte per second, a partial HTTP/2 preface, and
/// HTTP/2 streams that send headers and never a body. Watched for 16
/// seconds, past the documented 10-second header limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let edge = mesh.edge();
    let watch = Watch::start(&mesh).await;
    let started = Instant::now();
    // The 10-second limit counts from when the edge accepts a connection,
    // which on a busy machine can come seconds after 700 clients connect.
    let watched = Duration::from_secs(16);
    let kinds: [(&str, usize, &[u8], bool); 4] = [
        ("idle TCP", 300, b"", false),
        ("HTTP/1.1 headers at 1 byte/s", 100, b"POST /valora.marketplace.v1.MarketplaceService/ListListings HTTP/1.1\r\nhost: a\r\n", true),
        ("HTTP/1.1 headers never finished", 100, b"GET / HTTP/1.1\r\nhost: a\r\n", false),
        ("partial HTTP/2 preface", 100, b"PRI * HTTP/2.0\r\n", false),
    ];
    let mut tasks = Vec::new();
    for (kind, count, opening, dribble) in kinds {
        for _ in 0..count {
            let edge = edge.clone();
            tasks.push(tokio::spawn(async move {
                let mut tcp = TcpStream::connect(&edge).await.expect("connect");
                tcp.write_all(opening).await.expect("write");
                let mut buf = [0u8; 1024];
                loop {
                    let wait = if dribble { Duration::from_secs(1) } else { watched.saturating_sub(started.elapsed()) };
                    match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
                        Ok(Ok(0) | Err(_)) => return (kind, Some(started.elapsed())),
                        Ok(Ok(_)) => continue,
                        Err(_) if started.elapsed() >= watched => return (kind, None),
                        Err(_) => {
                            if tcp.write_all(b"x").await.is_err() {
                                return (kind, Some(started.elapsed()));
                            }
                        }
                    }
                }
            }));
        }
    }
    // HTTP/2 streams with headers and no body, on one connection.
    let (mut sender, connection) = h2_client(&edge).await;
    let mut held = Vec::new();
    for _ in 0..256 {
        sender = sender.ready().await.expect("stream capacity");
        held.push(sender.send_request(grpc_request(&edge), false).expect("open a stream"));
    }
    let mut closed = BTreeMap::<&str, Vec<Duration>>::new();
    let mut open = BTreeMap::<&str, usize>::new();
    for task in tasks {
        match task.await.expect("client") {
            (kind, Some(at)) => closed.entry(kind).or_default().push(at),
            (kind, None) => *open.entry(kind).or_default() += 1,
        }
    }
    // The streams opened last may have started a moment after the rest, so
    // they get two more seconds to end.
    let grace = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut held_ended = 0;
    for (response, _) in &mut held {
        if tokio::time::timeout_at(grace, response).await.is_ok() {
            held_ended += 1;
        }
    }
    let h2_open = !connection.is_finished();
    drop(held);
    drop(sender);
    let figures = watch.finish("slow_clients").await;
    for (kind, times) in &closed {
        let first = times.iter().min().copied().unwrap_or_default();
        let last = times.iter().max().copied().unwrap_or_default();
        eprintln!("slow_clients: {kind}: {} closed by the server, from {first:.1?} to {last:.1?}", times.len());
    }
    for (kind, count) in &open {
        eprintln!("slow_clients: {kind}: {count} still open after {watched:?}");
    }
    eprintln!("slow_clients: HTTP/2 streams with headers and no body: {held_ended} of 256 ended, connection open: {h2_open}");
    assert_bounded("slow_clients", &figures, Duration::from_secs(3));
    for (kind, _, _, _) in kinds {
        assert_eq!(open.get(kind), None, "{kind}: connections still open after {watched:?}");
    }
    assert_eq!(held_ended, 256, "HTTP/2 streams without a body were held for {watched:?}");
}
