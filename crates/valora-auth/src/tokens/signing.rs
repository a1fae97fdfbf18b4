//! Ed25519 signing keys for access tokens, and the JWKS that publishes
//! their public halves.
//!
//! Keys live as PKCS#8 PEM files in one folder. The file whose name sorts
//! last signs new tokens; every key in the folder verifies. Rotating means
//! adding a newer file, and removing the old one after the longest access
//! token lifetime has passed, so that no valid token loses its key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How often the key folder is re-read.
const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A failure to load signing keys.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read signing key folder {path}: {source}")]
    ReadDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read signing key {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("signing key {path} is not an unencrypted Ed25519 PKCS#8 PEM key: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("signing key folder {0} holds no *.pem key; create one with `valora auth new-signing-key`")]
    Empty(PathBuf),
    #[error("cannot write signing key {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot sign a token: {0}")]
    Sign(String),
}

/// A public key as published in the JWKS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    pub kid: String,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public: PublicJwk,
}

struct KeySet {
    /// Sorted by file name; the last one signs.
    keys: Vec<SigningKey>,
}

/// The current signing keys, reloaded from their folder.
#[derive(Clone)]
pub struct SigningKeys {
    dir: PathBuf,
    current: Arc<ArcSwap<KeySet>>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys").field("dir", &self.dir).field("kids", &self.kids()).finish()
    }
}

impl SigningKeys {
    /// Loads every `*.pem` key in `dir`; at least one is required.
    pub fn load(dir: &Path) -> Result<Self, SigningKeyError> {
        let set = load_set(dir)?;
        Ok(Self { dir: dir.to_owned(), current: Arc::new(ArcSwap::from_pointee(set)) })
    }

    /// A single in-memory key for commands that never sign tokens, such as
    /// the operator CLI.
    pub fn ephemeral() -> Result<Self, SigningKeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| SigningKeyError::Sign(e.to_string()))?;
        let key = key_from_der(pkcs8.as_ref(), Path::new("memory"))?;
        Ok(Self { dir: PathBuf::new(), current: Arc::new(ArcSwap::from_pointee(KeySet { keys: vec![key] })) })
    }

    /// Re-reads the folder every few seconds; a failed read keeps the
    /// current keys and logs the error.
    pub fn spawn_reloader(&self) {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                keys.reload();
            }
        });
    }

    /// Re-reads the folder now.
    pub fn reload(&self) {
        match load_set(&self.dir) {
            Ok(set) => {
                let before = self.kids();
                let after: Vec<String> = set.keys.iter().map(|k| k.kid.clone()).collect();
                if before != after {
                    tracing::info!(kids = ?after, "signing keys reloaded");
                    self.current.store(Arc::new(set));
                }
            }
            Err(error) => tracing::error!(%error, "signing keys not reloaded; keeping the current ones"),
        }
    }

    /// Key ids, oldest first; the last one signs.
    pub fn kids(&self) -> Vec<String> {
        self.current.load().keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// The public keys, for the JWKS.
    pub fn jwks(&self) -> Vec<PublicJwk> {
        self.current.load().keys.iter().map(|k| k.public.clone()).collect()
    }

    /// Signs `claims` with the newest key, setting `kid` in the header.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SigningKeyError> {
        let set = self.current.load();
        let key = set.keys.last().ok_or_else(|| SigningKeyError::Empty(self.dir.clone()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| SigningKeyError::Sign(e.to_string()))
    }
}

fn load_set(dir: &Path) -> Result<KeySet, SigningKeyError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|source| SigningKeyError::ReadDir { path: dir.to_owned(), source })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(SigningKeyError::Empty(dir.to_owned()));
    }
    let keys = paths.iter().map(|p| load_key(p)).collect::<Result<Vec<_>, _>>()?;
    Ok(KeySet { keys })
}

fn load_key(path: &Path) -> Result<SigningKey, SigningKeyError> {
    let pem = std::fs::read(path).map_err(|source| SigningKeyError::Read { path: path.to_owned(), source })?;
    let parse = |reason: String| SigningKeyError::Parse { path: path.to_owned(), reason };
    let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|e| parse(e.to_string()))?;
    key_from_der(der.secret_pkcs8_der(), path)
}

fn key_from_der(der: &[u8], path: &Path) -> Result<SigningKey, SigningKeyError> {
    let parse = |reason: String| SigningKeyError::Parse { path: path.to_owned(), reason };
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| parse(e.to_string()))?;
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let kid = thumbprint(&x);
    let encoding = EncodingKey::from_ed_der(der);
    let public = PublicJwk { kty: "OKP", crv: "Ed25519", x, kid: kid.clone(), alg: "EdDSA", use_: "sig" };
    Ok(SigningKey { kid, encoding, public })
}

/// The RFC 7638 thumbprint of an Ed25519 JWK: SHA-256 of its required
/// members in lexicographic order, base64url.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Writes a new Ed25519 key to `dir`, named so that it sorts after the
/// existing ones (a UTC timestamp). Returns its path.
pub fn write_new_key(dir: &Path) -> Result<PathBuf, SigningKeyError> {
    let write = |reason: String| SigningKeyError::Write { path: dir.to_owned(), reason };
    std::fs::create_dir_all(dir).map_err(|e| write(e.to_string()))?;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| write(e.to_string()))?;
    let name = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ.pem").to_string();
    let path = dir.join(name);
    let pem = pem_encode("PRIVATE KEY", pkcs8.as_ref());
    valora_mesh::pki::write_file(&path, &pem, true).map_err(|e| write(e.to_string()))?;
    Ok(path)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_key_signs_and_all_publish() {
        let dir = tempfile::tempdir().unwrap();
        write_new_key(dir.path()).unwrap();
        let keys = SigningKeys::load(dir.path()).unwrap();
        let first = keys.kids();
        assert_eq!(first.len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        write_new_key(dir.path()).unwrap();
        keys.reload();
        let kids = keys.kids();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[0], first[0]);
        let token = keys.sign(&serde_json::json!({"sub": "u"})).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(kids[1].as_str()));
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(keys.jwks().len(), 2);
    }

    #[test]
    fn empty_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(SigningKeys::load(dir.path()), Err(SigningKeyError::Empty(_))));
    }
}
