//! `valora dev`: the whole mesh in one process, over real mutual TLS.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::sync::watch;
use valora_mesh::apikey::StaticKeys;
use valora_mesh::identity::Identity;
use valora_mesh::pki;
use valora_telemetry::Readiness;

use crate::cli::{DevArgs, MigrationTarget};
use crate::commands::{migrate, serve};
use crate::auth;
use crate::components::{self, bind, live_mesh_tls};
use valora_proto::auth::v1::api_key_verifier_server::SERVICE_NAME as KEY_VERIFIER_SERVICE;
use valora_proto::auth::v1::auth_service_server::SERVICE_NAME as AUTH_SERVICE;
use valora_proto::marketplace::v1::marketplace_service_server::SERVICE_NAME as MARKETPLACE_SERVICE;
use valora_proto::marketplace::v1::webhook_service_server::SERVICE_NAME as WEBHOOK_SERVICE;
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
    let (static_keys, generated) = dev_keys(args)?;
    let policy = components::policy(
        &args.policy,
        &[MARKETPLACE_SERVICE, WEBHOOK_SERVICE, AUTH_SERVICE, KEY_VERIFIER_SERVICE],
    )?;
    let webhooks = crate::webhooks::WebhookParts::new(&args.webhooks, Some(&args.state_dir))?;

    let market_url = database_url_or_sqlite(args.marketplace_database_url.as_deref(), "MARKETPLACE_DATABASE_URL", &args.state_dir, "marketplace.db")?;
    let auth_url = database_url_or_sqlite(args.auth_database_url.as_deref(), "AUTH_DATABASE_URL", &args.state_dir, "auth.db")?;
    migrate::migrate_if_pending(MigrationTarget::Marketplace, &market_url).await?;
    migrate::migrate_if_pending(MigrationTarget::Auth, &auth_url).await?;
    let store = components::marketplace_store(&market_url).await?;
    let pepper = auth::pepper(&args.auth.pepper, Some(&args.state_dir))?;
    let signing = auth::signing_keys(args.auth.signing_keys_dir.as_deref(), Some(&args.state_dir))?;
    let auth_service = auth::build(&args.auth, &auth_url, pepper, signing).await?;

    let market_tls = live_mesh_tls(&args.common.certs_dir, &Identity::marketplace())?;
    let edge_tls = live_mesh_tls(&args.common.certs_dir, &Identity::edge())?;
    let auth_tls = live_mesh_tls(&args.common.certs_dir, &Identity::auth())?;
    let threshold = serve::threshold(&args.common);

    let (_stop, shutdown) = components::shutdown_on_signal();
    let mut readiness = Readiness::default();
    readiness.add("marketplace database", components::database_check(store.clone()));
    readiness.add("auth database", components::auth_database_check(auth_service.store().clone()));
    for (name, tls) in [("marketplace", &market_tls), ("edge", &edge_tls), ("auth", &auth_tls)] {
        readiness.add(format!("{name} certificate"), components::certificate_check(tls.clone(), threshold));
    }
    let admin = components::start_admin(args.common.admin_addr, readiness, shutdown.clone()).await?;

    let auth_listener = bind(args.auth_addr, "VALORA_AUTH_ADDR (--auth-addr)").await?;
    let auth_addr = auth_listener.local_addr()?.to_string();
    let auth_server = components::auth_server(
        auth_listener,
        auth_tls,
        auth_service,
        Some(static_keys.clone()),
        policy.clone(),
        &args.common,
    )?;

    let market_listener =
        bind(args.marketplace_addr, "VALORA_MARKETPLACE_ADDR (--marketplace-addr)").await?;
    let market_addr = market_listener.local_addr()?;
    let market_keys = auth::remote_keys(Some(static_keys.clone()), auth::auth_pool(&market_tls, &auth_addr, &args.common).await?);
    let market = components::marketplace_server(
        market_listener,
        market_tls,
        store,
        market_keys,
        policy,
        &args.common,
        &webhooks,
        shutdown.clone(),
    )?;

    let edge_listener = bind(args.edge.edge_addr, "VALORA_EDGE_ADDR (--edge-addr)").await?;
    let edge_addr = edge_listener.local_addr()?;
    let edge_auth = auth::auth_pool(&edge_tls, &auth_addr, &args.common).await?;
    let edge_market = edge::marketplace_pool(&edge_tls, &market_addr.to_string(), &args.common).await?;
    let edge_keys = auth::remote_keys(Some(static_keys), edge_auth.clone());
    let options =
        edge::options(&args.edge, &args.common, &args.auth.tokens, edge_keys, edge_market, edge_auth).await?;

    // The edge stops first and the internal services once it has drained,
    // so no call the edge accepted meets a service that stopped serving.
    // Event streams still end at the signal (the marketplace watches it).
    let (stop_internal, internal_shutdown) = watch::channel(false);
    let auth_task = tokio::spawn(auth_server.run(internal_shutdown.clone()));
    let market_task = tokio::spawn(market.run(internal_shutdown));
    let edge_task = tokio::spawn(valora_gateway::run(edge_listener, options, shutdown));
    print_banner(args, edge_addr, market_addr, &auth_addr, admin, generated.as_deref());

    let edge_result = edge_task.await;
    let _ = stop_internal.send(true);
    let (auth_result, market_result) = tokio::join!(auth_task, market_task);
    auth_result.context("auth task failed")??;
    market_result.context("marketplace task failed")??;
    edge_result.context("edge task failed")??;
    tracing::info!("development mesh stopped");
    Ok(())
}

fn database_url_or_sqlite(url: Option<&str>, setting: &str, state: &Path, file: &str) -> anyhow::Result<String> {
    Ok(match url {
        Some(url) => database_url(setting, url)?,
        None => sqlite_url(&state.join(file)),
    })
}

/// Returns the static keys from the settings (a MARKETPLACE_API_KEY_FILE is
/// then re-read every 2 s), or the stored development key, or a freshly
/// generated one (returned so it can be shown once).
fn dev_keys(args: &DevArgs) -> anyhow::Result<(StaticKeys, Option<String>)> {
    if let Some(keys) = static_keys(&args.keys)? {
        if let Some(path) = &args.keys.api_keys_file {
            crate::settings::reload_keys_file(path, &keys);
        }
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
    auth: &str,
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
    let _ = writeln!(out, "  auth         {auth}  (mutual TLS only)");
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
