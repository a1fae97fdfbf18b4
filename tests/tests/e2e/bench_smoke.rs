//! The benchmark script in smoke mode (`scripts/bench.sh --smoke`): every
//! comparison of docs/benchmarks.md runs for about a second against the
//! debug binaries this test run built, and the run must end without errors
//! and print its table. Missed targets do not fail it, but errors do: a call
//! with a gRPC status other than the expected one, or a load generator or
//! service that fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::support::{in_ci, repo_root, tool};

/// Rows the table must have, one or more per comparison.
const ROWS: [&str; 8] = [
    "edge vs nginx",
    "edge + mTLS hop vs direct",
    "TLS in vs h2c in",
    "during a login storm",
    "grpc-web (HTTP/1.1, binary) vs gRPC",
    "accepted vs bad-key calls",
    "during new TLS connections",
    "per 1000 idle TLS client connections",
];

#[test]
fn bench_smoke_runs_every_comparison() {
    let needed = ["nginx", "h2load", "wrk", "taskset", "curl", "python3", "ss"];
    // `tool` fails in CI when one is missing and returns None outside it.
    let found: Vec<Option<PathBuf>> = needed.iter().map(|name| tool(name)).collect();
    if found.iter().any(Option::is_none) {
        return;
    }

    // The valora command under another name, and valora-load, which
    // `cargo test --workspace` builds for the bench package's own tests.
    let valora = PathBuf::from(env!("CARGO_BIN_EXE_valora-e2e-node"));
    let load = valora.with_file_name("valora-load");
    if !load.is_file() {
        assert!(!in_ci(), "{} is missing; cargo test --workspace builds it", load.display());
        eprintln!("skipping: {} is missing; `cargo build -p valora-bench` builds it", load.display());
        return;
    }

    let out = tempfile::tempdir().expect("results folder");
    let started = Instant::now();
    let output = Command::new("timeout")
        .args(["300", "bash"])
        .arg(repo_root().join("scripts/bench.sh"))
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .env("VALORA_BIN", &valora)
        .env("VALORA_LOAD_BIN", &load)
        .output()
        .expect("run scripts/bench.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    eprintln!("scripts/bench.sh --smoke took {:.0?}", started.elapsed());
    assert!(output.status.success(), "bench.sh --smoke failed ({}):\n{stderr}\n{stdout}", output.status);
    assert!(stdout.contains("| comparison | A | B |"), "no table:\n{stdout}\n{stderr}");
    for row in ROWS {
        assert!(stdout.contains(row), "no row for {row:?}:\n{stdout}");
    }
    assert!(out.path().join("table.md").is_file());
}
