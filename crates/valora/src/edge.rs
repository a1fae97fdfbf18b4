//! Assembling the edge's options from settings.

use std::sync::Arc;
use std::time::Duration;

use valora_gateway::bearer::BearerVerifier;
use valora_gateway::{EdgeOptions, Upstream};
use valora_proto::auth::v1::auth_service_server::SERVICE_NAME as AUTH_SERVICE;
use valora_mesh::apikey::KeyVerifier;
use valora_mesh::balance::UpstreamPool;
use valora_mesh::identity::Identity;
use valora_mesh::tls::MeshTls;
use valora_proto::marketplace::v1::marketplace_service_server::SERVICE_NAME as MARKETPLACE_SERVICE;
use valora_proto::marketplace::v1::webhook_service_server::SERVICE_NAME as WEBHOOK_SERVICE;

use crate::cli::{CommonArgs, EdgeSettings, RateLimitArgs, TokenArgs};
use valora_gateway::ratelimit::local::LocalLimiter;
use valora_gateway::ratelimit::shared::SharedLimiter;
use valora_gateway::ratelimit::{Backend, Limiter, Limits, Rate, TrustedProxies, parse_rate};
use crate::settings::{SettingError, security_headers};

/// The marketplace replicas listed in `VALORA_MARKETPLACE_ADDR`.
pub(crate) async fn marketplace_pool(
    tls: &Arc<MeshTls>,
    targets: &str,
    common: &CommonArgs,
) -> anyhow::Result<Arc<UpstreamPool>> {
    let identity = Identity::marketplace();
    crate::components::upstream_pool("marketplace", tls, targets, &identity, "VALORA_MARKETPLACE_ADDR", common).await
}

/// Checks the edge settings and builds its options.
pub(crate) async fn options(
    settings: &EdgeSettings,
    common: &CommonArgs,
    tokens: &TokenArgs,
    keys: Arc<dyn KeyVerifier>,
    marketplace: Arc<UpstreamPool>,
    auth: Arc<UpstreamPool>,
) -> anyhow::Result<EdgeOptions> {
    let cors_origins = valora_gateway::cors::parse_origins(&settings.cors_allow_origins)
        .map_err(|e| SettingError::new("VALORA_CORS_ALLOW_ORIGINS", e.to_string(), "fix or remove that entry"))?;
    let bearer = BearerVerifier::new(auth.clone(), &tokens.token_issuer, &tokens.token_audience);
    bearer.spawn_refresher();
    let public_tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(valora_gateway::public_tls(cert, key)?),
        _ => None,
    };
    Ok(EdgeOptions {
        keys,
        cors_origins,
        security_headers: security_headers(&common.headers)?,
        upstreams: vec![
            (MARKETPLACE_SERVICE.to_owned(), Upstream { name: "marketplace", pool: marketplace.clone() }),
            (WEBHOOK_SERVICE.to_owned(), Upstream { name: "marketplace", pool: marketplace }),
            (AUTH_SERVICE.to_owned(), Upstream { name: "auth", pool: auth }),
        ],
        tls: public_tls,
        drain: Duration::from_secs(common.drain_seconds),
        shutdown_delay: Duration::from_secs(common.shutdown_delay_seconds),
        max_message_bytes: common.max_message_bytes,
        bearer: Some(bearer),
        limiter: Arc::new(limiter(&settings.rate_limits).await?),
        trusted_proxies: TrustedProxies::parse(&settings.rate_limits.trusted_proxies).map_err(|e| {
            SettingError::new("VALORA_TRUSTED_PROXIES", e.to_string(), "list addresses or networks such as 10.0.0.0/8")
        })?,
    })
}

fn rate(setting: &str, value: &str) -> Result<Option<Rate>, SettingError> {
    parse_rate(value).map_err(|e| SettingError::new(setting, e.to_string(), "for example 100/second"))
}

/// Builds the rate limiter from its settings.
async fn limiter(args: &RateLimitArgs) -> anyhow::Result<Limiter> {
    let mut methods = Vec::new();
    for entry in args.rate_limit_methods.split(',').map(str::trim).filter(|e| !e.is_empty() && *e != "off") {
        let setting = "VALORA_RATE_LIMIT_METHODS";
        let Some((method, value)) = entry.split_once('=') else {
            return Err(SettingError::new(setting, format!("{entry:?} is not SERVICE/METHOD=RATE"), "for example valora.auth.v1.AuthService/Login=10/minute").into());
        };
        let known = method
            .split_once('/')
            .and_then(|(service, name)| valora_proto::methods_of(service).map(|m| m.iter().any(|n| n == name)))
            .unwrap_or(false);
        if !known {
            return Err(SettingError::new(setting, format!("{method:?} is not a method of the API"), "use SERVICE/METHOD, such as valora.auth.v1.AuthService/Login").into());
        }
        if let Some(rate) = rate(setting, value)? {
            methods.push((format!("/{method}"), rate));
        }
    }
    let limits = Limits {
        per_key: rate("VALORA_RATE_LIMIT_PER_KEY", &args.rate_limit_per_key)?,
        per_user: rate("VALORA_RATE_LIMIT_PER_USER", &args.rate_limit_per_user)?,
        failures_per_address: rate("VALORA_RATE_LIMIT_FAILURES_PER_ADDRESS", &args.rate_limit_failures_per_address)?,
        methods,
    };
    let backend = match &args.redis_url {
        None => Backend::Local(LocalLimiter::default()),
        Some(url) => {
            let timeout = Duration::from_millis(args.redis_timeout_ms.max(1));
            let shared = SharedLimiter::new(url, &args.redis_prefix, timeout).await.map_err(|e| {
                SettingError::new("VALORA_REDIS_URL", format!("cannot use it: {e}"), "check the URL and that Redis is running")
            })?;
            tracing::info!("rate limits shared through Redis");
            Backend::Shared(shared)
        }
    };
    Ok(Limiter::new(backend, limits))
}
