//! `valora dev`: the whole mesh in one process, over real mutual TLS.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use valora_mesh::apikey::{KeyVerifier, StaticKeys};
use valora_mesh::identity::Identity;
use valora_mesh::pki;
use valora_telemetry::Readiness;

use crate::cli::{DevArgs, MigrationTarget};
use crate::commands::{migrate, serve};
use crate::components::{self, bind, live_mesh_tls};
use valora_proto::marketplace::v1::marketplace_service_server::SERVICE_NAME as MARKETPLACE_SERVICE;
use crate::edge;
use crate::settings::{database_url, static_keys};

/// File under the state folder that keeps the generated development key.
const DEV_KEY_FILE: &str = "dev-api-key";

pub(crate) async fn run(args: &DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir).with_context(|| {
        format!("VALORA_STATE_DIR: cannot create {}", args.state_dir.display())
    })?;
    if !pki::has_ca(&args.common.certs_dir) {
        pki::write_dev_pki(&args.common.certs_dir, false).with_context(|| {
            format!("VALORA_CERTS_DIR: cannot write certificates to {}", args.common.certs_dir.display())
        })?;
        tracing::info!(dir = %args.common.certs_dir.display(), "development certificates created");
    }
    let (keys, generated) = dev_keys(args)?;
    let keys: Arc<dyn KeyVerifier> = Arc::new(keys);

    let url = match &args.marketplace_database_url {
        Some(url) => database_url("MARKETPLACE_DATABASE_URL", url)?,
        None => sqlite_url(&args.state_dir.join("marketplace.db")),
    };
    let policy = components::policy(&args.policy, MARKETPLACE_SERVICE)?;
    migrate::migrate(MigrationTarget::Marketplace, &url).await?;
    let store = components::marketplace_store(&url).await?;
    let market_tls = live_mesh_tls(&args.common.certs_dir, &Identity::marketplace())?;
    let edge_tls = live_mesh_tls(&args.common.certs_dir, &Identity::edge())?;
    let threshold = serve::threshold(&args.common);

    let (_stop, shutdown) = components::shutdown_on_signal();
    let mut readiness = Readiness::default();
    readiness.add("marketplace database", components::database_check(store.clone()));
    readiness.add("marketplace certificate", components::certificate_check(market_tls.clone(), threshold));
    readiness.add("edge certificate", components::certificate_check(edge_tls.clone(), threshold));
    let admin = components::start_admin(args.common.admin_addr, readiness, shutdown.clone()).await?;

    let market_listener =
        bind(args.marketplace_addr, "VALORA_MARKETPLACE_ADDR (--marketplace-addr)").await?;
    let market_addr = market_listener.local_addr()?;
    let market = components::marketplace_server(
        market_listener,
        market_tls,
        store,
        keys.clone(),
        policy,
        &args.common,
        shutdown.clone(),
    )?;

    let edge_listener = bind(args.edge.edge_addr, "VALORA_EDGE_ADDR (--edge-addr)").await?;
    let edge_addr = edge_listener.local_addr()?;
    let options = edge::options(&args.edge, &args.common, keys, &edge_tls, &market_addr.to_string())?;

    let market_task = tokio::spawn(market.run(shutdown.clone()));
    let edge_task = tokio::spawn(valora_gateway::run(edge_listener, options, shutdown));
    print_banner(args, edge_addr, market_addr, admin, generated.as_deref());

    let (market_result, edge_result) = tokio::join!(market_task, edge_task);
    market_result.context("marketplace task failed")??;
    edge_result.context("edge task failed")??;
    tracing::info!("development mesh stopped");
    Ok(())
}

/// The static keys from the settings, or the stored development key, or a
/// freshly generated one (returned so it can be shown once).
fn dev_keys(args: &DevArgs) -> anyhow::Result<(StaticKeys, Option<String>)> {
    if let Some(keys) = static_keys(&args.keys)? {
        return Ok((keys, None));
    }
    let path = args.state_dir.join(DEV_KEY_FILE);
    if path.is_file() {
        let keys = crate::settings::read_keys_file(&path)?;
        return Ok((keys, None));
    }
    let key = format!("vdev_{}", valora_mesh::apikey::hex(&rand::random::<[u8; 32]>()));
    pki::write_file(&path, &format!("{key}\n"), true)
        .with_context(|| format!("cannot store the development API key in {}", path.display()))?;
    let keys = StaticKeys::parse(&key).context("generated key rejected")?;
    Ok((keys, Some(key)))
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

fn print_banner(
    args: &DevArgs,
    edge: std::net::SocketAddr,
    market: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    generated_key: Option<&str>,
) {
    let key_file: PathBuf = args.state_dir.join(DEV_KEY_FILE);
    let key_expr = if args.keys.api_keys.is_some() || args.keys.api_keys_file.is_some() {
        "$MARKETPLACE_API_KEY".to_owned()
    } else {
        format!("$(cat {})", key_file.display())
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "VALORA mesh development stack is running");
    let _ = writeln!(out, "  edge         {edge}  (gRPC over h2c, grpc-web over HTTP/1.1 and HTTP/2)");
    let _ = writeln!(out, "  marketplace  {market}  (mutual TLS only)");
    let _ = writeln!(out, "  admin        http://{admin}/metrics  /healthz  /readyz");
    let _ = writeln!(out, "  certificates {}", args.common.certs_dir.display());
    let _ = writeln!(out, "  state        {}", args.state_dir.display());
    if let Some(key) = generated_key {
        let _ = writeln!(out, "Generated development API key (shown once, kept in {}):", key_file.display());
        let _ = writeln!(out, "  {key}");
    }
    let _ = writeln!(out, "Try:");
    let _ = writeln!(out, "  grpcurl -plaintext -H \"x-api-key: {key_expr}\" {edge} list");
    let _ = writeln!(out, "Stop with Ctrl-C.");
    let _ = out.flush();
}
