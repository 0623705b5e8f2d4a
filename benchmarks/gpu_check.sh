#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a lent GPU machine, in one call of at most 8 minutes.
#
# Installs nothing from the network: the Python packages that machine lacks travel as wheels in .whl/ and the
# built NLP and vision models as .gpu/models (benchmarks/gpu_models.py pack); the dense model is built there.
# Prepare here, once:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#       grpcio protobuf grpcio-health-checking grpcio-reflection grpcio-status pydantic pydantic_core \
#       annotated-types typing-inspection googleapis-common-protos onnx2torch           (the versions of .venv; see the RESULTS.md entry)
#   python benchmarks/gpu_models.py pack REPO .gpu/models      (REPO built by `infer models build nlp|vision`)
# then run `bash benchmarks/gpu_check.sh` there, carrying .whl and .gpu. Tables go to $OUT (default
# benchmarks/out/gpu): gpu_check.md, gpu_check.json, gpu_check.log, the server's log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/infer-site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/infer-site${PYTHONPATH:+:$PYTHONPATH}
fi
# numba-cuda 0.30 (on the lent machines' image) still names np.row_stack, which numpy 2.5 removed: give it back
# to every process of the check (the server and pytest too), for this machine only
mkdir -p /tmp/infer-shim
printf 'import numpy\nif not hasattr(numpy, "row_stack"):\n    numpy.row_stack = numpy.vstack\n' \
  > /tmp/infer-shim/sitecustomize.py
export PYTHONPATH=$PWD/src:$PWD:/tmp/infer-shim${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
timeout 470 python3 benchmarks/gpu_check.py --out "$OUT" --budget 400 "$@" 2>&1 | tee "$OUT/gpu_check.log"
