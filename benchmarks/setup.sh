#!/usr/bin/env bash
# Everything the benchmarks need beyond `make setup`: matplotlib (plots), h2load (C client), the MLServer peer.
set -euo pipefail
cd "$(dirname "$0")/.."
make setup
.venv/bin/pip install -q -e '.[dev,bench]'
if ! command -v h2load >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nghttp2-client; else
    echo "h2load missing: sudo apt-get install nghttp2-client (the python client backend still works)"; fi
fi
bash benchmarks/peers/setup_mlserver.sh
