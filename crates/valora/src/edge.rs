//! Assembling the edge's options from settings.

use std::sync::Arc;
use std::time::Duration;

use valora_gateway::bearer::BearerVerifier;
use valora_gateway::{EdgeOptions, Upstream};
use valora_proto::auth::v1::auth_service_server::SERVICE_NAME as AUTH_SERVICE;
use valora_mesh::apikey::KeyVerifier;
use valora_mesh::identity::Identity;
use valora_mesh::tls::{MeshTls, mesh_channel};
use valora_proto::marketplace::v1::marketplace_service_server::SERVICE_NAME as MARKETPLACE_SERVICE;

use crate::cli::{CommonArgs, EdgeSettings, TokenArgs};
use crate::settings::{SettingError, security_headers};

/// Checks the edge settings and builds its options.
pub(crate) fn options(
    settings: &EdgeSettings,
    common: &CommonArgs,
    tokens: &TokenArgs,
    keys: Arc<dyn KeyVerifier>,
    tls: &Arc<MeshTls>,
    marketplace_addr: &str,
    auth_addr: &str,
) -> anyhow::Result<EdgeOptions> {
    let cors_origins = valora_gateway::cors::parse_origins(&settings.cors_allow_origins)
        .map_err(|e| SettingError::new("VALORA_CORS_ALLOW_ORIGINS", e.to_string(), "fix or remove that entry"))?;
    let channel = mesh_channel(tls, marketplace_addr, &Identity::marketplace()).map_err(|e| {
        SettingError::new("VALORA_MARKETPLACE_ADDR", e.to_string(), "use HOST:PORT such as 127.0.0.1:50052")
    })?;
    let auth = mesh_channel(tls, auth_addr, &Identity::auth()).map_err(|e| {
        SettingError::new("VALORA_AUTH_ADDR", e.to_string(), "use HOST:PORT such as 127.0.0.1:50051")
    })?;
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
            (MARKETPLACE_SERVICE.to_owned(), Upstream { name: "marketplace", channel }),
            (AUTH_SERVICE.to_owned(), Upstream { name: "auth", channel: auth }),
        ],
        tls: public_tls,
        drain: Duration::from_secs(common.drain_seconds),
        shutdown_delay: Duration::from_secs(common.shutdown_delay_seconds),
        max_message_bytes: common.max_message_bytes,
        bearer: Some(bearer),
    })
}
