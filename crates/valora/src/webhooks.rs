//! Assembling webhook delivery from settings.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Notify, watch};
use valora_marketplace::Store;
use valora_marketplace::webhooks::dispatcher::{DispatchSettings, Dispatcher};
use valora_marketplace::webhooks::endpoints::Webhooks;
use valora_marketplace::webhooks::signing::SealKey;
use valora_marketplace::webhooks::ssrf::{AllowedNetworks, UrlPolicy};

use crate::cli::WebhookArgs;
use crate::settings::SettingError;

/// The allowed-networks setting, as named in its errors.
const ALLOW_NETWORKS_SETTING: &str = "VALORA_WEBHOOK_ALLOW_NETWORKS (--webhook-allow-networks)";

/// File under the development state folder holding the webhook key.
const DEV_KEY_FILE: &str = "webhook-key";

/// The checked webhook settings.
pub(crate) struct WebhookParts {
    seal: Arc<SealKey>,
    policy: UrlPolicy,
    dispatch: DispatchSettings,
}

impl WebhookParts {
    /// Checks the settings; `dev_state` is set only under `valora dev`,
    /// which alone may allow loopback receivers and may generate the key.
    pub(crate) fn new(args: &WebhookArgs, dev_state: Option<&Path>) -> anyhow::Result<Self> {
        if args.webhook_allow_loopback && dev_state.is_none() {
            return Err(SettingError::new(
                "VALORA_WEBHOOK_ALLOW_LOOPBACK",
                "is true outside development, which would let sellers reach services on this host",
                "remove it; it is meant for `valora dev` only",
            )
            .into());
        }
        let allowed_networks = AllowedNetworks::parse(&args.webhook_allow_networks).map_err(|e| {
            SettingError::new(
                ALLOW_NETWORKS_SETTING,
                e.to_string(),
                "list only the networks of your webhook receivers, comma-separated, such as 10.20.0.0/16,fd12:3456::/48",
            )
        })?;
        if !allowed_networks.is_empty() {
            tracing::info!(networks = %allowed_networks, "webhook receivers may be in these networks, although they are not public");
        }
        let key = key_bytes(args, dev_state)?;
        let seal = SealKey::new(&key).context("webhook key")?;
        let dispatch = DispatchSettings {
            retry_base: Duration::from_millis(args.webhook_retry_base_ms.max(1)),
            max_attempts: args.webhook_max_attempts.max(1),
            timeout: Duration::from_millis(args.webhook_timeout_ms.max(100)),
            ..DispatchSettings::default()
        };
        let policy = UrlPolicy { allow_loopback: args.webhook_allow_loopback, allowed_networks };
        Ok(Self { seal: Arc::new(seal), policy, dispatch })
    }

    /// The endpoint operations.
    pub(crate) fn endpoints(&self, store: &Store) -> Webhooks {
        Webhooks::new(store.clone(), self.seal.clone(), self.policy.clone())
    }

    /// Starts the dispatcher.
    pub(crate) fn start_dispatcher(&self, store: &Store, wake: Arc<Notify>, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let dispatcher =
            Dispatcher::new(store.connection().clone(), self.seal.clone(), self.policy.clone(), self.dispatch.clone(), wake)?;
        dispatcher.spawn(shutdown);
        Ok(())
    }
}

fn key_bytes(args: &WebhookArgs, dev_state: Option<&Path>) -> anyhow::Result<[u8; 32]> {
    let setting = "MARKETPLACE_WEBHOOK_KEY";
    let text = match (&args.webhook_key, &args.webhook_key_file, dev_state) {
        (Some(_), Some(_), _) => return Err(SettingError::new(setting, "is set together with MARKETPLACE_WEBHOOK_KEY_FILE", "set only one").into()),
        (Some(text), None, _) => text.clone(),
        (None, Some(path), _) => std::fs::read_to_string(path).with_context(|| format!("MARKETPLACE_WEBHOOK_KEY_FILE: cannot read {}", path.display()))?,
        (None, None, Some(state)) => {
            let path = state.join(DEV_KEY_FILE);
            if !path.is_file() {
                let value = valora_mesh::apikey::hex(&rand::random::<[u8; 32]>());
                valora_mesh::pki::write_file(&path, &value, true).with_context(|| format!("cannot write {}", path.display()))?;
            }
            std::fs::read_to_string(&path)?
        }
        (None, None, None) => {
            return Err(SettingError::new(setting, "is not set", "set it to 64 hex digits, for example the output of `openssl rand -hex 32`").into());
        }
    };
    let text = text.trim();
    let mut key = [0u8; 32];
    let valid = text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(SettingError::new(setting, "is not 64 hex digits", "use `openssl rand -hex 32`").into());
    }
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).unwrap_or(0);
    }
    Ok(key)
}
