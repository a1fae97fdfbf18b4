//! Replays the committed seed corpora of the fuzz targets `grpc_web_body` and `bearer_token`
//! (`fuzz/corpus/`) through the entry functions that cargo-fuzz runs, so
//! that `cargo test` checks every seed, and every input that once broke a
//! property, on each run. See docs/testing.md.

#[allow(dead_code, unreachable_pub, clippy::expect_used, clippy::panic, reason = "entry functions shared with fuzz/; a broken property panics")]
#[path = "../../../fuzz/src/gateway.rs"]
mod gateway;
#[allow(dead_code, unreachable_pub, clippy::panic, reason = "helper shared with fuzz/")]
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn grpc_web_body_corpus() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "grpc_web_body", gateway::grpc_web_body);
}

#[test]
fn bearer_token_corpus() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "bearer_token", gateway::bearer_token);
}
