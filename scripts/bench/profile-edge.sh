#!/usr/bin/env bash
# Counts the edge's instructions per call with valgrind's callgrind, for the
# profile evidence of docs/benchmarks.md.
#
# Usage: scripts/bench/profile-edge.sh KIND [CALLS]
#
#   KIND   accepted (GetListing with a valid key, TLS in, mTLS out),
#          bad_key (a well-formed unknown key), over_limit (the key over its
#          rate limit) or grpc_web (GetListing as binary grpc-web over
#          HTTP/1.1, through wrk)
#   CALLS  calls measured after 200 warm-up calls (default 2000)
#
# Starts the auth and marketplace services (SQLite) and one edge under
# callgrind on 127.0.0.1, collects only while the measured calls run, and
# writes callgrind.out and annotate.txt (inclusive and self counts) into
# target/bench-results/profile-KIND. Binaries: VALORA_BIN and
# VALORA_LOAD_BIN, else target/profiling (cargo build --profile profiling
# -p valora -p valora-bench), else target/release.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
KIND=${1:?usage: profile-edge.sh accepted|bad_key|over_limit|grpc_web [CALLS]}
CALLS=${2:-2000}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
for profile in profiling release; do
    if [ -z "${VALORA_BIN:-}" ] && [ -x "$TARGET_DIR/$profile/valora" ]; then VALORA_BIN=$TARGET_DIR/$profile/valora; fi
    if [ -z "${VALORA_LOAD_BIN:-}" ] && [ -x "$TARGET_DIR/$profile/valora-load" ]; then VALORA_LOAD_BIN=$TARGET_DIR/$profile/valora-load; fi
done
VALORA=${VALORA_BIN:?no valora binary; build one or set VALORA_BIN}
LOAD=${VALORA_LOAD_BIN:?no valora-load binary; build one or set VALORA_LOAD_BIN}
for tool in valgrind callgrind_control callgrind_annotate curl ss; do
    command -v "$tool" >/dev/null || { echo "profile: $tool is required" >&2; exit 2; }
done
for name in $(compgen -e); do
    case "$name" in VALORA_*|MARKETPLACE_*|AUTH_*|RUST_LOG) unset "$name" ;; esac
done

OUT=$ROOT/target/bench-results/profile-$KIND
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/valora-profile.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

port() {
    local p
    while :; do
        p=$((12000 + RANDOM % 8000))
        [ -z "$(ss -Htan "sport = :$p")" ] && { printf -v "$1" '%s' "$p"; return; }
    done
}
port EDGE_PORT; port EDGE_ADMIN; port MARKET_PORT; port MARKET_ADMIN; port AUTH_PORT; port AUTH_ADMIN

CERTS=$WORK/certs
"$VALORA" certs dev --certs-dir "$CERTS" >/dev/null
KEY=profile-static-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$VALORA" migrate marketplace --database-url "sqlite://$WORK/m.db?mode=rwc" >/dev/null
"$VALORA" migrate auth --database-url "sqlite://$WORK/a.db?mode=rwc" >/dev/null
"$VALORA" auth new-signing-key --dir "$WORK/signing" >/dev/null
COMMON=(VALORA_CERTS_DIR="$CERTS" VALORA_SHUTDOWN_DELAY_SECONDS=0 VALORA_DRAIN_SECONDS=2 MARKETPLACE_API_KEY="$KEY")

env "${COMMON[@]}" AUTH_API_KEY_PEPPER="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    "$VALORA" serve auth --auth-addr "127.0.0.1:$AUTH_PORT" --admin-addr "127.0.0.1:$AUTH_ADMIN" \
    --auth-database-url "sqlite://$WORK/a.db?mode=rwc" --signing-keys-dir "$WORK/signing" >>"$WORK/auth.log" 2>&1 &
PIDS+=("$!")
env "${COMMON[@]}" MARKETPLACE_WEBHOOK_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    "$VALORA" serve marketplace --marketplace-addr "127.0.0.1:$MARKET_PORT" --admin-addr "127.0.0.1:$MARKET_ADMIN" \
    --marketplace-database-url "sqlite://$WORK/m.db?mode=rwc" --auth-addr "127.0.0.1:$AUTH_PORT" >>"$WORK/market.log" 2>&1 &
PIDS+=("$!")
LIMIT=off
[ "$KIND" = over_limit ] && LIMIT=1/hour
env "${COMMON[@]}" VALORA_EDGE_TLS_CERT="$CERTS/edge.pem" VALORA_EDGE_TLS_KEY="$CERTS/edge.key" \
    VALORA_RATE_LIMIT_PER_KEY=$LIMIT VALORA_RATE_LIMIT_PER_USER=off VALORA_RATE_LIMIT_FAILURES_PER_ADDRESS=off \
    VALORA_RATE_LIMIT_METHODS=off \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    "$VALORA" serve edge --edge-addr "127.0.0.1:$EDGE_PORT" --admin-addr "127.0.0.1:$EDGE_ADMIN" \
    --marketplace-addr "127.0.0.1:$MARKET_PORT" --auth-addr "127.0.0.1:$AUTH_PORT" >>"$WORK/edge.log" 2>&1 &
EDGE_PID=$!
PIDS+=("$EDGE_PID")
for admin in "$AUTH_ADMIN" "$MARKET_ADMIN" "$EDGE_ADMIN"; do
    for _ in $(seq 1 600); do
        curl -fsS -o /dev/null "http://127.0.0.1:$admin/readyz" 2>/dev/null && break
        sleep 0.2
    done
done

TARGET=(--addr "127.0.0.1:$EDGE_PORT" --tls --ca "$CERTS/ca.pem" --api-key "$KEY")
LISTING=""
for _ in $(seq 1 100); do
    if SEED=$("$LOAD" seed "${TARGET[@]}" 2>"$WORK/seed.err"); then
        LISTING=$(echo "$SEED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["listing_id"])')
        break
    fi
    sleep 0.5
done
[ -n "$LISTING" ] || { echo "profile: seeding through the edge failed: $(cat "$WORK/seed.err")" >&2; tail -n 20 "$WORK/edge.log" >&2; exit 1; }
CALL=(--rpc get-listing --listing-id "$LISTING" --concurrency 8 --connections 1 --timeout-ms 60000)
EXPECT=()
case $KIND in
    accepted|grpc_web) ;;
    bad_key) TARGET+=(--api-key "profile-wrong-key-0123456789abcdef0123"); EXPECT=(--expect-status 16) ;;
    over_limit) EXPECT=(--expect-status 8) ;;
    *) echo "profile: unknown KIND $KIND" >&2; exit 2 ;;
esac
# Warm-up (over_limit: the first call spends the hour's one call).
"$LOAD" run "${TARGET[@]}" "${CALL[@]}" --requests 200 --duration 600 >/dev/null 2>&1 || true

callgrind_control -i on "$EDGE_PID" >/dev/null
if [ "$KIND" = grpc_web ]; then
    "$LOAD" frame --rpc get-listing --listing-id "$LISTING" --out "$WORK/frame.bin"
    # wrk stops by time, so the count of measured calls comes from its report.
    BENCH_FRAME=$WORK/frame.bin BENCH_API_KEY=$KEY wrk -t 1 -c 8 -d 20s \
        -s "$ROOT/scripts/bench/grpc-web.lua" "https://127.0.0.1:$EDGE_PORT/valora.marketplace.v1.MarketplaceService/GetListing" \
        >"$OUT/load.txt" 2>&1
else
    "$LOAD" run "${TARGET[@]}" "${CALL[@]}" "${EXPECT[@]}" --requests "$CALLS" --duration 600 >"$OUT/load.json"
fi
callgrind_control -i off "$EDGE_PID" >/dev/null
callgrind_control -d "$EDGE_PID" >/dev/null
sleep 2
kill -TERM "$EDGE_PID"
wait "$EDGE_PID" 2>/dev/null || true
# `callgrind_control -d` wrote callgrind.out.1 with the measured calls; the
# file written at exit holds only what ran after instrumentation stopped.
DUMP=$OUT/callgrind.out.1
{
    echo "# $KIND: $(cat "$OUT"/load.* | tr -d '\n' | head -c 600)"
    callgrind_annotate --inclusive=yes "$DUMP" | head -n 80
    echo
    echo "# self"
    callgrind_annotate "$DUMP" | head -n 60
} >"$OUT/annotate.txt"
echo "profile: $OUT/annotate.txt ($DUMP)"
