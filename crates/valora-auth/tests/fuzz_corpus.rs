//! Replays the committed seed corpora of the fuzz targets `api_key` and `passlib_hash`
//! (`fuzz/corpus/`) through the entry functions that cargo-fuzz runs, so
//! that `cargo test` checks every seed, and every input that once broke a
//! property, on each run. See docs/testing.md.

#[allow(dead_code, unreachable_pub, clippy::expect_used, clippy::panic, reason = "entry functions shared with fuzz/; a broken property panics")]
#[path = "../../../fuzz/src/auth.rs"]
mod auth;
#[allow(dead_code, unreachable_pub, clippy::panic, reason = "helper shared with fuzz/")]
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn api_key_corpus() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "api_key", auth::api_key);
}

#[test]
fn passlib_hash_corpus() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "passlib_hash", auth::passlib_hash);
}
