//! `valora serve edge|marketplace|auth`.

use std::time::Duration;

use anyhow::Context as _;
use valora_mesh::apikey::StaticKeys;
use valora_mesh::identity::Identity;
use valora_proto::auth::v1::api_key_verifier_server::SERVICE_NAME as KEY_VERIFIER_SERVICE;
use valora_proto::auth::v1::auth_service_server::SERVICE_NAME as AUTH_SERVICE;
use valora_proto::marketplace::v1::marketplace_service_server::SERVICE_NAME as MARKETPLACE_SERVICE;
use valora_proto::marketplace::v1::webhook_service_server::SERVICE_NAME as WEBHOOK_SERVICE;
use valora_telemetry::Readiness;

use crate::cli::{AuthArgs, EdgeArgs, KeyArgs, MarketplaceArgs, MigrationTarget, ServeCommand};
use crate::commands::migrate;
use crate::components::{self, bind};
use crate::settings::{production_database_url, static_keys};
use crate::{auth, edge};

pub(crate) async fn run(command: &ServeCommand) -> anyhow::Result<()> {
    match command {
        ServeCommand::Edge(args) => edge_main(args).await,
        ServeCommand::Marketplace(args) => marketplace_main(args).await,
        ServeCommand::Auth(args) => auth_main(args).await,
    }
}

/// Static keys are optional once the auth service issues keys.
fn optional_keys(args: &KeyArgs) -> anyhow::Result<Option<StaticKeys>> {
    let keys = static_keys(args)?;
    match &keys {
        Some(keys) => tracing::info!(count = keys.len(), ids = ?keys.ids(), "static API keys loaded"),
        None => tracing::info!("no static API keys; only keys issued by the auth service are accepted"),
    }
    if let (Some(keys), Some(path)) = (&keys, &args.api_keys_file) {
        crate::settings::reload_keys_file(path, keys);
    }
    Ok(keys)
}

async fn edge_main(args: &EdgeArgs) -> anyhow::Result<()> {
    let static_keys = optional_keys(&args.keys)?;
    let tls = components::live_mesh_tls(&args.common.certs_dir, &Identity::edge())?;
    let auth = auth::auth_pool(&tls, &args.auth_addr, &args.common).await?;
    let marketplace = edge::marketplace_pool(&tls, &args.marketplace_addr, &args.common).await?;
    let keys = auth::remote_keys(static_keys, auth.clone());
    let (_stop, shutdown) = components::shutdown_on_signal();
    let mut readiness = Readiness::default();
    readiness.add("edge certificate", components::certificate_check(tls.clone(), threshold(&args.common)));
    components::start_admin(args.common.admin_addr, readiness, shutdown.clone()).await?;
    let listener = bind(args.edge.edge_addr, "VALORA_EDGE_ADDR (--edge-addr)").await?;
    let options = edge::options(&args.edge, &args.common, &args.tokens, keys, marketplace, auth).await?;
    tracing::info!(addr = %listener.local_addr()?, "edge listening");
    valora_gateway::run(listener, options, shutdown).await?;
    tracing::info!("edge stopped");
    Ok(())
}

async fn marketplace_main(args: &MarketplaceArgs) -> anyhow::Result<()> {
    let static_keys = optional_keys(&args.keys)?;
    let url = production_database_url(
        "MARKETPLACE_DATABASE_URL",
        &args.marketplace_database_url,
        args.common.database_allow_plaintext,
    )?;
    let policy = components::policy(&args.policy, &[MARKETPLACE_SERVICE, WEBHOOK_SERVICE])?;
    let webhooks = crate::webhooks::WebhookParts::new(&args.webhooks, None)?;
    let tls = components::live_mesh_tls(&args.common.certs_dir, &Identity::marketplace())?;
    migrate::ensure_migrated(MigrationTarget::Marketplace, &url, "MARKETPLACE_DATABASE_URL").await?;
    let keys = auth::remote_keys(static_keys, auth::auth_pool(&tls, &args.auth_addr, &args.common).await?);
    let store = components::marketplace_store(&url).await?;
    let (_stop, shutdown) = components::shutdown_on_signal();
    let mut readiness = Readiness::default();
    readiness.add("database", components::database_check(store.clone()));
    readiness.add("certificate", components::certificate_check(tls.clone(), threshold(&args.common)));
    components::start_admin(args.common.admin_addr, readiness, shutdown.clone()).await?;
    let listener = bind(args.marketplace_addr, "VALORA_MARKETPLACE_ADDR (--marketplace-addr)").await?;
    tracing::info!(addr = %listener.local_addr()?, "marketplace listening");
    let server =
        components::marketplace_server(listener, tls, store, keys, policy, &args.common, &webhooks, shutdown.clone())?;
    server.run(shutdown).await.context("marketplace server failed")?;
    tracing::info!("marketplace stopped");
    Ok(())
}

async fn auth_main(args: &AuthArgs) -> anyhow::Result<()> {
    let static_keys = optional_keys(&args.keys)?;
    let url = production_database_url(
        "AUTH_DATABASE_URL",
        &args.auth_database_url,
        args.common.database_allow_plaintext,
    )?;
    let policy = components::policy(&args.policy, &[AUTH_SERVICE, KEY_VERIFIER_SERVICE])?;
    let tls = components::live_mesh_tls(&args.common.certs_dir, &Identity::auth())?;
    migrate::ensure_migrated(MigrationTarget::Auth, &url, "AUTH_DATABASE_URL").await?;
    let pepper = auth::pepper(&args.auth.pepper, None)?;
    let signing = auth::signing_keys(args.auth.signing_keys_dir.as_deref(), None)?;
    let service = auth::build(&args.auth, &url, pepper, signing).await?;
    let (_stop, shutdown) = components::shutdown_on_signal();
    let mut readiness = Readiness::default();
    readiness.add("database", components::auth_database_check(service.store().clone()));
    readiness.add("certificate", components::certificate_check(tls.clone(), threshold(&args.common)));
    components::start_admin(args.common.admin_addr, readiness, shutdown.clone()).await?;
    let listener = bind(args.auth_addr, "VALORA_AUTH_ADDR (--auth-addr)").await?;
    tracing::info!(addr = %listener.local_addr()?, "auth listening");
    let server = components::auth_server(listener, tls, service, static_keys, policy, &args.common)?;
    server.run(shutdown).await.context("auth server failed")?;
    tracing::info!("auth stopped");
    Ok(())
}

pub(crate) fn threshold(common: &crate::cli::CommonArgs) -> Duration {
    Duration::from_secs(common.cert_expiry_threshold_seconds)
}
