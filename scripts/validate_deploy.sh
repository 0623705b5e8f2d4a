#!/usr/bin/env bash
# Validate every manifest under deploy/ offline (deploy/validate.py): Kubernetes kinds against the schemas that
# kubernetes-validate ships, custom resources and the kustomization against deploy/schemas/. Exits non-zero on
# any error. Extra arguments go to deploy/validate.py (e.g. --kubernetes-version 1.31, or other folders).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" deploy/validate.py "$@"
