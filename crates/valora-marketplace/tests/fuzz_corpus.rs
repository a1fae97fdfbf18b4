//! Replays the committed seed corpora of the fuzz target `webhook_url`
//! (`fuzz/corpus/`) through the entry functions that cargo-fuzz runs, so
//! that `cargo test` checks every seed, and every input that once broke a
//! property, on each run. See docs/testing.md.

#[allow(dead_code, unreachable_pub, clippy::expect_used, clippy::panic, reason = "entry functions shared with fuzz/; a broken property panics")]
#[path = "../../../fuzz/src/marketplace.rs"]
mod marketplace;
#[allow(dead_code, unreachable_pub, clippy::panic, reason = "helper shared with fuzz/")]
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn webhook_url_corpus() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "webhook_url", marketplace::webhook_url);
}
