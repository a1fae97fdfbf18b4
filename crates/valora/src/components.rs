//! Building and starting the processes' parts: listeners, services, the
//! admin endpoint and signal handling.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{CommonArgs, PolicyArgs};
use crate::settings::SettingError;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use valora_marketplace::events::EventHub;
use valora_marketplace::{Marketplace, MarketplaceApi, PoolOptions, Store, WebhookApi};
use valora_mesh::apikey::KeyVerifier;
use valora_mesh::balance::UpstreamPool;
use valora_mesh::guard::GuardConfig;
use valora_mesh::identity::Identity;
use valora_mesh::policy::{Policy, PolicyMode};
use valora_mesh::server::InternalServer;
use valora_mesh::tls::{MeshTls, TlsFiles};
use valora_auth::apikeys::KEY_PREFIX;
use valora_auth::grpc::AuthApi;
use valora_auth::local_keys::LocalKeys;
use valora_auth::service::Auth;
use valora_mesh::apikey::StaticKeys;
use valora_mesh::apikey_remote::CompositeKeys;
use valora_proto::auth::v1::api_key_verifier_server::{ApiKeyVerifierServer, SERVICE_NAME as KEY_VERIFIER_SERVICE};
use valora_proto::auth::v1::auth_service_server::{AuthServiceServer, SERVICE_NAME as AUTH_SERVICE};
use valora_proto::marketplace::v1::marketplace_service_server::{
    MarketplaceServiceServer, SERVICE_NAME as MARKETPLACE_SERVICE,
};
use valora_proto::marketplace::v1::webhook_service_server::{WebhookServiceServer, SERVICE_NAME as WEBHOOK_SERVICE};
use valora_telemetry::{AdminServer, Readiness};

/// Binds a TCP listener, naming the setting on failure.
pub(crate) async fn bind(addr: SocketAddr, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("{setting}: cannot listen on {addr}; choose a free address or stop the process using it")
    })
}

/// Loads the mesh identity `identity` from `certs_dir`.
/// The replicas of the internal service `name` listed in `targets`
/// (comma-separated `HOST:PORT`, each host an address or DNS name), with
/// discovery and health checks running.
pub(crate) async fn upstream_pool(
    name: &'static str,
    tls: &Arc<MeshTls>,
    targets: &str,
    expected: &Identity,
    setting: &str,
    common: &CommonArgs,
) -> anyhow::Result<Arc<UpstreamPool>> {
    // One message plus its 5-byte gRPC frame header.
    let max_request_bytes = common.max_message_bytes.saturating_add(5);
    let pool = UpstreamPool::new(name, tls, targets, expected, max_request_bytes).await.map_err(|e| {
        SettingError::new(setting, e.to_string(), "list HOST:PORT entries, such as auth-0:50051,auth-1:50051")
    })?;
    pool.spawn_maintenance();
    Ok(pool)
}

pub(crate) fn mesh_tls(certs_dir: &Path, identity: &Identity) -> anyhow::Result<Arc<MeshTls>> {
    let files = TlsFiles::in_dir(certs_dir, identity);
    MeshTls::load(files, identity).with_context(|| {
        format!(
            "cannot load the {identity} certificate from {} (VALORA_CERTS_DIR); \
             run `valora certs dev` for development certificates",
            certs_dir.display()
        )
    })
}

/// The built-in authorization policy: the edge and engineers may call the
/// public services (engineers also reflection); the edge and the
/// marketplace may verify API keys; nothing else is allowed.
pub(crate) fn default_policy() -> Policy {
    Policy::new(PolicyMode::Enforce)
        .allow_service(Identity::edge(), MARKETPLACE_SERVICE)
        .allow_service(Identity::edge(), AUTH_SERVICE)
        .allow_service(Identity::edge(), KEY_VERIFIER_SERVICE)
        .allow_service(Identity::marketplace(), KEY_VERIFIER_SERVICE)
        .allow_service(Identity::edge(), WEBHOOK_SERVICE)
        .allow_service(Identity::engineer(), WEBHOOK_SERVICE)
        .allow_service(Identity::engineer(), MARKETPLACE_SERVICE)
        .allow_service(Identity::engineer(), AUTH_SERVICE)
        .allow_service(Identity::engineer(), "grpc.reflection.v1.ServerReflection")
        .allow_service(Identity::engineer(), "grpc.reflection.v1alpha.ServerReflection")
}

/// Loads the policy file, or the built-in policy, and checks that every
/// method of `services` has a grant.
pub(crate) fn policy(args: &PolicyArgs, services: &[&str]) -> anyhow::Result<Arc<Policy>> {
    let (policy, source) = match &args.policy_file {
        Some(path) => (Policy::from_file(path)?, path.display().to_string()),
        None => (default_policy(), "built-in".to_owned()),
    };
    for service in services {
        policy.ensure_covers(service, &source)?;
    }
    if policy.mode() == PolicyMode::Audit {
        tracing::warn!(policy = %source, "authorization policy in audit mode: denials are logged, not enforced");
    }
    Ok(Arc::new(policy))
}

/// Loads the mesh identity and starts reloading it when its files change.
pub(crate) fn live_mesh_tls(certs_dir: &Path, identity: &Identity) -> anyhow::Result<Arc<MeshTls>> {
    let tls = mesh_tls(certs_dir, identity)?;
    tls.spawn_watcher();
    Ok(tls)
}

/// A readiness check that fails when `tls` expires within `threshold`.
pub(crate) fn certificate_check(tls: Arc<MeshTls>, threshold: Duration) -> valora_telemetry::ReadinessCheck {
    Arc::new(move || {
        let tls = tls.clone();
        Box::pin(async move {
            if tls.expires_within(threshold) {
                Err(format!(
                    "certificate of {} expires in {} seconds",
                    tls.identity(),
                    tls.seconds_to_expiry()
                ))
            } else {
                Ok(())
            }
        })
    })
}

/// Connects to the marketplace database and exports its pool gauges.
pub(crate) async fn marketplace_store(url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(url, &PoolOptions::default())
        .await
        .context("MARKETPLACE_DATABASE_URL: cannot connect to the marketplace database")?;
    spawn_pool_gauges("marketplace", store.connection().clone());
    Ok(store)
}

/// The marketplace's internal server, ready to run.
pub(crate) fn marketplace_server(
    listener: TcpListener,
    tls: Arc<MeshTls>,
    store: Store,
    keys: Arc<dyn KeyVerifier>,
    policy: Arc<Policy>,
    common: &CommonArgs,
    webhooks: &crate::webhooks::WebhookParts,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<InternalServer> {
    let security_headers = crate::settings::security_headers(&common.headers)?;
    let marketplace = Marketplace::new(store.clone(), EventHub::default());
    webhooks.start_dispatcher(&store, marketplace.outbox_written(), shutdown.clone())?;
    let api = MarketplaceApi::new(marketplace, shutdown);
    let service = MarketplaceServiceServer::new(api)
        .max_decoding_message_size(common.max_message_bytes);
    let webhook_service = WebhookServiceServer::new(WebhookApi::new(webhooks.endpoints(&store)))
        .max_decoding_message_size(common.max_message_bytes);
    Ok(InternalServer {
        name: "marketplace",
        listener,
        tls,
        guard: GuardConfig {
            policy,
            keys,
            anonymous_services: HashSet::new(),
        },
        routes: Routes::new(service).add_service(webhook_service),
        services: vec![MARKETPLACE_SERVICE.to_owned(), WEBHOOK_SERVICE.to_owned()],
        drain: Duration::from_secs(common.drain_seconds),
        expiry_threshold: Duration::from_secs(common.cert_expiry_threshold_seconds),
        security_headers,
        shutdown_delay: Duration::from_secs(common.shutdown_delay_seconds),
        on_handshake_failure: Arc::new(|reason| {
            metrics::counter!("valora_tls_handshake_failures_total", "listener" => "marketplace", "reason" => reason.as_str())
                .increment(1);
        }),
    })
}

/// The auth service's internal server, ready to run.
pub(crate) fn auth_server(
    listener: TcpListener,
    tls: Arc<MeshTls>,
    auth: Auth,
    static_keys: Option<StaticKeys>,
    policy: Arc<Policy>,
    common: &CommonArgs,
) -> anyhow::Result<InternalServer> {
    let security_headers = crate::settings::security_headers(&common.headers)?;
    let keys: Arc<dyn KeyVerifier> = Arc::new(CompositeKeys {
        static_keys: static_keys.unwrap_or_default(),
        issued: Some(Arc::new(LocalKeys(auth.clone()))),
        issued_prefix: KEY_PREFIX,
    });
    let api = AuthApi::new(auth);
    let routes = Routes::new(
        AuthServiceServer::new(api.clone()).max_decoding_message_size(common.max_message_bytes),
    )
    .add_service(ApiKeyVerifierServer::new(api).max_decoding_message_size(common.max_message_bytes));
    Ok(InternalServer {
        name: "auth",
        listener,
        tls,
        guard: GuardConfig {
            policy,
            keys,
            anonymous_services: HashSet::from([KEY_VERIFIER_SERVICE.to_owned()]),
        },
        routes,
        services: vec![AUTH_SERVICE.to_owned(), KEY_VERIFIER_SERVICE.to_owned()],
        drain: Duration::from_secs(common.drain_seconds),
        expiry_threshold: Duration::from_secs(common.cert_expiry_threshold_seconds),
        security_headers,
        shutdown_delay: Duration::from_secs(common.shutdown_delay_seconds),
        on_handshake_failure: Arc::new(|reason| {
            metrics::counter!("valora_tls_handshake_failures_total", "listener" => "auth", "reason" => reason.as_str())
                .increment(1);
        }),
    })
}

/// Starts the admin endpoint on `addr`.
pub(crate) async fn start_admin(
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let metrics = valora_telemetry::install_metrics();
    let listener = bind(addr, "VALORA_ADMIN_ADDR (--admin-addr)").await?;
    let server = AdminServer::new(listener, metrics, readiness);
    let local = server.local_addr()?;
    tokio::spawn(server.serve(shutdown));
    Ok(local)
}

/// A readiness check that pings a database.
pub(crate) fn database_check(store: Store) -> valora_telemetry::ReadinessCheck {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    })
}

/// A readiness check that pings the auth database.
pub(crate) fn auth_database_check(store: valora_auth::store::Store) -> valora_telemetry::ReadinessCheck {
    Arc::new(move || {
        let store = store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    })
}

/// Exports `valora_db_pool_connections{component,state}` and
/// `valora_db_pool_max_connections{component}` every 10 seconds.
pub(crate) fn spawn_pool_gauges(component: &'static str, db: sea_orm::DatabaseConnection) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let (size, idle, max) = match db.get_database_backend() {
                sea_orm::DbBackend::Postgres => {
                    let pool = db.get_postgres_connection_pool();
                    (pool.size(), pool.num_idle() as u32, pool.options().get_max_connections())
                }
                sea_orm::DbBackend::Sqlite => {
                    let pool = db.get_sqlite_connection_pool();
                    (pool.size(), pool.num_idle() as u32, pool.options().get_max_connections())
                }
                _ => return,
            };
            let in_use = size.saturating_sub(idle);
            metrics::gauge!("valora_db_pool_connections", "component" => component, "state" => "in_use").set(f64::from(in_use));
            metrics::gauge!("valora_db_pool_connections", "component" => component, "state" => "idle").set(f64::from(idle));
            metrics::gauge!("valora_db_pool_max_connections", "component" => component).set(f64::from(max));
        }
    });
}

/// Turns true on SIGTERM or SIGINT.
pub(crate) fn shutdown_on_signal() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let signal_tx = tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        let _ = signal_tx.send(true);
    });
    (tx, rx)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
