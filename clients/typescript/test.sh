#!/usr/bin/env bash
# Build the TypeScript SDK and run its tests: the tensor codec, the client against an
# in-process fake server, and the scenario against the infer server at $INFER_TARGET
# (host:port, serving the default model repository), including the README's quickstart.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${INFER_TARGET:-}" ]; then
  echo "clients/typescript/test.sh: INFER_TARGET is not set; start 'infer serve' and set INFER_TARGET=host:port" >&2
  exit 2
fi
[ -d node_modules ] || npm ci --no-audit --no-fund
rm -rf dist
node_modules/.bin/tsc -p tsconfig.json
node --test dist/test/*.test.js
