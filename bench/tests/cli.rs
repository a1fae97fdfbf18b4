//! The set-up subcommands of valora-load, run as the benchmark script runs
//! them. Being an integration test, this also makes `cargo test` build the
//! valora-load binary that the end-to-end smoke test hands to
//! scripts/bench.sh.

use std::process::Command;

fn valora_load(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_valora-load"))
        .args(args)
        .env_remove("VALORA_LOAD_API_KEY")
        .output()
        .expect("run valora-load")
}

#[test]
fn frame_writes_a_grpc_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("get-listing.bin");
    let run = valora_load(&["frame", "--rpc", "get-listing", "--listing-id", "abc", "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // Uncompressed, 5 bytes long: field 1 (tag 0x0a), length 3, "abc".
    assert_eq!(std::fs::read(&out).unwrap(), b"\x00\x00\x00\x00\x05\x0a\x03abc");
}

#[test]
fn principal_matches_what_the_edge_forwards() {
    let key = "bench-static-key-0123456789abcdef0123456789";
    let run = valora_load(&["principal", "--api-key", key]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let value = String::from_utf8(run.stdout).unwrap();
    let principal = valora_mesh::principal::Principal::from_header_value(value.trim().as_bytes()).unwrap();
    let expected = valora_mesh::apikey::StaticKeys::parse(key).unwrap().lookup(key).unwrap();
    assert_eq!(principal, expected);
}

#[test]
fn run_fails_without_a_server() {
    let run = valora_load(&["run", "--addr", "127.0.0.1:1", "--rpc", "health", "--duration", "0.1"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("connecting to 127.0.0.1:1"));
}
