//! Replays the committed seed corpora of the fuzz target `policy_toml`
//! (`fuzz/corpus/`) through the entry functions that cargo-fuzz runs, so
//! that `cargo test` checks every seed, and every input that once broke a
//! property, on each run. See docs/testing.md.

#[allow(dead_code, unreachable_pub, clippy::expect_used, clippy::panic, reason = "entry functions shared with fuzz/; a broken property panics")]
#[path = "../../../fuzz/src/mesh.rs"]
mod mesh;
#[allow(dead_code, unreachable_pub, clippy::panic, reason = "helper shared with fuzz/")]
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn policy_toml_corpus() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "policy_toml", mesh::policy_toml);
}
