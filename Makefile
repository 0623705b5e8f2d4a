# The two commands of the README: `make serve` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup serve test lint proto proto-check clients clean

$(BIN)/infer: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/infer

setup: $(BIN)/infer

serve: setup
	$(BIN)/infer serve

# tests/compat_triton imports tritonclient, whose protobuf names clash with infer's own stubs:
# it runs in a second pytest process.
# The TypeScript and Go SDKs (clients/) need node/npm and go: without them their steps say so and are skipped
# (.ci/run installs both and sets INFER_REQUIRE_SDKS=1, which turns a missing toolchain into a failure).
test: setup
	$(BIN)/python scripts/gen_proto.py --check
	bash scripts/gen_clients.sh --check
	$(BIN)/ruff check src tests benchmarks scripts kernels deploy
	$(BIN)/mypy src
	$(BIN)/pytest -q tests/unit tests/integration tests/reliability
	$(BIN)/pytest -q tests/compat_triton
	bash clients/run_tests.sh

proto: setup
	$(BIN)/python scripts/gen_proto.py
	bash scripts/gen_clients.sh

clean:
	rm -rf $(VENV) build dist *.egg-info
