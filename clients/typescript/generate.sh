#!/usr/bin/env bash
# Regenerate src/generated/ from ../../proto and proto/ (grpc.health.v1) with the
# pinned buf (its built-in protobuf compiler) and ts-proto from package.json.
# Deterministic: CI runs it and fails on `git diff --exit-code src/generated`.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules ] || npm ci --no-audit --no-fund
export PATH="$PWD/node_modules/.bin:$PATH"
buf generate --template buf.gen.yaml
