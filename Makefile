# The two commands of the README: `make serve` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup serve test lint proto proto-check clean

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
test: setup
	$(BIN)/python scripts/gen_proto.py --check
	$(BIN)/ruff check src tests benchmarks scripts kernels
	$(BIN)/mypy src
	$(BIN)/pytest -q tests/unit tests/integration
	$(BIN)/pytest -q tests/compat_triton

proto: setup
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) build dist *.egg-info
