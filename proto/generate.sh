#!/bin/sh
# Generates the TypeScript and Python clients of every proto in this folder
# into proto/gen/ts and proto/gen/python, as configured by buf.gen.yaml.
#
# Usage: proto/generate.sh [buf generate options]
#
# Runs from any folder. Extra arguments go to `buf generate`; for example
# `--output DIR` writes DIR/gen/ts and DIR/gen/python instead.
#
# Needs, all installed from package registries and used offline:
# - buf and protoc-gen-es from tests/browser's node_modules
#   (`npm ci` in tests/browser);
# - python3 with grpcio-tools
#   (`python3 -m pip install -r tests/requirements.txt`).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bin="$here/../tests/browser/node_modules/.bin"

if [ ! -x "$bin/buf" ] || [ ! -x "$bin/protoc-gen-es" ]; then
    echo "generate.sh: buf and protoc-gen-es are missing from $bin; run npm ci in tests/browser" >&2
    exit 1
fi
if ! python3 -c "import grpc_tools.protoc" 2>/dev/null; then
    echo "generate.sh: python3 cannot import grpc_tools; run python3 -m pip install -r tests/requirements.txt" >&2
    exit 1
fi

cd "$here"
PATH="$bin:$PATH" exec buf generate "$@"
