#!/usr/bin/env bash
# Runs fuzz targets with cargo-fuzz on the stable toolchain.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      (20 seconds, every target)
#
# Each target starts from its committed seeds in fuzz/corpus/TARGET and
# writes the inputs it finds to a temporary folder, so the committed seeds
# stay as they are. A target that panics or hangs (10 s for one input)
# fails the run; the input is printed as base64 and kept under
# fuzz/artifacts/TARGET/. Once the bug is fixed, copy the input into
# fuzz/corpus/TARGET/ under a name that says what it tests, so that the
# corpus tests replay it from then on.
#
# `--sanitizer none` keeps to flags that stable rustc accepts: coverage
# instrumentation (-Cpasses=sancov-module and LLVM options), debug
# assertions and overflow checks. AddressSanitizer needs -Zsanitizer; see
# docs/testing.md.
#
# VALORA_FUZZ_TARGET_DIR sets cargo's target folder (default fuzz/target),
# so that CI can keep the instrumented build between runs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
target_dir=${VALORA_FUZZ_TARGET_DIR:-fuzz/target}
triple=$(rustc -vV | sed -n 's/^host: //p')

echo "fuzz: building ${#targets[@]} targets ($(cargo fuzz --version), $(rustc --version))"
cargo fuzz build --fuzz-dir fuzz --sanitizer none --target-dir "$target_dir"

failed=()
summary=()
for target in "${targets[@]}"; do
    work=$(mktemp -d)
    log="$work/fuzz.log"
    mkdir -p "$work/found" "fuzz/artifacts/$target"
    echo "fuzz: $target for $seconds s"
    # The binary cargo-fuzz built, run the way `cargo fuzz run` runs it,
    # without a second build.
    status=0
    "$target_dir/$triple/release/$target" -artifact_prefix="fuzz/artifacts/$target/" \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        "$work/found" "fuzz/corpus/$target" >"$log" 2>&1 || status=$?
    runs=$(grep -a -o '^stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    speed=$(grep -a -o '^stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    coverage=$(grep -a -o 'DONE *cov: [0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    found=$(find "$work/found" -type f | wc -l)
    if [ "$status" -ne 0 ] || grep -a -q 'Test unit written to' "$log"; then
        failed+=("$target")
        echo "fuzz: $target FAILED (exit status $status); the fuzzer's report:" >&2
        grep -a -v -e '^#[0-9]' -e '^INFO:' "$log" | tail -60 >&2
        for artifact in $(grep -a -o 'Test unit written to [^ ]*' "$log" | awk '{print $NF}'); do
            echo "fuzz: failing input $artifact (base64): $(base64 -w0 "$artifact")" >&2
        done
        summary+=("$target: FAILED after ${runs:-?} runs")
    else
        summary+=("$target: $runs runs ($speed per second), coverage $coverage, $found new inputs")
    fi
    rm -rf "$work"
done

echo
printf 'fuzz: %s\n' "${summary[@]}"
[ ${#failed[@]} -eq 0 ]
