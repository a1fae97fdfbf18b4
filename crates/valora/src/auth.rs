//! Assembling the auth service and the key verifiers that call it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use valora_auth::apikeys::{KEY_PREFIX, MIN_PEPPER_BYTES, Pepper};
use valora_auth::password::hasher::{Argon2Settings, Hasher};
use valora_auth::password::policy::PasswordPolicy;
use valora_auth::service::{Auth, AuthConfig};
use valora_auth::store::Store;
use valora_auth::tokens::signing::{SigningKeys, write_new_key};
use valora_mesh::apikey::{KeyVerifier, StaticKeys};
use valora_mesh::apikey_remote::{CompositeKeys, RemoteKeys};
use valora_mesh::identity::Identity;
use valora_mesh::balance::UpstreamPool;
use valora_mesh::tls::MeshTls;

use crate::cli::{AuthSettings, CommonArgs, PepperArgs};
use crate::settings::SettingError;

/// File under the development state folder holding the pepper.
const DEV_PEPPER_FILE: &str = "auth-pepper";
/// Folder under the development state folder holding signing keys.
const DEV_SIGNING_DIR: &str = "signing-keys";

/// Reads the pepper from its variable or file. In development
/// (`dev_state` set) a missing pepper is generated and kept in the state
/// folder.
pub(crate) fn pepper(args: &PepperArgs, dev_state: Option<&Path>) -> anyhow::Result<Pepper> {
    let setting = "AUTH_API_KEY_PEPPER";
    let bytes = match (&args.api_key_pepper, &args.api_key_pepper_file, dev_state) {
        (Some(_), Some(_), _) => {
            return Err(SettingError::new(setting, "is set together with AUTH_API_KEY_PEPPER_FILE", "set only one").into());
        }
        (Some(value), None, _) => value.trim().as_bytes().to_vec(),
        (None, Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("AUTH_API_KEY_PEPPER_FILE: cannot read {}", path.display()))?
            .trim()
            .as_bytes()
            .to_vec(),
        (None, None, Some(state)) => dev_pepper(state)?,
        (None, None, None) => {
            return Err(SettingError::new(
                setting,
                "is not set",
                format!("set it (or AUTH_API_KEY_PEPPER_FILE) to at least {MIN_PEPPER_BYTES} random bytes, for example `openssl rand -hex 32`"),
            )
            .into());
        }
    };
    Pepper::new(bytes).ok_or_else(|| {
        SettingError::new(setting, format!("is shorter than {MIN_PEPPER_BYTES} bytes"), "use `openssl rand -hex 32`").into()
    })
}

fn dev_pepper(state: &Path) -> anyhow::Result<Vec<u8>> {
    let path = state.join(DEV_PEPPER_FILE);
    if !path.is_file() {
        let value = valora_mesh::apikey::hex(&rand::random::<[u8; 32]>());
        valora_mesh::pki::write_file(&path, &value, true)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(std::fs::read_to_string(&path)?.trim().as_bytes().to_vec())
}

/// Loads the signing keys from their folder; in development the folder
/// defaults to the state folder and gets a first key when empty.
pub(crate) fn signing_keys(dir: Option<&Path>, dev_state: Option<&Path>) -> anyhow::Result<SigningKeys> {
    let dir = match (dir, dev_state) {
        (Some(dir), _) => dir.to_owned(),
        (None, Some(state)) => {
            let dir = state.join(DEV_SIGNING_DIR);
            let empty = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
            if empty {
                write_new_key(&dir)?;
            }
            dir
        }
        (None, None) => {
            return Err(SettingError::new(
                "AUTH_SIGNING_KEYS_DIR",
                "is not set",
                "point it at a folder of Ed25519 keys; `valora auth new-signing-key --dir DIR` makes one",
            )
            .into());
        }
    };
    let keys = SigningKeys::load(&dir).with_context(|| "AUTH_SIGNING_KEYS_DIR: cannot load signing keys")?;
    keys.spawn_reloader();
    Ok(keys)
}

/// Builds the auth service's domain logic.
pub(crate) async fn build(
    settings: &AuthSettings,
    url: &str,
    pepper: Pepper,
    signing: SigningKeys,
) -> anyhow::Result<Auth> {
    let argon2 = Argon2Settings {
        memory_kib: settings.argon2_memory_kib,
        iterations: settings.argon2_iterations,
        parallelism: settings.argon2_parallelism,
    };
    let concurrency = match settings.hash_concurrency {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let hasher = Hasher::new(argon2, concurrency)
        .map_err(|e| SettingError::new("AUTH_ARGON2_MEMORY_KIB / _ITERATIONS / _PARALLELISM", e.to_string(), "use OWASP's values: 19456, 2, 1"))?;
    if settings.password_min_chars < 8 || settings.password_min_chars > settings.password_max_chars {
        return Err(SettingError::new(
            "AUTH_PASSWORD_MIN_CHARS",
            format!("{} is below 8 or above AUTH_PASSWORD_MAX_CHARS", settings.password_min_chars),
            "use 15 (NIST SP 800-63B-4 for passwords used alone)",
        )
        .into());
    }
    let config = AuthConfig {
        issuer: settings.tokens.token_issuer.clone(),
        audience: settings.tokens.token_audience.clone(),
        access_ttl: Duration::from_secs(settings.access_token_ttl_seconds),
        refresh_ttl: Duration::from_secs(settings.refresh_token_ttl_seconds),
        password_policy: PasswordPolicy {
            min_chars: settings.password_min_chars,
            max_chars: settings.password_max_chars,
            ..PasswordPolicy::default()
        },
    };
    let store = Store::connect(url, Duration::from_secs(3))
        .await
        .context("AUTH_DATABASE_URL: cannot connect to the auth database")?;
    crate::components::spawn_pool_gauges("auth", store.db().clone());
    Ok(Auth::new(store, hasher, signing, pepper, config))
}

/// Static keys plus keys issued by the auth service replicas in `auth`.
pub(crate) fn remote_keys(static_keys: Option<StaticKeys>, auth: Arc<UpstreamPool>) -> Arc<dyn KeyVerifier> {
    Arc::new(CompositeKeys {
        static_keys: static_keys.unwrap_or_default(),
        issued: Some(Arc::new(RemoteKeys::new(auth))),
        issued_prefix: KEY_PREFIX,
    })
}

/// The auth service replicas listed in `VALORA_AUTH_ADDR`.
pub(crate) async fn auth_pool(
    tls: &Arc<MeshTls>,
    targets: &str,
    common: &CommonArgs,
) -> anyhow::Result<Arc<UpstreamPool>> {
    crate::components::upstream_pool("auth", tls, targets, &Identity::auth(), "VALORA_AUTH_ADDR", common).await
}
