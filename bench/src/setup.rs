//! The calls the benchmark makes, and its set-up helpers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use valora_auth::password::hasher::{Argon2Settings, Hasher};
use valora_mesh::apikey::StaticKeys;
use valora_proto::auth::v1 as auth;
use valora_proto::marketplace::v1 as market;

use crate::grpc::{self, Reply};
use crate::load::Call;
use crate::target::{Sender, Target};

const MARKETPLACE: &str = "/valora.marketplace.v1.MarketplaceService";
const AUTH: &str = "/valora.auth.v1.AuthService";

/// The RPCs the benchmark makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Rpc {
    /// MarketplaceService/GetListing of --listing-id.
    GetListing,
    /// AuthService/GetJwks: answered from memory by the auth service.
    GetJwks,
    /// AuthService/Login with --email and --password.
    Login,
    /// grpc.health.v1.Health/Check of the whole server.
    Health,
}

/// Which RPC and its arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RpcArgs {
    /// The RPC to call.
    #[arg(long, value_enum, default_value = "get-listing")]
    pub(crate) rpc: Rpc,

    /// Listing id for get-listing.
    #[arg(long, default_value = "")]
    pub(crate) listing_id: String,

    /// Email for login.
    #[arg(long = "login-email", default_value = "")]
    pub(crate) email: String,

    /// Password for login.
    #[arg(long = "login-password", default_value = "", hide_default_value = true)]
    pub(crate) password: String,
}

impl RpcArgs {
    fn path(&self) -> String {
        match self.rpc {
            Rpc::GetListing => format!("{MARKETPLACE}/GetListing"),
            Rpc::GetJwks => format!("{AUTH}/GetJwks"),
            Rpc::Login => format!("{AUTH}/Login"),
            Rpc::Health => "/grpc.health.v1.Health/Check".to_owned(),
        }
    }

    /// The protobuf request message, unframed.
    pub(crate) fn message(&self) -> anyhow::Result<Vec<u8>> {
        Ok(match self.rpc {
            Rpc::GetListing => {
                if self.listing_id.is_empty() {
                    bail!("get-listing needs --listing-id");
                }
                market::GetListingRequest { id: self.listing_id.clone() }.encode_to_vec()
            }
            Rpc::GetJwks => auth::GetJwksRequest {}.encode_to_vec(),
            Rpc::Login => {
                if self.email.is_empty() || self.password.is_empty() {
                    bail!("login needs --login-email and --login-password");
                }
                auth::LoginRequest { email: self.email.clone(), password: self.password.clone() }.encode_to_vec()
            }
            // HealthCheckRequest { service: "" } encodes to no bytes.
            Rpc::Health => Vec::new(),
        })
    }

    pub(crate) fn call(&self, target: &Target) -> anyhow::Result<Call> {
        let path = self.path();
        Ok(Call { uri: target.uri(&path)?, body: grpc::frame(&self.message()?), label: path })
    }
}

async fn call_ok(target: &Target, sender: &mut Sender, path: &str, message: Vec<u8>) -> anyhow::Result<Reply> {
    let reply = grpc::unary(sender, &target.uri(path)?, target.headers(), grpc::frame(&message)).await?;
    if reply.code != 0 {
        bail!("{path}: {} {}", grpc::code_name(reply.code), reply.message);
    }
    Ok(reply)
}

/// Creates a listing with a plan and publishes it; registers a user when
/// `email` is given.
pub(crate) async fn seed(target: &Target, email: Option<&str>, password: Option<&str>) -> anyhow::Result<Value> {
    let mut sender = target.connect().await?;
    let price = market::Money { currency_code: "EUR".to_owned(), amount_minor: 12_500 };
    let created = call_ok(
        target,
        &mut sender,
        &format!("{MARKETPLACE}/CreateListing"),
        market::CreateListingRequest {
            title: "Vintage camera".to_owned(),
            description: "A 1970s rangefinder in working order".to_owned(),
            category: "cameras".to_owned(),
            price: Some(price.clone()),
        }
        .encode_to_vec(),
    )
    .await?;
    let listing = market::CreateListingResponse::decode(created.body)?
        .listing
        .context("CreateListing answered without a listing")?;
    call_ok(
        target,
        &mut sender,
        &format!("{MARKETPLACE}/CreatePlan"),
        market::CreatePlanRequest {
            listing_id: listing.id.clone(),
            name: "Buy now".to_owned(),
            price: Some(price),
            interval: market::BillingInterval::OneTime as i32,
        }
        .encode_to_vec(),
    )
    .await?;
    call_ok(
        target,
        &mut sender,
        &format!("{MARKETPLACE}/PublishListing"),
        market::PublishListingRequest { id: listing.id.clone() }.encode_to_vec(),
    )
    .await?;
    let mut registered = Value::Null;
    if let (Some(email), Some(password)) = (email, password) {
        let request = auth::RegisterRequest {
            email: email.to_owned(),
            password: password.to_owned(),
            display_name: "Bench User".to_owned(),
        };
        let reply = grpc::unary(
            &mut sender,
            &target.uri(&format!("{AUTH}/Register"))?,
            target.headers(),
            grpc::frame(&request.encode_to_vec()),
        )
        .await?;
        // ALREADY_EXISTS: a user from an earlier seed.
        if reply.code != 0 && reply.code != 6 {
            bail!("Register: {} {}", grpc::code_name(reply.code), reply.message);
        }
        registered = Value::from(email);
    }
    Ok(json!({ "listing_id": listing.id, "user": registered }))
}

/// The `x-valora-principal` value the edge forwards for the static `key`.
pub(crate) fn principal(key: &str) -> anyhow::Result<String> {
    let keys = StaticKeys::parse(key)?;
    let principal = keys.lookup(key).context("the key does not match itself")?;
    Ok(principal.to_header_value())
}

/// Opens `count` connections, makes one call on each, reports, then keeps
/// them idle for `seconds`.
pub(crate) async fn hold(
    target: Target,
    call: Call,
    count: usize,
    seconds: f64,
    report: fn(&Value),
) -> anyhow::Result<()> {
    let target = Arc::new(target);
    let call = Arc::new(call);
    // At most 32 handshakes at a time, like a pool that warms up.
    let permits = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let (target, call, permits) = (target.clone(), call.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let mut sender = target.connect().await?;
            let reply = grpc::unary(&mut sender, &call.uri, target.headers(), call.body.clone()).await?;
            if reply.code != 0 {
                bail!("{}: {} {}", call.label, grpc::code_name(reply.code), reply.message);
            }
            Ok::<Sender, anyhow::Error>(sender)
        }));
    }
    let mut open = Vec::with_capacity(count);
    for task in tasks {
        open.push(task.await??);
    }
    report(&json!({
        "event": "ready",
        "connections": open.len(),
        "seconds_to_open": started.elapsed().as_secs_f64(),
    }));
    tokio::time::sleep(Duration::from_secs_f64(seconds.max(0.0))).await;
    drop(open);
    Ok(())
}

/// Times `count` hashes, one at a time, with the auth service's hasher.
pub(crate) async fn argon2(count: usize, memory_kib: u32, iterations: u32, parallelism: u32) -> anyhow::Result<Value> {
    let settings = Argon2Settings { memory_kib, iterations, parallelism };
    let hasher = Hasher::new(settings, 1)?;
    let mut millis = Vec::with_capacity(count);
    for index in 0..count.max(1) {
        let started = Instant::now();
        hasher.hash(format!("benchmark password number {index}")).await?;
        millis.push(started.elapsed().as_secs_f64() * 1e3);
    }
    millis.sort_by(f64::total_cmp);
    let median = millis[millis.len() / 2];
    Ok(json!({
        "hashes": millis.len(),
        "memory_kib": memory_kib,
        "iterations": iterations,
        "parallelism": parallelism,
        "hash_ms_median": median,
        "hash_ms_min": millis.first(),
        "hash_ms_max": millis.last(),
    }))
}
