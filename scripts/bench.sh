#!/usr/bin/env bash
# Side-by-side benchmarks of the VALORA edge (docs/benchmarks.md).
#
# Builds release binaries, writes a development PKI, and starts the auth and
# marketplace services (SQLite), three edges and nginx on 127.0.0.1. After
# seeding a published listing and a user, it runs each comparison as
# interleaved rounds (A B, then B A, ...) after a warm-up. The proxy under test runs on
# core 0 (taskset -c 0); the load generators, this script and the backend
# services run on core 1. Proxy CPU time comes from /proc/PID/stat.
#
# Usage: scripts/bench.sh [--smoke] [--rounds N] [--seconds S] [--only LIST] [--out DIR]
#
#   --smoke    every comparison for about a second, one round, tiny counts;
#              uses release binaries when present, else builds and uses the
#              debug build. Exits non-zero only on errors, not on missed
#              targets (the full run does the same).
#   --rounds   rounds per comparison (default 5)
#   --seconds  measured seconds per run (default 8)
#   --only     comma-separated comparisons to run: memory, edge_vs_nginx,
#              latency, tls_vs_h2c, grpc_web, rejections, tls_burst,
#              login_storm. Without edge_vs_nginx the edge's throughput is
#              taken as 200 calls/s, so half load is 100 calls/s.
#   --out      folder for the raw results and the table (default
#              target/bench-results/DATE)
#
# VALORA_BIN and VALORA_LOAD_BIN name prebuilt binaries to use instead.
# Needs taskset, curl, python3, nginx, h2load (nghttp2-client) and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STARTED_AT=$(date +%s)

MODE=full
ROUNDS=5
RUN_SECONDS=8
OUT=""
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) MODE=smoke ;;
        --rounds) ROUNDS=$2; shift ;;
        --seconds) RUN_SECONDS=$2; shift ;;
        --only)
            ONLY=$2
            for name in ${ONLY//,/ }; do
                case "$name" in
                    memory|edge_vs_nginx|latency|tls_vs_h2c|grpc_web|rejections|tls_burst|login_storm) ;;
                    *) echo "bench: unknown comparison $name for --only (see --help)" >&2; exit 2 ;;
                esac
            done
            shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$MODE" = smoke ]; then
    ROUNDS=1
    RUN_SECONDS=1
    WARMUP=1
    LOAD_WARMUP=0.3
    HOLD_CONNECTIONS=50
    H2_CONNECTIONS=2; H2_STREAMS=4
    STEADY_RATE_MIN=50
    BURST_RATE=20
    JWKS_RATE=50
    ARGON2_HASHES=3
else
    WARMUP=2
    LOAD_WARMUP=2
    HOLD_CONNECTIONS=1000
    H2_CONNECTIONS=4; H2_STREAMS=8
    STEADY_RATE_MIN=100
    BURST_RATE=200
    JWKS_RATE=100
    ARGON2_HASHES=15
fi
IN_FLIGHT=$((H2_CONNECTIONS * H2_STREAMS))

for tool in taskset curl python3 nginx h2load wrk ss; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench: $tool is required (Debian: nginx, nghttp2-client, wrk, util-linux, curl, python3, iproute2)" >&2
        exit 2
    fi
done
if [ "$(nproc --all)" -lt 2 ]; then
    echo "bench: needs 2 cores (core 0 for the proxy, core 1 for the load)" >&2
    exit 2
fi

# --- binaries ---------------------------------------------------------------
VALORA=${VALORA_BIN:-}
LOAD=${VALORA_LOAD_BIN:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$MODE" = full ]; then
    echo "bench: cargo build --release -p valora -p valora-bench" >&2
    cargo build --release -p valora -p valora-bench >&2
    PROFILE=release
elif [ -x "$TARGET_DIR/release/valora-load" ] && { [ -n "$VALORA" ] || [ -x "$TARGET_DIR/release/valora" ]; }; then
    PROFILE=release
else
    PROFILE=debug
    packages=()
    [ -n "$VALORA" ] || packages+=(-p valora)
    [ -n "$LOAD" ] || packages+=(-p valora-bench)
    if [ ${#packages[@]} -gt 0 ]; then
        echo "bench: no release build; cargo build ${packages[*]} (debug)" >&2
        cargo build "${packages[@]}" >&2
    fi
fi
# The header names the build that was measured.
BUILD="$PROFILE build"
[ -n "$VALORA" ] && BUILD="given build ($VALORA)"
VALORA=${VALORA:-$TARGET_DIR/$PROFILE/valora}
LOAD=${LOAD:-$TARGET_DIR/$PROFILE/valora-load}
# The interpreter itself, not a version manager's wrapper: it runs often.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
REPORT="$PYTHON $ROOT/scripts/bench/report.py"

# Settings must come from this script only.
for name in $(compgen -e); do
    case "$name" in
        VALORA_*|MARKETPLACE_*|AUTH_*|RUST_LOG) unset "$name" ;;
    esac
done

# This script, its helpers and the load generators run on core 1. Every
# process it starts inherits nice -10, so that other work on a shared
# machine takes less time from the measured processes (it needs root).
taskset -cp 1 $$ >/dev/null
renice -n -10 -p $$ >/dev/null 2>&1 || echo "bench: cannot raise priority (not root); other processes may disturb the figures" >&2
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/valora-bench.XXXXXX)
if [ -z "$OUT" ]; then
    OUT=$ROOT/target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)-$MODE
fi
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
ERRORS=()
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ -d "$WORK" ]; then
        mkdir -p "$OUT/logs"
        for log in "$WORK"/*.log "$WORK"/nginx/error.log; do
            [ -f "$log" ] && tail -n 200 "$log" >"$OUT/logs/$(basename "$log")"
        done
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "bench: ERROR: $*" >&2
    ERRORS+=("$*")
}

# record COMPARISON METRIC SIDE ROUND VALUE
record() {
    if ! [[ $5 =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
        fail "$1 $2 $3 round $4: no figure (got '$5')"
        return 1
    fi
    printf '{"cmp":"%s","metric":"%s","side":"%s","round":%s,"value":%s}\n' "$1" "$2" "$3" "$4" "$5" >>"$RESULTS"
}

calc() { "$PYTHON" -c "import math; print($1)"; }

# --- ports, PKI, databases --------------------------------------------------
USED_PORTS=" "
port() {
    local p
    while :; do
        # Below the range the end-to-end tests pick from (20000-31999).
        p=$((12000 + RANDOM % 8000))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if [ -z "$(ss -Htan "sport = :$p")" ]; then
            USED_PORTS="$USED_PORTS$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
}
for name in EDGE EDGE_ADMIN PLAIN PLAIN_ADMIN LIMITED LIMITED_ADMIN NGINX MARKET MARKET_ADMIN AUTH AUTH_ADMIN; do
    port "${name}_PORT"
done

CERTS=$WORK/certs
"$VALORA" certs dev --certs-dir "$CERTS" >/dev/null
KEY=bench-static-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
BAD_KEY=bench-wrong-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PEPPER=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
WEBHOOK_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
EMAIL=storm@bench.example
PASSWORD="quartz-lantern-mosaic-91-drift"
MARKET_DB="sqlite://$WORK/marketplace.db?mode=rwc"
AUTH_DB="sqlite://$WORK/auth.db?mode=rwc"
"$VALORA" migrate marketplace --database-url "$MARKET_DB" >/dev/null
"$VALORA" migrate auth --database-url "$AUTH_DB" >/dev/null
"$VALORA" auth new-signing-key --dir "$WORK/signing" >/dev/null
PRINCIPAL=$("$LOAD" principal --api-key "$KEY")
export VALORA_LOAD_API_KEY=$KEY

# --- processes --------------------------------------------------------------
# start NAME CPUS COMMAND...: runs in the background, logs to $WORK/NAME.log,
# sets NAME_PID.
start() {
    local name=$1 cpus=$2
    shift 2
    taskset -c "$cpus" "$@" >>"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    printf -v "${name}_PID" '%s' "$!"
}

COMMON=(VALORA_CERTS_DIR="$CERTS" VALORA_SHUTDOWN_DELAY_SECONDS=0 VALORA_DRAIN_SECONDS=2)
if [ "$MODE" = smoke ]; then
    # Cheap password hashing keeps the smoke run short on a debug build.
    COMMON+=(AUTH_ARGON2_MEMORY_KIB=1024 AUTH_ARGON2_ITERATIONS=1)
    export AUTH_ARGON2_MEMORY_KIB=1024 AUTH_ARGON2_ITERATIONS=1
fi
NO_LIMITS=(VALORA_RATE_LIMIT_PER_KEY=off VALORA_RATE_LIMIT_PER_USER=off
    VALORA_RATE_LIMIT_FAILURES_PER_ADDRESS=off VALORA_RATE_LIMIT_METHODS=off)

start AUTH 1 env "${COMMON[@]}" AUTH_API_KEY_PEPPER="$PEPPER" MARKETPLACE_API_KEY="$KEY" \
    "$VALORA" serve auth --auth-addr "127.0.0.1:$AUTH_PORT" --admin-addr "127.0.0.1:$AUTH_ADMIN_PORT" \
    --auth-database-url "$AUTH_DB" --signing-keys-dir "$WORK/signing"
start MARKET 1 env "${COMMON[@]}" MARKETPLACE_API_KEY="$KEY" MARKETPLACE_WEBHOOK_KEY="$WEBHOOK_KEY" \
    "$VALORA" serve marketplace --marketplace-addr "127.0.0.1:$MARKET_PORT" \
    --admin-addr "127.0.0.1:$MARKET_ADMIN_PORT" --marketplace-database-url "$MARKET_DB" \
    --auth-addr "127.0.0.1:$AUTH_PORT"
# edge(NAME PORT ADMIN_PORT EXTRA_ENV...): an edge on core 0.
edge() {
    local name=$1 edge_port=$2 admin_port=$3
    shift 3
    start "$name" 0 env "${COMMON[@]}" MARKETPLACE_API_KEY="$KEY" "$@" \
        "$VALORA" serve edge --edge-addr "127.0.0.1:$edge_port" --admin-addr "127.0.0.1:$admin_port" \
        --marketplace-addr "127.0.0.1:$MARKET_PORT" --auth-addr "127.0.0.1:$AUTH_PORT"
}
TLS_ENV=(VALORA_EDGE_TLS_CERT="$CERTS/edge.pem" VALORA_EDGE_TLS_KEY="$CERTS/edge.key")
edge EDGE "$EDGE_PORT" "$EDGE_ADMIN_PORT" "${NO_LIMITS[@]}" "${TLS_ENV[@]}"
edge PLAIN "$PLAIN_PORT" "$PLAIN_ADMIN_PORT" "${NO_LIMITS[@]}"
edge LIMITED "$LIMITED_PORT" "$LIMITED_ADMIN_PORT" "${TLS_ENV[@]}" VALORA_RATE_LIMIT_PER_KEY=1/hour \
    VALORA_RATE_LIMIT_PER_USER=off VALORA_RATE_LIMIT_FAILURES_PER_ADDRESS=off VALORA_RATE_LIMIT_METHODS=off

NGINX_PREFIX=$WORK/nginx
mkdir -p "$NGINX_PREFIX"
cp "$ROOT/scripts/bench/security-headers.conf" "$NGINX_PREFIX/"
sed -e "s|@PREFIX@|$NGINX_PREFIX|g" -e "s|@CERTS@|$CERTS|g" -e "s|@PORT@|$NGINX_PORT|g" \
    -e "s|@MARKETPLACE_PORT@|$MARKET_PORT|g" -e "s|@API_KEY@|$KEY|g" -e "s|@PRINCIPAL@|$PRINCIPAL|g" \
    "$ROOT/scripts/bench/nginx.conf.in" >"$NGINX_PREFIX/nginx.conf"
start NGINX 0 nginx -p "$NGINX_PREFIX" -e "$NGINX_PREFIX/error.log" -c "$NGINX_PREFIX/nginx.conf"

wait_ready() {
    local name=$1 url=$2 pid_var="${1}_PID"
    for _ in $(seq 1 300); do
        if ! kill -0 "${!pid_var}" 2>/dev/null; then
            echo "bench: $name exited; its log:" >&2
            tail -n 30 "$WORK/$name.log" >&2
            exit 1
        fi
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    echo "bench: $name did not become ready at $url" >&2
    exit 1
}
wait_ready AUTH "http://127.0.0.1:$AUTH_ADMIN_PORT/readyz"
wait_ready MARKET "http://127.0.0.1:$MARKET_ADMIN_PORT/readyz"
for name in EDGE PLAIN LIMITED; do
    admin_var="${name}_ADMIN_PORT"
    wait_ready "$name" "http://127.0.0.1:${!admin_var}/readyz"
done
NGINX_WORKERS=""
for _ in $(seq 1 100); do
    if ! kill -0 "$NGINX_PID" 2>/dev/null; then
        echo "bench: nginx exited; its log:" >&2
        tail -n 30 "$WORK/NGINX.log" >&2
        exit 1
    fi
    NGINX_WORKERS=$(ps -o pid= --ppid "$NGINX_PID" | tr '\n' ' ' || true)
    [ -n "${NGINX_WORKERS// /}" ] && break
    sleep 0.1
done
NGINX_PIDS="$NGINX_PID $NGINX_WORKERS"

EDGE_TARGET=(--addr "127.0.0.1:$EDGE_PORT" --tls --ca "$CERTS/ca.pem")
NGINX_TARGET=(--addr "127.0.0.1:$NGINX_PORT" --tls --ca "$CERTS/ca.pem")
LIMITED_TARGET=(--addr "127.0.0.1:$LIMITED_PORT" --tls --ca "$CERTS/ca.pem")
# Straight to the marketplace as the edge: its certificate and the principal
# header the edge would add, no API key.
DIRECT_TARGET=(--addr "127.0.0.1:$MARKET_PORT" --certs-dir "$CERTS" --identity edge --expect marketplace
    --header "x-valora-principal:$PRINCIPAL" --api-key "")

# Seed: a published listing and a user, through the edge (retried while the
# edge's first connections to the services come up).
for attempt in $(seq 1 50); do
    if SEED=$("$LOAD" seed "${EDGE_TARGET[@]}" --email "$EMAIL" --password "$PASSWORD" 2>"$WORK/seed.err"); then
        break
    fi
    [ "$attempt" = 50 ] && { cat "$WORK/seed.err" >&2; exit 1; }
    sleep 0.2
done
LISTING=$(echo "$SEED" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["listing_id"])')
GET_LISTING=(--rpc get-listing --listing-id "$LISTING")
FRAME=$WORK/get-listing.bin
"$LOAD" frame "${GET_LISTING[@]}" --out "$FRAME"
METHOD_PATH=/valora.marketplace.v1.MarketplaceService/GetListing

# --- measuring --------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { $REPORT cpu "$@"; }
market_calls() { $REPORT calls "http://127.0.0.1:$MARKET_ADMIN_PORT/metrics" marketplace GetListing; }
edge_calls() { $REPORT calls "http://127.0.0.1:$1/metrics" edge GetListing; }
# field JSON KEY: one field of a JSON object; 0 when absent.
field() { "$PYTHON" -c "import json,sys; print(json.loads(sys.argv[1] or '{}').get(sys.argv[2], 0))" "$1" "$2"; }

# load OUT ARGS...: valora-load run on core 1; its JSON report in OUT.
load() {
    local out=$1
    shift
    if ! taskset -c 1 "$LOAD" run "$@" >"$out" 2>"$out.err"; then
        fail "valora-load $(head -c 300 "$out.err") (report: $out)"
        cp "$out" "$out.err" "$OUT/" 2>/dev/null || true
        return 1
    fi
}

# h2load_run LABEL URL PIDS ADMIN_PORT [SECONDS]: gRPC GetListing with
# h2load, whose HTTP-only view is completed by the call counters of the
# marketplace (and of the edge when ADMIN_PORT is set): every call h2load
# finished must be counted OK there, no call may have any code but OK or
# Cancelled, and Cancelled only for calls h2load started but did not finish
# (in flight when its time was up). Sets RPS, CPU_US and CPU_UTIL.
h2load_run() {
    local label=$1 url=$2 pids=$3 admin=${4:-} seconds=${5:-$RUN_SECONDS}
    local out=$WORK/h2load-$label.txt before_m after_m before_e after_e t0 t1 parsed
    before_m=$(market_calls)
    [ -n "$admin" ] && before_e=$(edge_calls "$admin")
    # shellcheck disable=SC2086
    t0=$(cpu_ticks $pids)
    local began=$SECONDS
    taskset -c 1 h2load -t 1 -c "$H2_CONNECTIONS" -m "$H2_STREAMS" -D "$seconds" \
        -H "content-type: application/grpc" -H "te: trailers" -H "x-api-key: $KEY" \
        -d "$FRAME" "$url$METHOD_PATH" >"$out" 2>&1 || true
    # shellcheck disable=SC2086
    t1=$(cpu_ticks $pids)
    if [ $((SECONDS - began)) -gt $((seconds + 5)) ]; then
        echo "bench: h2load $label took $((SECONDS - began))s for a ${seconds}s run" >&2
    fi
    sleep 0.3
    after_m=$(market_calls)
    parsed=$($REPORT h2load "$out")
    local finished started failed errored s2xx
    finished=$(field "$parsed" done) started=$(field "$parsed" started)
    failed=$(field "$parsed" failed) errored=$(field "$parsed" errored) s2xx=$(field "$parsed" s2xx)
    if [ "$finished" -eq 0 ] || [ "$failed" -ne 0 ] || [ "$errored" -ne 0 ] || [ "$s2xx" -ne "$finished" ]; then
        fail "h2load $label: done=$finished failed=$failed errored=$errored 2xx=$s2xx"
    fi
    check_counts "h2load $label" marketplace "$before_m" "$after_m" "$finished" "$started"
    if [ -n "$admin" ]; then
        after_e=$(edge_calls "$admin")
        check_counts "h2load $label" edge "$before_e" "$after_e" "$finished" "$started"
    fi
    RPS=$(field "$parsed" rps)
    CPU_US=$(calc "($t1 - $t0) / $CLK_TCK * 1e6 / max($finished, 1)")
    CPU_UTIL=$(calc "($t1 - $t0) / $CLK_TCK / $(field "$parsed" seconds)")
}

# check_counts WHAT COMPONENT BEFORE AFTER FINISHED STARTED: at least
# FINISHED calls OK, and no more calls counted than STARTED. A call the
# client started but did not finish was cut when the client stopped, at
# any point of its way, so it may end with any code. So at most
# STARTED - FINISHED calls may have a code other than OK.
check_counts() {
    local ok cancelled bad
    ok=$(( $(field "$4" ok) - $(field "$3" ok) ))
    cancelled=$(( $(field "$4" cancelled) - $(field "$3" cancelled) ))
    bad=$(( $(field "$4" bad) - $(field "$3" bad) ))
    if [ "$ok" -lt "$5" ] || [ $((ok + cancelled + bad)) -gt "$6" ]; then
        fail "$1: $2 counted $ok OK, $cancelled Cancelled and $bad other GetListing calls; client finished $5 of $6 started"
    fi
}

# rounds COMPARISON FUNCTION SIDE...: warm-up each side, then ROUNDS rounds,
# the sides in order on odd rounds and reversed on even ones.
rounds() {
    local cmp=$1 fn=$2
    shift 2
    local sides=("$@") round side order began=$SECONDS
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$cmp,"* ]]; then
        return 0
    fi
    echo "bench: $cmp: warm-up" >&2
    for side in "${sides[@]}"; do
        "$fn" "$side" 0 warmup || true
    done
    for round in $(seq 1 "$ROUNDS"); do
        if [ $((round % 2)) = 1 ]; then
            order=("${sides[@]}")
        else
            order=()
            for ((i = ${#sides[@]} - 1; i >= 0; i--)); do order+=("${sides[$i]}"); done
        fi
        echo "bench: $cmp: round $round (${order[*]})" >&2
        for side in "${order[@]}"; do
            "$fn" "$side" "$round" measure || true
        done
    done
    echo "bench: $cmp: $((SECONDS - began))s" >&2
    # Access logs grow by a line per call.
    truncate -s 0 "$WORK/EDGE.log" "$WORK/PLAIN.log" "$WORK/LIMITED.log" "$NGINX_PREFIX/access.log" 2>/dev/null || true
}

# --- the comparisons --------------------------------------------------------

# Memory: the proxy idle, then with HOLD_CONNECTIONS idle TLS connections
# that each made one call.
memory() {
    local side=$1 round=$2 phase=$3 pids target idle held hold_pid
    [ "$phase" = warmup ] && return 0
    case $side in
        edge) pids=$EDGE_PID; target=("${EDGE_TARGET[@]}") ;;
        nginx) pids=$NGINX_PIDS; target=("${NGINX_TARGET[@]}") ;;
    esac
    # shellcheck disable=SC2086
    idle=$($REPORT pss $pids)
    local ready=$WORK/hold-$side.json
    : >"$ready"
    taskset -c 1 "$LOAD" hold "${target[@]}" "${GET_LISTING[@]}" --connections "$HOLD_CONNECTIONS" \
        --seconds 120 >"$ready" 2>"$ready.err" &
    hold_pid=$!
    for _ in $(seq 1 600); do
        grep -q '"ready"' "$ready" && break
        kill -0 "$hold_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '"ready"' "$ready"; then
        fail "hold on $side: $(head -c 300 "$ready.err")"
        kill "$hold_pid" 2>/dev/null || true
        wait "$hold_pid" 2>/dev/null || true
        return 1
    fi
    sleep "$LOAD_WARMUP"
    # shellcheck disable=SC2086
    held=$($REPORT pss $pids)
    kill "$hold_pid" 2>/dev/null || true
    wait "$hold_pid" 2>/dev/null || true
    # Allocators keep freed memory for reuse, so only the first round sees
    # a fresh process; later rounds show the cost of connections again.
    if [ "$round" = 1 ]; then
        record memory pss_idle_kib "$side" "$round" "$idle"
        record memory pss_per_1000_kib "$side" "$round" "$(calc "($held - $idle) * 1000 / $HOLD_CONNECTIONS")"
    else
        record memory pss_per_1000_again_kib "$side" "$round" "$(calc "($held - $idle) * 1000 / $HOLD_CONNECTIONS")"
    fi
    # Let the proxy close the connections before the next measurement.
    sleep "$LOAD_WARMUP"
}

edge_vs_nginx() {
    local side=$1 round=$2 phase=$3
    if [ "$phase" = warmup ]; then
        # A gRPC-aware pass first: valora-load checks every status.
        case $side in
            edge) load "$WORK/warm-edge.json" "${EDGE_TARGET[@]}" "${GET_LISTING[@]}" --concurrency "$IN_FLIGHT" --connections "$H2_CONNECTIONS" --duration "$LOAD_WARMUP" ;;
            nginx) load "$WORK/warm-nginx.json" "${NGINX_TARGET[@]}" "${GET_LISTING[@]}" --concurrency "$IN_FLIGHT" --connections "$H2_CONNECTIONS" --duration "$LOAD_WARMUP" ;;
        esac
        return 0
    fi
    case $side in
        edge) h2load_run "edge-$round" "https://127.0.0.1:$EDGE_PORT" "$EDGE_PID" "$EDGE_ADMIN_PORT" ;;
        nginx) h2load_run "nginx-$round" "https://127.0.0.1:$NGINX_PORT" "$NGINX_PIDS" ;;
    esac
    record edge_vs_nginx rps "$side" "$round" "$RPS"
    record edge_vs_nginx cpu_us_per_call "$side" "$round" "$CPU_US"
    record edge_vs_nginx cpu_util "$side" "$round" "$CPU_UTIL"
}

latency() {
    local side=$1 round=$2 phase=$3 target out
    case $side in
        edge) target=("${EDGE_TARGET[@]}") ;;
        nginx) target=("${NGINX_TARGET[@]}") ;;
        direct) target=("${DIRECT_TARGET[@]}") ;;
    esac
    if [ "$phase" = warmup ]; then
        load "$WORK/warm-$side.json" "${target[@]}" "${GET_LISTING[@]}" --duration "$LOAD_WARMUP"
        return 0
    fi
    out=$WORK/latency-$side-$round
    if load "$out-unloaded.json" "${target[@]}" "${GET_LISTING[@]}" --concurrency 1 --duration "$RUN_SECONDS"; then
        record latency unloaded_p50 "$side" "$round" "$($REPORT get "$out-unloaded.json" latency_us.p50)"
        record latency unloaded_p99 "$side" "$round" "$($REPORT get "$out-unloaded.json" latency_us.p99)"
    fi
    if load "$out-half.json" "${target[@]}" "${GET_LISTING[@]}" --rate "$HALF_RATE" --concurrency 256 \
        --connections "$H2_CONNECTIONS" --duration "$RUN_SECONDS"; then
        record latency half_p50 "$side" "$round" "$($REPORT get "$out-half.json" latency_us.p50)"
        record latency half_p99 "$side" "$round" "$($REPORT get "$out-half.json" latency_us.p99)"
    fi
}

tls_vs_h2c() {
    local side=$1 round=$2 phase=$3 seconds=$RUN_SECONDS
    [ "$phase" = warmup ] && [ "$MODE" = smoke ] && return 0
    [ "$phase" = warmup ] && seconds=$WARMUP
    case $side in
        tls) h2load_run "tls-$round" "https://127.0.0.1:$EDGE_PORT" "$EDGE_PID" "$EDGE_ADMIN_PORT" "$seconds" ;;
        h2c) h2load_run "h2c-$round" "http://127.0.0.1:$PLAIN_PORT" "$PLAIN_PID" "$PLAIN_ADMIN_PORT" "$seconds" ;;
    esac
    [ "$phase" = warmup ] && return 0
    record tls_vs_h2c rps "$side" "$round" "$RPS"
    record tls_vs_h2c cpu_us_per_call "$side" "$round" "$CPU_US"
}

grpc_web() {
    local side=$1 round=$2 phase=$3 seconds=$RUN_SECONDS
    [ "$phase" = warmup ] && [ "$MODE" = smoke ] && return 0
    [ "$phase" = warmup ] && seconds=$WARMUP
    if [ "$side" = grpc ]; then
        h2load_run "grpc-$round" "https://127.0.0.1:$EDGE_PORT" "$EDGE_PID" "$EDGE_ADMIN_PORT" "$seconds"
    else
        local out=$WORK/wrk-$round.txt before after t0 t1 parsed
        before=$(edge_calls "$EDGE_ADMIN_PORT")
        t0=$(cpu_ticks "$EDGE_PID")
        BENCH_FRAME=$FRAME BENCH_API_KEY=$KEY taskset -c 1 wrk -t 1 -c "$IN_FLIGHT" -d "${seconds}s" \
            -s "$ROOT/scripts/bench/grpc-web.lua" "https://127.0.0.1:$EDGE_PORT$METHOD_PATH" >"$out" 2>&1 || true
        t1=$(cpu_ticks "$EDGE_PID")
        sleep 0.3
        after=$(edge_calls "$EDGE_ADMIN_PORT")
        parsed=$($REPORT wrk "$out")
        local requests ok failed bad
        requests=$(field "$parsed" requests) ok=$(field "$parsed" ok) failed=$(field "$parsed" failed)
        bad=$(( $(field "$after" bad) - $(field "$before" bad) ))
        # wrk closes its connections with calls in flight when time is up.
        local cancelled
        cancelled=$(( $(field "$after" cancelled) - $(field "$before" cancelled) ))
        [ "$cancelled" -gt "$IN_FLIGHT" ] && bad=$((bad + cancelled))
        if [ "$requests" -eq 0 ] || [ "$failed" -ne 0 ] || [ "$ok" -ne "$requests" ] \
            || [ "$(field "$parsed" non2xx)" -ne 0 ] || [ "$(field "$parsed" socket_errors)" -ne 0 ] || [ "$bad" -ne 0 ]; then
            fail "wrk grpc-web round $round: $parsed; edge counted $bad non-OK calls"
        fi
        RPS=$(field "$parsed" rps)
        CPU_US=$(calc "($t1 - $t0) / $CLK_TCK * 1e6 / max($requests, 1)")
    fi
    [ "$phase" = warmup ] && return 0
    record grpc_web rps "$side" "$round" "$RPS"
    record grpc_web cpu_us_per_call "$side" "$round" "$CPU_US"
}

rejections() {
    local side=$1 round=$2 phase=$3 pid target expect=() out t0 t1 seconds=$RUN_SECONDS
    [ "$phase" = warmup ] && seconds=$LOAD_WARMUP
    case $side in
        accepted) pid=$EDGE_PID; target=("${EDGE_TARGET[@]}") ;;
        bad_key) pid=$EDGE_PID; target=("${EDGE_TARGET[@]}" --api-key "$BAD_KEY"); expect=(--expect-status 16) ;;
        # The limit is 1/hour per key: the warm-up's first call takes it.
        over_limit) pid=$LIMITED_PID; target=("${LIMITED_TARGET[@]}"); expect=(--expect-status 8) ;;
    esac
    if [ "$phase" = warmup ] && [ "$side" = over_limit ]; then
        "$LOAD" run "${target[@]}" "${GET_LISTING[@]}" --requests 1 --duration 5 >/dev/null 2>&1 || true
    fi
    out=$WORK/reject-$side-$round.json
    t0=$(cpu_ticks "$pid")
    load "$out" "${target[@]}" "${GET_LISTING[@]}" "${expect[@]}" --concurrency "$IN_FLIGHT" \
        --connections "$H2_CONNECTIONS" --duration "$seconds" || return 1
    t1=$(cpu_ticks "$pid")
    [ "$phase" = warmup ] && return 0
    local calls
    calls=$($REPORT get "$out" calls)
    record rejections cpu_us_per_call "$side" "$round" "$(calc "($t1 - $t0) / $CLK_TCK * 1e6 / max($calls, 1)")"
    record rejections rps "$side" "$round" "$($REPORT get "$out" rps)"
}

tls_burst() {
    local side=$1 round=$2 phase=$3 out burst_pid=""
    if [ "$phase" = warmup ]; then
        load "$WORK/warm-steady.json" "${EDGE_TARGET[@]}" "${GET_LISTING[@]}" --rate "$STEADY_RATE" \
            --concurrency 256 --connections 2 --duration "$LOAD_WARMUP"
        return 0
    fi
    out=$WORK/burst-$side-$round
    if [ "$side" = burst ]; then
        taskset -c 1 "$LOAD" run "${EDGE_TARGET[@]}" --rpc health --fresh-connections --rate "$BURST_RATE" \
            --concurrency 64 --duration "$(calc "$RUN_SECONDS + 1")" >"$out-churn.json" 2>"$out-churn.err" &
        burst_pid=$!
        sleep 0.5
    fi
    load "$out.json" "${EDGE_TARGET[@]}" "${GET_LISTING[@]}" --rate "$STEADY_RATE" --concurrency 256 \
        --connections 2 --duration "$RUN_SECONDS" || true
    if [ -n "$burst_pid" ]; then
        if ! wait "$burst_pid"; then
            fail "TLS burst round $round: $(head -c 300 "$out-churn.err")"
        else
            record tls_burst new_connections_per_s burst "$round" "$($REPORT get "$out-churn.json" rps)"
        fi
    fi
    [ -s "$out.json" ] || return 1
    record tls_burst p99 "$side" "$round" "$($REPORT get "$out.json" latency_us.p99)"
    record tls_burst p50 "$side" "$round" "$($REPORT get "$out.json" latency_us.p50)"
}

login_storm() {
    local side=$1 round=$2 phase=$3 out storm_pid=""
    local jwks=(--rpc get-jwks --rate "$JWKS_RATE" --concurrency 64 --duration "$RUN_SECONDS")
    if [ "$phase" = warmup ]; then
        load "$WORK/warm-jwks.json" "${EDGE_TARGET[@]}" --rpc get-jwks --duration "$LOAD_WARMUP"
        load "$WORK/warm-login.json" "${EDGE_TARGET[@]}" --rpc login --login-email "$EMAIL" \
            --login-password "$PASSWORD" --requests 2 --duration "$LOAD_WARMUP"
        return 0
    fi
    out=$WORK/storm-$side-$round
    if [ "$side" = storm ]; then
        taskset -c 1 "$LOAD" run "${EDGE_TARGET[@]}" --rpc login --login-email "$EMAIL" \
            --login-password "$PASSWORD" --concurrency 4 --duration "$(calc "$RUN_SECONDS + 1")" \
            >"$out-login.json" 2>"$out-login.err" &
        storm_pid=$!
        sleep 0.5
    fi
    load "$out.json" "${EDGE_TARGET[@]}" "${jwks[@]}" || true
    if [ -n "$storm_pid" ]; then
        if ! wait "$storm_pid"; then
            fail "login storm round $round: $(head -c 300 "$out-login.err")"
        else
            record login_storm login_rps storm "$round" "$($REPORT get "$out-login.json" rps)"
            record login_storm login_rps model "$round" "$MODEL_LOGIN_RPS"
        fi
    fi
    [ -s "$out.json" ] || return 1
    record login_storm jwks_p99 "$side" "$round" "$($REPORT get "$out.json" latency_us.p99)"
}

# --- run ----------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: $MODE run, $PROFILE binaries ($VALORA), $ROUNDS rounds of ${RUN_SECONDS}s, SQLite, results in $OUT" >&2

rounds memory memory edge nginx
rounds edge_vs_nginx edge_vs_nginx edge nginx

# Half load: half of the edge's median throughput from the comparison above.
EDGE_RPS=$("$PYTHON" -c "
import json, statistics
v = [r['value'] for r in map(json.loads, open('$RESULTS')) if r['cmp'] == 'edge_vs_nginx' and r['metric'] == 'rps' and r['side'] == 'edge']
print(statistics.median(v) if v else 200)")
HALF_RATE=$(calc "max(round($EDGE_RPS / 2), 10)")
STEADY_RATE=$(calc "max(round($EDGE_RPS / 4), $STEADY_RATE_MIN)")
rounds latency latency edge nginx direct
rounds tls_vs_h2c tls_vs_h2c tls h2c
rounds grpc_web grpc_web grpc_web grpc
rounds rejections rejections accepted bad_key over_limit
rounds tls_burst tls_burst burst steady

# The login storm: the auth service moves to core 0, alone, so that its
# hashing competes only with its own async runtime; the edge and the
# marketplace join the load generators on core 1.
taskset -acp 0 "$AUTH_PID" >/dev/null
taskset -acp 1 "$EDGE_PID" >/dev/null
HASH_JSON=$(taskset -c 0 "$LOAD" argon2 --hashes "$ARGON2_HASHES") || { fail "valora-load argon2 failed"; HASH_JSON="{}"; }
HASH_MS=$(field "$HASH_JSON" hash_ms_median)
# One core for the auth service: one hash at a time.
MODEL_LOGIN_RPS=$(calc "1000 / max($HASH_MS, 1e-9)")
rounds login_storm login_storm storm calm
taskset -acp 1 "$AUTH_PID" >/dev/null
taskset -acp 0 "$EDGE_PID" >/dev/null

# --- report -------------------------------------------------------------------
ELAPSED=$(( $(date +%s) - STARTED_AT ))
{
    echo "VALORA edge benchmarks: $MODE run, $BUILD, $ROUNDS round(s) of ${RUN_SECONDS}s per side,"
    echo "SQLite, $(nproc --all) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
        "$(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r)),"
    echo "edge half load ${HALF_RATE}/s, steady ${STEADY_RATE}/s, burst ${BURST_RATE} new TLS connections/s,"
    echo "one argon2id hash ${HASH_MS} ms (${HASH_JSON}), ${IN_FLIGHT} calls in flight for throughput;"
    echo "load average before ${LOAD_BEFORE}, after $(cut -d' ' -f1-3 /proc/loadavg) (other processes share both cores)."
    echo
    $REPORT summary "$RESULTS" "$OUT/summary.json"
    echo
    echo "took ${ELAPSED}s"
} | tee "$OUT/table.md"

if [ ${#ERRORS[@]} -gt 0 ]; then
    # The table stays for diagnosis, marked so that nobody publishes it.
    echo "REJECTED: the run had ${#ERRORS[@]} error(s); these figures are not valid." >>"$OUT/table.md"
    echo "bench: the run had ${#ERRORS[@]} error(s); its figures are rejected:" >&2
    printf '  %s\n' "${ERRORS[@]}" >&2
    exit 1
fi
echo "bench: no errors; raw results in $OUT" >&2
