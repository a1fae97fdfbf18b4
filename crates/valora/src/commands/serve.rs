//! `valora serve edge|marketplace`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use valora_mesh::apikey::KeyVerifier;
use valora_mesh::identity::Identity;
use valora_telemetry::Readiness;

use crate::cli::{EdgeArgs, MarketplaceArgs, ServeCommand};
use crate::components::{self, bind};
use valora_proto::marketplace::v1::marketplace_service_server::SERVICE_NAME as MARKETPLACE_SERVICE;
use crate::edge;
use crate::settings::{SettingError, database_url, static_keys};

pub(crate) async fn run(command: &ServeCommand) -> anyhow::Result<()> {
    match command {
        ServeCommand::Edge(args) => edge_main(args).await,
        ServeCommand::Marketplace(args) => marketplace_main(args).await,
    }
}

fn required_keys(args: &crate::cli::KeyArgs) -> anyhow::Result<Arc<dyn KeyVerifier>> {
    let keys = static_keys(args)?.ok_or_else(|| {
        SettingError::new(
            "MARKETPLACE_API_KEY",
            "is not set, so no API key could ever be accepted",
            "set it (or MARKETPLACE_API_KEY_FILE) to one or more keys of at least 32 characters",
        )
    })?;
    Ok(Arc::new(keys))
}

async fn edge_main(args: &EdgeArgs) -> anyhow::Result<()> {
    let keys = required_keys(&args.keys)?;
    let tls = components::live_mesh_tls(&args.common.certs_dir, &Identity::edge())?;
    let (_stop, shutdown) = components::shutdown_on_signal();
    let mut readiness = Readiness::default();
    readiness.add("edge certificate", components::certificate_check(tls.clone(), threshold(&args.common)));
    components::start_admin(args.common.admin_addr, readiness, shutdown.clone()).await?;
    let listener = bind(args.edge.edge_addr, "VALORA_EDGE_ADDR (--edge-addr)").await?;
    let options = edge::options(&args.edge, &args.common, keys, &tls, &args.marketplace_addr)?;
    tracing::info!(addr = %listener.local_addr()?, "edge listening");
    valora_gateway::run(listener, options, shutdown).await?;
    tracing::info!("edge stopped");
    Ok(())
}

async fn marketplace_main(args: &MarketplaceArgs) -> anyhow::Result<()> {
    let keys = required_keys(&args.keys)?;
    let url = database_url("MARKETPLACE_DATABASE_URL", &args.marketplace_database_url)?;
    let policy = components::policy(&args.policy, MARKETPLACE_SERVICE)?;
    let tls = components::live_mesh_tls(&args.common.certs_dir, &Identity::marketplace())?;
    let store = components::marketplace_store(&url).await?;
    let (_stop, shutdown) = components::shutdown_on_signal();
    let mut readiness = Readiness::default();
    readiness.add("database", components::database_check(store.clone()));
    readiness.add("certificate", components::certificate_check(tls.clone(), threshold(&args.common)));
    components::start_admin(args.common.admin_addr, readiness, shutdown.clone()).await?;
    let listener = bind(args.marketplace_addr, "VALORA_MARKETPLACE_ADDR (--marketplace-addr)").await?;
    tracing::info!(addr = %listener.local_addr()?, "marketplace listening");
    let server = components::marketplace_server(
        listener,
        tls,
        store,
        keys,
        policy,
        &args.common,
        shutdown.clone(),
    )?;
    server.run(shutdown).await.context("marketplace server failed")?;
    tracing::info!("marketplace stopped");
    Ok(())
}

pub(crate) fn threshold(common: &crate::cli::CommonArgs) -> Duration {
    Duration::from_secs(common.cert_expiry_threshold_seconds)
}
