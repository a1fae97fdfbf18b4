#!/usr/bin/env bash
# Supply-chain, protocol and TLS scans, run by .ci/run before the tests.
#
#   scripts/scan.sh [deny] [buf] [tls]     (all three when none is named)
#
# deny  cargo-deny: advisories from an offline RustSec snapshot (the
#       folder VALORA_ADVISORY_SNAPSHOT names), licences, banned crates and
#       sources (deny.toml).
# buf   buf lint on proto/, and buf breaking against the main branch and,
#       when there is one, the commit before HEAD.
# tls   sslscan, plus handshakes this script writes itself, against the
#       edge serving TLS and the marketplace's mutual-TLS listener of a
#       `valora dev` mesh on loopback.
#
# Every scan runs even when an earlier one failed; the script ends with one
# line per scan and exits non-zero when any failed. Needs cargo-deny,
# sslscan, python3, git and tests/browser/node_modules (npm ci), which
# .ci/run installs.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
note() { printf 'scan: %s\n' "$*"; }
fail() {
    local scan=$1
    shift
    printf 'scan: %s FAILED: %s\n' "$scan" "$*" >&2
    failed+=("$scan")
}

# ---------------------------------------------------------------- deny ---

# cargo-deny keeps each advisory database in a folder named after its URL
# (the last path segment and a hash of the URL); this is the name it gives
# the URL in deny.toml.
ADVISORY_DB_DIR=advisory-db-3157b0e258782691
# Older snapshots than this get a warning; deny.toml refuses them after a
# year.
ADVISORY_DB_WARN_DAYS=90

scan_deny() {
    local snapshot=${VALORA_ADVISORY_SNAPSHOT:-../shared/advisory-db}
    if ! command -v cargo-deny >/dev/null; then
        fail deny "cargo-deny is not installed (cargo install cargo-deny --locked)"
        return
    fi
    if [ ! -d "$snapshot/crates" ]; then
        fail deny "no RustSec snapshot at $snapshot"
        return
    fi
    local root
    root=$(mktemp -d)
    local db="$root/$ADVISORY_DB_DIR"
    # The snapshot is read-only and not a git repository; cargo-deny wants
    # a repository and reads its date from the last commit and .git/HEAD.
    cp -R "$snapshot" "$db" && chmod -R u+w "$db"
    local date
    date=$(grep -o 'of [0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}' "$snapshot/SNAPSHOT.md" | head -1 | cut -c4-)
    date=${date:-$(date -u +%F)}
    (
        cd "$db" &&
            git -c init.defaultBranch=main init -q &&
            git add -A &&
            GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
                git -c user.name=scan -c user.email=scan@localhost commit -qm "RustSec snapshot of $date"
    ) || {
        fail deny "could not turn the snapshot into a git repository"
        rm -rf "$root"
        return
    }
    touch -d "${date}T00:00:00Z" "$db/.git/HEAD"
    local age=$((($(date -u +%s) - $(date -u -d "$date" +%s)) / 86400))
    note "deny: RustSec snapshot of $date, $age days old"
    if [ "$age" -gt "$ADVISORY_DB_WARN_DAYS" ]; then
        note "deny: WARNING: the snapshot is older than $ADVISORY_DB_WARN_DAYS days; advisories published since $date are not checked"
    fi
    # cargo metadata needs every platform's crates in the local cache,
    # which --offline cannot download.
    if ! cargo fetch --quiet; then
        fail deny "cargo fetch failed"
        rm -rf "$root"
        return
    fi
    local log="$root/deny.log"
    VALORA_ADVISORY_DBS=$root cargo deny --offline --color never check 2>"$log"
    local status=$?
    # Duplicate versions are reported at warning level; show the rest.
    grep -v -e '^\s*$' "$log" | awk '/^(error|warning)\[/ { keep = ($0 !~ /^warning\[duplicate\]/) } keep || /^(advisories|bans|licenses|sources)/' | head -200
    note "deny: $(grep -c '^warning\[duplicate\]' "$log") crates in more than one version (warnings)"
    note "deny: advisories ignored in deny.toml, each with its reason there: $(grep -o 'id = "RUSTSEC-[0-9-]*"' deny.toml | cut -d'"' -f2 | tr '\n' ' ')"
    if [ "$status" -ne 0 ]; then
        if grep -q "cannot change to '.*$ADVISORY_DB_DIR'" "$log"; then
            fail deny "cargo-deny looked for the advisory database under another folder name; update ADVISORY_DB_DIR in scripts/scan.sh for this cargo-deny version"
        else
            fail deny "cargo deny check reported errors (above)"
        fi
    fi
    rm -rf "$root"
}

# ----------------------------------------------------------------- buf ---

scan_buf() {
    local buf=tests/browser/node_modules/.bin/buf
    if [ ! -x "$buf" ]; then
        fail buf "$buf is missing; run npm ci in tests/browser"
        return
    fi
    note "buf: $("$buf" --version) lint proto"
    "$buf" lint proto || fail buf "buf lint found problems in proto/ (above)"
    # The working tree against the main branch: what is not committed yet.
    note "buf: breaking proto against the main branch"
    "$buf" breaking proto --against '.git#branch=main,subdir=proto' ||
        fail buf "proto/ breaks compatibility with the main branch (above)"
    # The newest commit against its parent: in CI the working tree is the
    # main branch, so this is the comparison that sees the change.
    if git rev-parse --verify --quiet HEAD~1 >/dev/null; then
        note "buf: breaking proto at HEAD against HEAD~1"
        "$buf" breaking '.git#ref=HEAD,subdir=proto' --against '.git#ref=HEAD~1,subdir=proto' ||
            fail buf "the newest commit breaks compatibility of proto/ with its parent (above)"
    else
        note "buf: HEAD has no parent commit here; only the main-branch comparison ran"
    fi
}

# ----------------------------------------------------------------- tls ---

# What counts as weak, and so fails the scan:
# - protocols: SSLv2, SSLv3, TLS 1.0 and TLS 1.1 anywhere (RFC 8996), and
#   anything but TLS 1.3 on the internal listener;
# - suites: anything but ephemeral ECDHE with an AEAD cipher (AES-GCM or
#   ChaCha20-Poly1305), so RC4, 3DES and DES, NULL, EXPORT, anonymous,
#   static-RSA key exchange, every CBC suite (SHA-1 or SHA-2 MAC), CCM_8,
#   PSK, SRP, finite-field DHE, Camellia and ARIA;
# - key exchange groups under 128-bit security;
# - certificates with RSA keys under 2048 bits or EC keys under 256 bits,
#   or signed with SHA-1 or MD5;
# - insecure renegotiation, TLS compression, Heartbleed.
TLS_PROBE=$(
    cat <<'PY'
import os, socket, struct, sys, xml.etree.ElementTree as ET

AEAD_13 = {0x1301, 0x1302, 0x1303}
AEAD_12 = {0xC02B, 0xC02C, 0xC02F, 0xC030, 0xCCA8, 0xCCA9}
ECDSA_AES128_GCM = 0xC02B
# Suites that Debian's OpenSSL, and so sslscan, cannot offer; offered here
# in handshakes written by hand.
LEGACY = {
    "RC4": [0x0004, 0x0005, 0xC007, 0xC011, 0x0018],
    "3DES": [0x000A, 0xC008, 0xC012, 0x0016, 0x001B],
    "DES": [0x0009, 0x0015, 0x001A],
    "EXPORT": [0x0003, 0x0006, 0x0008, 0x0014, 0x0017, 0x0019],
    "NULL": [0x0001, 0x0002, 0x003B, 0xC006, 0xC010],
    "anonymous": [0x0034, 0x003A, 0x00A6, 0xC018, 0xC019],
    "CBC": [0x002F, 0x0035, 0x003C, 0x003D, 0xC009, 0xC00A, 0xC013, 0xC014, 0xC023, 0xC024, 0xC027, 0xC028],
}

problems = []


def check(ok, message):
    print(("  ok     " if ok else "  FAIL   ") + message)
    if not ok:
        problems.append(message)


def sslscan_findings(path, internal):
    doc = ET.parse(path).getroot().find("ssltest")
    if doc is None:
        check(False, "sslscan produced no result (it could not connect)")
        return
    protocols = {(p.get("type"), p.get("version")): p.get("enabled") == "1" for p in doc.iter("protocol")}
    wanted = {("tls", "1.3")} if internal else {("tls", "1.2"), ("tls", "1.3")}
    for (kind, version), enabled in sorted(protocols.items()):
        name = f"{kind.upper().replace('TLS', 'TLS ').replace('SSL', 'SSLv')}{version}"
        if (kind, version) in wanted:
            check(enabled, f"{name} offered")
        else:
            check(not enabled, f"{name} refused")
    accepted = [c for c in doc.iter("cipher")]
    for c in accepted:
        suite = int(c.get("id"), 16)
        if c.get("sslversion") == "TLSv1.3":
            allowed = AEAD_13
        else:
            allowed = set() if internal else AEAD_12
        check(suite in allowed, f"{c.get('sslversion')} {c.get('cipher')} ({c.get('bits')} bits) is ECDHE with an AEAD cipher")
    check(bool(accepted), f"{len(accepted)} suites accepted, all listed above")
    for g in doc.iter("group"):
        check(int(g.get("bits", "0")) >= 128, f"{g.get('sslversion')} group {g.get('name')} has {g.get('bits')}-bit security")
    for r in doc.iter("renegotiation"):
        check(r.get("supported") == "0" or r.get("secure") == "1", "no insecure renegotiation")
    for h in doc.iter("heartbleed"):
        check(h.get("vulnerable") == "0", f"{h.get('sslversion')} not vulnerable to Heartbleed")
    for cert in doc.iter("certificate"):
        sig = (cert.findtext("signature-algorithm") or "").lower()
        check("sha1" not in sig and "md5" not in sig, f"certificate signed with {sig}")
        pk = cert.find("pk")
        if pk is not None:
            bits = int(pk.get("bits", "0"))
            if pk.get("type") == "RSA":
                check(bits >= 2048, f"certificate RSA key of {bits} bits")
            else:
                check(bits >= 128, f"certificate {pk.get('type')} key {pk.get('curve_name', '')} of {bits}-bit security")


def u16(v):
    return struct.pack(">H", v)


def vec16(b):
    return u16(len(b)) + b


def ext(kind, data):
    return u16(kind) + vec16(data)


def hello(version, suites, compression=(0,), tls13=False):
    """A ClientHello record. Extensions as a TLS 1.2 client sends them;
    with tls13, also supported_versions (1.3 only) and an X25519 share."""
    exts = ext(0x000A, vec16(b"".join(u16(g) for g in (0x001D, 0x0017, 0x0018))))
    exts += ext(0x000B, b"\x01\x00")
    exts += ext(0x000D, vec16(b"".join(u16(s) for s in (0x0403, 0x0503, 0x0804, 0x0805, 0x0401, 0x0501, 0x0203, 0x0201))))
    exts += ext(0xFF01, b"\x00") + ext(0x0017, b"")
    if tls13:
        exts += ext(0x002B, b"\x02\x03\x04")
        exts += ext(0x0033, vec16(u16(0x001D) + vec16(os.urandom(32))))
    body = u16(version) + os.urandom(32) + b"\x00" + vec16(b"".join(u16(s) for s in suites))
    body += bytes([len(compression)]) + bytes(compression) + vec16(exts)
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16" + u16(min(version, 0x0301)) + vec16(message)


def sslv2_hello():
    specs = bytes.fromhex("010080" "020080" "030080" "040080" "0700c0" "060040")
    challenge = os.urandom(16)
    body = b"\x01" + u16(0x0002) + u16(len(specs)) + u16(0) + u16(len(challenge)) + specs + challenge
    return u16(0x8000 | len(body)) + body


def exchange(port, data):
    """The server's answer to data: ("accepted", version, suite,
    compression), ("refused", why) or ("sslv2-accepted",)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(data)
            head = b""
            while len(head) < 5:
                chunk = s.recv(5 - len(head))
                if not chunk:
                    return ("refused", "connection closed" if not head else "short answer")
                head += chunk
            if head[0] & 0x80 and head[2] == 0x04:
                return ("sslv2-accepted",)
            if head[0] == 0x15:
                rest = s.recv(2)
                return ("refused", f"alert {rest[1] if len(rest) > 1 else '?'}")
            if head[0] != 0x16:
                return ("refused", f"record type {head[0]}")
            length = int.from_bytes(head[3:5], "big")
            record = b""
            while len(record) < length:
                chunk = s.recv(length - len(record))
                if not chunk:
                    break
                record += chunk
            if not record or record[0] != 0x02:
                return ("refused", "no ServerHello")
            sh = record[4:]
            version = int.from_bytes(sh[0:2], "big")
            sid = sh[34]
            suite = int.from_bytes(sh[35 + sid:37 + sid], "big")
            compression = sh[37 + sid]
            rest = sh[38 + sid:]
            if len(rest) >= 2:
                exts, i = rest[2:2 + int.from_bytes(rest[0:2], "big")], 0
                while i + 4 <= len(exts):
                    kind, size = int.from_bytes(exts[i:i + 2], "big"), int.from_bytes(exts[i + 2:i + 4], "big")
                    if kind == 0x002B:
                        version = int.from_bytes(exts[i + 4:i + 6], "big")
                    i += 4 + size
            return ("accepted", version, suite, compression)
    except (socket.timeout, ConnectionError) as e:
        return ("refused", type(e).__name__)


def describe(answer):
    if answer[0] != "accepted":
        return " ".join(map(str, answer))
    names = {0x0300: "SSLv3", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
    return f"accepted with {names.get(answer[1], hex(answer[1]))}, suite 0x{answer[2]:04X}, compression {answer[3]}"


def handshakes(port, internal):
    probes = [
        ("SSLv2 ClientHello", sslv2_hello()),
        ("SSLv3 ClientHello", hello(0x0300, [0x002F, 0x0035, 0x000A, 0x0005])),
        ("TLS 1.0 ClientHello", hello(0x0301, [0xC009, 0xC013, 0x002F, 0x0035])),
        ("TLS 1.1 ClientHello", hello(0x0302, [0xC009, 0xC013, 0x002F, 0x0035])),
    ]
    for name, suites in LEGACY.items():
        probes.append((f"TLS 1.2 ClientHello offering only {name} suites", hello(0x0303, suites)))
    for name, data in probes:
        answer = exchange(port, data)
        check(answer[0] == "refused", f"{name}: {describe(answer)}")
    # Controls: a sound handshake gets an answer, so the refusals above
    # are the server's and not the probe's.
    answer = exchange(port, hello(0x0303, sorted(AEAD_13) + [ECDSA_AES128_GCM], tls13=True))
    check(answer[:2] == ("accepted", 0x0304) and answer[2] in AEAD_13, f"TLS 1.3 ClientHello: {describe(answer)}")
    answer = exchange(port, hello(0x0303, [ECDSA_AES128_GCM], compression=(1, 0)))
    if internal:
        check(answer[0] == "refused", f"TLS 1.2 ClientHello: {describe(answer)}")
    else:
        check(answer[0] == "accepted" and answer[1] == 0x0303, f"TLS 1.2 ClientHello: {describe(answer)}")
        check(answer[0] == "accepted" and answer[3] == 0, "TLS compression (DEFLATE offered first) not chosen")


name, port, internal, xml_path = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "internal", sys.argv[4]
print(f"{name} (127.0.0.1:{port}), sslscan:")
sslscan_findings(xml_path, internal)
print(f"{name} (127.0.0.1:{port}), handshakes:")
handshakes(port, internal)
sys.exit(1 if problems else 0)
PY
)

free_ports() {
    python3 -c '
import socket
held = [socket.socket() for _ in range(4)]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))'
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

MESH_PID=
stop_mesh() {
    if [ -n "$MESH_PID" ]; then
        kill -TERM "$MESH_PID" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$MESH_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$MESH_PID" 2>/dev/null
        wait "$MESH_PID" 2>/dev/null
        MESH_PID=
    fi
}

scan_tls() {
    if ! command -v sslscan >/dev/null; then
        fail tls "sslscan is not installed (apt-get install sslscan)"
        return
    fi
    # The valora command as the end-to-end tests run it. `cargo test
    # --no-run` builds exactly what the test command then reuses.
    note "tls: building the valora command (cargo test --workspace --no-run)"
    if ! cargo test --workspace --no-run --quiet >/dev/null; then
        fail tls "the build failed"
        return
    fi
    local valora=target/debug/valora-e2e-node
    local dir
    dir=$(mktemp -d)
    "$valora" certs dev --certs-dir "$dir/certs" >"$dir/certs.log" 2>&1 || {
        fail tls "valora certs dev failed: $(cat "$dir/certs.log")"
        return
    }
    local edge market auth admin started=
    for _ in 1 2 3; do
        read -r edge market auth admin < <(free_ports)
        env -u VALORA_EDGE_TLS_CERT -u VALORA_EDGE_TLS_KEY \
            RUST_LOG=warn AUTH_ARGON2_MEMORY_KIB=1024 AUTH_ARGON2_ITERATIONS=1 VALORA_SHUTDOWN_DELAY_SECONDS=0 \
            MARKETPLACE_API_KEY="scan-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" \
            "$valora" dev --edge-addr "127.0.0.1:$edge" --marketplace-addr "127.0.0.1:$market" \
            --auth-addr "127.0.0.1:$auth" --admin-addr "127.0.0.1:$admin" \
            --state-dir "$dir/state" --certs-dir "$dir/certs" \
            --tls-cert "$dir/certs/edge.pem" --tls-key "$dir/certs/edge.key" \
            --drain-seconds 1 </dev/null >"$dir/mesh.out" 2>"$dir/mesh.log" &
        MESH_PID=$!
        for _ in $(seq 1 300); do
            if port_open "$edge" && port_open "$market"; then
                started=yes
                break
            fi
            kill -0 "$MESH_PID" 2>/dev/null || break
            sleep 0.2
        done
        [ -n "$started" ] && break
        stop_mesh
        grep -q "Address already in use" "$dir/mesh.log" || break
    done
    if [ -z "$started" ]; then
        fail tls "valora dev did not start; its log: $(tail -20 "$dir/mesh.log")"
        stop_mesh
        return
    fi
    local target name port profile
    for target in "edge:$edge:public" "marketplace:$market:internal"; do
        IFS=: read -r name port profile <<<"$target"
        note "tls: sslscan $name on 127.0.0.1:$port"
        sslscan --no-colour --xml="$dir/$name.xml" "127.0.0.1:$port" >"$dir/$name.txt" 2>&1
        sed -n '/SSL\/TLS Protocols:/,/SSL Certificate:/p' "$dir/$name.txt" | grep -v '^\s*$'
        python3 -c "$TLS_PROBE" "$name" "$port" "$profile" "$dir/$name.xml" ||
            fail tls "$name offers something weak (FAIL lines above)"
    done
    stop_mesh
    rm -rf "$dir"
}

trap stop_mesh EXIT

scans=("$@")
[ ${#scans[@]} -eq 0 ] && scans=(deny buf tls)
for scan in "${scans[@]}"; do
    case "$scan" in
    deny | buf | tls)
        printf '\n== scan %s\n' "$scan"
        start=$(date +%s)
        "scan_$scan"
        note "$scan took $(($(date +%s) - start)) s"
        ;;
    *)
        fail "$scan" "unknown scan; use deny, buf or tls"
        ;;
    esac
done

echo
for scan in "${scans[@]}"; do
    if [[ " ${failed[*]} " == *" $scan "* ]]; then
        echo "scan: $scan: FAILED"
    else
        echo "scan: $scan: passed"
    fi
done
[ ${#failed[@]} -eq 0 ]
