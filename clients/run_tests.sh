#!/usr/bin/env bash
# Every SDK's test suite against one live infer server on the default model repository (anomaly and forecast
# loaded), started here on a free loopback port: the suites read its address from INFER_TARGET.
#
#   bash clients/run_tests.sh [typescript] [go]       (default: both)
#
# A suite whose toolchain is missing (node/npm, go) is skipped with a message, unless INFER_REQUIRE_SDKS=1 (.ci/run
# sets it, after installing the toolchains), which makes that a failure. The Python SDK's suite is part of
# `pytest tests/integration` (tests/integration/test_sdk_python.py starts its own server).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
repo=${INFER_SDK_REPO:-build/sdk-repository}
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(typescript go)

declare -A tool=([typescript]=npm [go]=go)
run=()
for s in "${suites[@]}"; do
  if command -v "${tool[$s]}" > /dev/null; then
    run+=("$s")
  elif [ "${INFER_REQUIRE_SDKS:-0}" = 1 ]; then
    echo "clients/run_tests.sh: ${tool[$s]} is not installed: the $s SDK cannot be tested" >&2
    exit 1
  else
    echo "clients/run_tests.sh: skipping the $s SDK (${tool[$s]} is not installed)" >&2
  fi
done
[ ${#run[@]} -eq 0 ] && exit 0

if [ ! -f "$repo/.complete" ]; then  # built once, then reused (build/ is ignored by git)
  rm -rf "$repo"
  "$BIN/infer" build-default-repository --path "$repo" > /dev/null
  touch "$repo/.complete"
fi

work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2> /dev/null && wait "$server" 2> /dev/null
  rm -rf "$work"
}
trap cleanup EXIT
"$BIN/infer" serve --model-repository "$repo" --model-control-mode explicit --load-model anomaly \
  --load-model forecast --host 127.0.0.1 --grpc-port 0 --metrics-port -1 --port-file "$work/ports.json" \
  --log-level warning > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 600); do
  [ -s "$work/ports.json" ] && break
  kill -0 "$server" 2> /dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
port=$("$BIN/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["grpc"])' "$work/ports.json")
export INFER_TARGET="127.0.0.1:$port"
for _ in $(seq 300); do
  "$BIN/infer" probe --address "$INFER_TARGET" --service ready --timeout 1 > /dev/null 2>&1 && break
  sleep 0.2
done
"$BIN/infer" probe --address "$INFER_TARGET" --service ready --timeout 2

status=0
for s in "${run[@]}"; do
  echo "== $s SDK against $INFER_TARGET"
  bash "clients/$s/test.sh" || { echo "clients/run_tests.sh: the $s SDK's tests failed" >&2; status=1; }
done
exit $status
