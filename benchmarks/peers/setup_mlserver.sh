#!/usr/bin/env bash
# Create an isolated venv for the Seldon MLServer peer (benchmarks/.venv-mlserver) and install
# mlserver 1.7.x + onnxruntime + numpy into it.  MLServer pins its own protobuf/grpcio/fastapi
# versions, so it must never share the project's venv (/work/main/.venv).
#
# uvloop is pinned below 0.22: with uvloop 0.22+ `asyncio.get_event_loop()` raises outside a running loop, and
# MLServer 1.7.1's parallel worker calls it at start-up, so every worker process dies ("There is no current event
# loop in thread 'MainThread'") and a model with parallel_workers >= 1 never loads.
#
# Idempotent: when the venv already imports mlserver 1.7.x, onnxruntime, numpy and uvloop < 0.22 it does nothing.
#
#   bash benchmarks/peers/setup_mlserver.sh          # set up (or verify) the venv
#   FORCE=1 bash benchmarks/peers/setup_mlserver.sh  # recreate it from scratch
#
# Env: PYTHON (interpreter for the venv; default python3.11, else python3), MLSERVER_VERSION
# (default 1.7.1; falls back to the newest 1.7.x pip can find when that pin fails).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$(cd "$HERE/.." && pwd)/.venv-mlserver"
MLSERVER_VERSION="${MLSERVER_VERSION:-1.7.1}"
UVLOOP_SPEC="uvloop<0.22"

if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

check() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md
import numpy, onnxruntime  # noqa: F401
import mlserver  # noqa: F401
v = md.version("mlserver")
assert v.startswith("1.7."), v
uv = md.version("uvloop")
assert tuple(int(p) for p in uv.split(".")[:2]) < (0, 22), uv
print(f"mlserver {v}, onnxruntime {md.version('onnxruntime')}, numpy {md.version('numpy')}, uvloop {uv}")
PY
}

if [[ "${FORCE:-0}" == "1" ]]; then
  rm -rf "$VENV"
fi

if [[ -x "$VENV/bin/python" ]] && [[ -x "$VENV/bin/mlserver" ]] && check >/dev/null; then
  echo "mlserver venv already set up at $VENV: $(check)"
  exit 0
fi

echo "creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
"$PYTHON" -m venv "$VENV"
pip_install() {
  # drop pip's noise about this machine's optional local indexes
  "$VENV/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
pip_install --upgrade pip
if ! pip_install "mlserver==$MLSERVER_VERSION" "$UVLOOP_SPEC" onnxruntime numpy; then
  echo "mlserver==$MLSERVER_VERSION did not install; trying the newest 1.7.x" >&2
  pip_install "mlserver>=1.7,<1.8" "$UVLOOP_SPEC" onnxruntime numpy
fi

if ! check; then
  echo "mlserver venv at $VENV is not usable" >&2
  exit 1
fi
echo "mlserver venv ready at $VENV"
