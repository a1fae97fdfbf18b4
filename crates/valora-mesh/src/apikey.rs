//! API-key checks shared by the edge and internal services.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::principal::{Principal, SCOPE_MARKETPLACE_READ, SCOPE_MARKETPLACE_WRITE};

/// Header that carries the API key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Longest API key accepted, in bytes; anything longer is malformed.
pub const MAX_KEY_LEN: usize = 256;
/// Shortest static key accepted at start-up, in characters.
pub const MIN_STATIC_KEY_LEN: usize = 32;
/// Interval at which [`StaticKeys::spawn_file_reload`] re-reads its file.
/// Polling the path detects every kind of change, including the symlink
/// swap with which Kubernetes updates a mounted Secret.
pub const KEY_FILE_POLL: Duration = Duration::from_secs(2);

/// Why an API key was not accepted. Messages never contain the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    #[error("missing API key: send it in the x-api-key header")]
    Missing,
    #[error("malformed API key in the x-api-key header")]
    Malformed,
    #[error("invalid API key")]
    Unknown,
    #[error("revoked API key")]
    Revoked,
    #[error("expired API key")]
    Expired,
    #[error("API keys are accepted only in the x-api-key header, never in the URL")]
    InQueryString,
    #[error("API key could not be checked; retry later")]
    Unavailable,
}

impl KeyRejection {
    /// Stable label for logs, metrics and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::InQueryString => "in_query_string",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Boxed future returned by [`KeyVerifier::verify`].
pub type VerifyFuture<'a> = Pin<Box<dyn Future<Output = Result<Principal, KeyRejection>> + Send + 'a>>;

/// Something that turns an API key into a principal.
pub trait KeyVerifier: Send + Sync + 'static {
    /// Checks `key`, which has passed [`check_key_syntax`].
    fn verify<'a>(&'a self, key: &'a str) -> VerifyFuture<'a>;
}

/// Checks the syntax every API key shares: 1 to 256 visible ASCII
/// characters.
pub fn check_key_syntax(key: &[u8]) -> Result<&str, KeyRejection> {
    if key.is_empty() {
        return Err(KeyRejection::Missing);
    }
    if key.len() > MAX_KEY_LEN || !key.iter().all(u8::is_ascii_graphic) {
        return Err(KeyRejection::Malformed);
    }
    std::str::from_utf8(key).map_err(|_| KeyRejection::Malformed)
}

/// Static operator keys, such as those in `MARKETPLACE_API_KEY`.
///
/// Keys are kept as SHA-256 digests and compared in constant time, so
/// neither the comparison's timing nor a memory dump of the set reveals a
/// key.
///
/// Clones share one list: [`StaticKeys::replace`] on any clone changes the
/// keys every clone accepts, from the next lookup on.
#[derive(Clone, Default)]
pub struct StaticKeys {
    keys: Arc<ArcSwap<Vec<StaticKey>>>,
}

#[derive(Clone)]
struct StaticKey {
    digest: [u8; 32],
    id: String,
}

/// A static key list that is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StaticKeyError {
    #[error("entry {position} is empty; remove the extra comma")]
    Empty { position: usize },
    #[error(
        "entry {position} is {length} characters; use at least {MIN_STATIC_KEY_LEN} random \
         characters, for example the output of `openssl rand -hex 32`"
    )]
    TooShort { position: usize, length: usize },
    #[error("entry {position} contains spaces or non-ASCII characters; use visible ASCII only")]
    BadCharacters { position: usize },
    #[error("entry {position} is longer than {MAX_KEY_LEN} bytes")]
    TooLong { position: usize },
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.load();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("StaticKeys").field("ids", &ids).finish()
    }
}

impl StaticKeys {
    /// Parses a comma-separated key list. Entries are trimmed; positions in
    /// errors count from 1.
    pub fn parse(list: &str) -> Result<Self, StaticKeyError> {
        let mut keys = Vec::new();
        for (index, raw) in list.split(',').enumerate() {
            let position = index + 1;
            let key = raw.trim();
            if key.is_empty() {
                return Err(StaticKeyError::Empty { position });
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(StaticKeyError::BadCharacters { position });
            }
            if key.len() > MAX_KEY_LEN {
                return Err(StaticKeyError::TooLong { position });
            }
            if key.len() < MIN_STATIC_KEY_LEN {
                return Err(StaticKeyError::TooShort { position, length: key.len() });
            }
            keys.push(StaticKey::new(key));
        }
        Ok(Self { keys: Arc::new(ArcSwap::from_pointee(keys)) })
    }

    /// Replaces the keys of this list, and of every clone, with the keys of
    /// `other`. Lookups already running finish with the previous keys.
    pub fn replace(&self, other: &StaticKeys) {
        self.keys.store(other.keys.load_full());
    }

    /// Returns whether both lists contain the same keys in the same order.
    pub fn same_keys(&self, other: &StaticKeys) -> bool {
        let (mine, theirs) = (self.keys.load(), other.keys.load());
        mine.len() == theirs.len()
            && mine.iter().zip(theirs.iter()).all(|(a, b)| bool::from(a.digest.ct_eq(&b.digest)))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.load().is_empty()
    }

    /// Public ids of the keys, for logs.
    pub fn ids(&self) -> Vec<String> {
        self.keys.load().iter().map(|k| k.id.clone()).collect()
    }

    /// Returns the principal of `key` when it is one of the static keys.
    ///
    /// Every key is compared, whatever matches, so the time taken does not
    /// depend on which key matched.
    pub fn lookup(&self, key: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let keys = self.keys.load();
        let mut found: Option<&StaticKey> = None;
        for candidate in keys.iter() {
            if bool::from(candidate.digest.ct_eq(&digest)) {
                found = Some(candidate);
            }
        }
        found.map(|k| Principal {
            key_id: k.id.clone(),
            key_owner: None,
            scopes: vec![SCOPE_MARKETPLACE_READ.to_owned(), SCOPE_MARKETPLACE_WRITE.to_owned()],
            user: None,
        })
    }
}

impl StaticKeys {
    /// Starts a task that re-reads `path` every [`KEY_FILE_POLL`] until the
    /// runtime stops.
    ///
    /// When the content changed, `parse` turns it into a list. A list with
    /// other keys than the current ones replaces them in every clone, and
    /// the number of keys and their ids are logged. A file that cannot be
    /// read, or that `parse` rejects, logs a warning with `setting` and the
    /// reason, and the current keys stay. The reason is `parse`'s message,
    /// so it must not contain key values. Each outcome increments
    /// `valora_api_key_file_reloads_total{outcome="applied"|"rejected"}`.
    pub fn spawn_file_reload<F>(&self, path: PathBuf, setting: &'static str, parse: F)
    where
        F: Fn(&str) -> Result<StaticKeys, String> + Send + 'static,
    {
        let keys = self.clone();
        tokio::spawn(async move {
            // A SHA-256 of the content last seen, or the read error, so an
            // unchanged file is neither parsed nor logged again and no copy
            // of the keys stays in memory.
            let mut last_seen: Option<Result<[u8; 32], String>> = None;
            let mut rejected = false;
            let mut tick = tokio::time::interval(KEY_FILE_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let content = tokio::fs::read(&path).await;
                let seen = match &content {
                    Ok(bytes) => Ok(Sha256::digest(bytes).into()),
                    Err(error) => Err(error.to_string()),
                };
                if last_seen.as_ref() == Some(&seen) {
                    continue;
                }
                last_seen = Some(seen);
                let parsed = match content {
                    Ok(bytes) => match std::str::from_utf8(&bytes) {
                        Ok(text) => parse(text),
                        Err(_) => Err("the file is not UTF-8 text".to_owned()),
                    },
                    Err(error) => Err(format!("cannot read {}: {error}", path.display())),
                };
                match parsed {
                    Ok(new) if new.same_keys(&keys) => {
                        if std::mem::take(&mut rejected) {
                            tracing::info!(
                                setting,
                                count = keys.len(),
                                ids = ?keys.ids(),
                                "static API key file is valid again and contains the current keys"
                            );
                        }
                    }
                    Ok(new) => {
                        keys.replace(&new);
                        rejected = false;
                        tracing::info!(setting, count = new.len(), ids = ?new.ids(), "static API keys reloaded");
                        metrics::counter!("valora_api_key_file_reloads_total", "outcome" => "applied").increment(1);
                    }
                    Err(reason) => {
                        rejected = true;
                        tracing::warn!(
                            setting,
                            %reason,
                            count = keys.len(),
                            ids = ?keys.ids(),
                            "static API key file rejected; keeping the current keys"
                        );
                        metrics::counter!("valora_api_key_file_reloads_total", "outcome" => "rejected").increment(1);
                    }
                }
            }
        });
    }
}

impl StaticKey {
    fn new(key: &str) -> Self {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // The id is a short fingerprint: enough to tell keys apart in logs,
        // far too short to help guess a key of at least 32 characters.
        let id = format!("static-{}", hex(&digest[..4]));
        Self { digest, id }
    }
}

impl KeyVerifier for StaticKeys {
    fn verify<'a>(&'a self, key: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move { self.lookup(key).ok_or(KeyRejection::Unknown) })
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "a-very-long-static-key-0123456789abcdef";
    const KEY_B: &str = "b-very-long-static-key-0123456789abcdef";

    #[test]
    fn static_keys_match_exactly() {
        let keys = StaticKeys::parse(&format!("{KEY_A}, {KEY_B}")).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.lookup(KEY_A).is_some());
        assert!(keys.lookup(KEY_B).is_some());
        assert!(keys.lookup(&KEY_A.to_uppercase()).is_none());
        assert!(keys.lookup(&KEY_A[1..]).is_none());
    }

    #[test]
    fn static_key_list_errors_name_the_entry() {
        assert_eq!(
            StaticKeys::parse(&format!("{KEY_A},,{KEY_B}")).unwrap_err(),
            StaticKeyError::Empty { position: 2 }
        );
        assert_eq!(
            StaticKeys::parse("short").unwrap_err(),
            StaticKeyError::TooShort { position: 1, length: 5 }
        );
        assert_eq!(
            StaticKeys::parse(&format!("{KEY_A},has space{KEY_B}")).unwrap_err(),
            StaticKeyError::BadCharacters { position: 2 }
        );
    }

    #[tokio::test]
    async fn replace_changes_every_clone() {
        let keys = StaticKeys::parse(KEY_A).unwrap();
        let clone = keys.clone();
        let composite = crate::apikey_remote::CompositeKeys {
            static_keys: keys.clone(),
            issued: None,
            issued_prefix: "vlk_",
        };
        assert!(clone.lookup(KEY_A).is_some());

        keys.replace(&StaticKeys::parse(KEY_B).unwrap());
        for view in [&keys, &clone, &composite.static_keys] {
            assert!(view.lookup(KEY_A).is_none(), "the old key is still accepted");
            assert!(view.lookup(KEY_B).is_some(), "the new key is not accepted");
            assert_eq!(view.len(), 1);
        }
        assert_eq!(composite.verify(KEY_A).await.unwrap_err(), KeyRejection::Unknown);
        assert!(composite.verify(KEY_B).await.is_ok());
    }

    #[test]
    fn replace_copies_the_list_not_the_source() {
        let keys = StaticKeys::parse(KEY_A).unwrap();
        let source = StaticKeys::parse(KEY_B).unwrap();
        keys.replace(&source);
        assert!(keys.same_keys(&source));
        // `keys` takes the source's current list, so replacing the source
        // afterwards leaves `keys` unchanged.
        source.replace(&StaticKeys::parse(KEY_A).unwrap());
        assert!(keys.lookup(KEY_B).is_some());
        assert!(keys.lookup(KEY_A).is_none());
    }

    #[tokio::test]
    async fn file_reload_applies_valid_lists_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, KEY_A).unwrap();
        let keys = StaticKeys::parse(KEY_A).unwrap();
        keys.spawn_file_reload(path.clone(), "KEYS_FILE", |text| {
            StaticKeys::parse(text.trim()).map_err(|e| e.to_string())
        });
        let wait_for_b = async {
            while keys.lookup(KEY_B).is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        std::fs::write(&path, KEY_B).unwrap();
        tokio::time::timeout(KEY_FILE_POLL * 3, wait_for_b).await.expect("the new list was not applied");
        assert!(keys.lookup(KEY_A).is_none());

        // A missing, invalid or non-UTF-8 file leaves the current list in
        // place.
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(KEY_FILE_POLL + Duration::from_millis(500)).await;
        std::fs::write(&path, b"\xff\xfe").unwrap();
        tokio::time::sleep(KEY_FILE_POLL + Duration::from_millis(500)).await;
        std::fs::write(&path, "short").unwrap();
        tokio::time::sleep(KEY_FILE_POLL + Duration::from_millis(500)).await;
        assert!(keys.lookup(KEY_B).is_some());
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn same_keys_compares_the_whole_list() {
        let ab = StaticKeys::parse(&format!("{KEY_A},{KEY_B}")).unwrap();
        assert!(ab.same_keys(&StaticKeys::parse(&format!("{KEY_A}, {KEY_B}")).unwrap()));
        assert!(!ab.same_keys(&StaticKeys::parse(KEY_A).unwrap()));
        assert!(!ab.same_keys(&StaticKeys::parse(&format!("{KEY_B},{KEY_A}")).unwrap()));
    }

    #[test]
    fn debug_output_hides_keys() {
        let keys = StaticKeys::parse(KEY_A).unwrap();
        assert!(!format!("{keys:?}").contains(KEY_A));
    }

    #[test]
    fn key_syntax() {
        assert_eq!(check_key_syntax(b""), Err(KeyRejection::Missing));
        assert_eq!(check_key_syntax(b"with space"), Err(KeyRejection::Malformed));
        assert_eq!(check_key_syntax(&[b'a'; 257]), Err(KeyRejection::Malformed));
        assert_eq!(check_key_syntax(b"ok-key"), Ok("ok-key"));
    }
}
