#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv (no dev extras), and serve one model from it.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
.venv/bin/pip wheel -q --no-deps -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$work"/dist/infer-*.whl
cd "$work"  # away from the source tree, so only the installed package can be imported
"$work/venv/bin/python" -c "import infer, infer._proto.grpc_service_pb2, kernels; print('wheel imports ok', infer.__version__)"
"$work/venv/bin/infer" build-default-repository --path "$work/repo"
"$work/venv/bin/infer" serve --model-repository "$work/repo" --host 127.0.0.1 --grpc-port 0 --metrics-port -1 \
  --port-file "$work/ports.json" > "$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do [ -f "$work/ports.json" ] && break; sleep 0.2; done
port=$("$work/venv/bin/python" -c "import json; print(json.load(open('$work/ports.json'))['grpc'])")
"$work/venv/bin/infer" probe --address "127.0.0.1:$port" --service model/anomaly
"$work/venv/bin/infer" probe --address "127.0.0.1:$port" --service model/forecast
"$work/venv/bin/infer" probe --address "127.0.0.1:$port" --service model/vision
"$work/venv/bin/infer" probe --address "127.0.0.1:$port" --service model/nlp
kill -TERM "$pid"; wait "$pid"
echo "wheel check passed"
