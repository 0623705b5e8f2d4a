"""A rule-based model: thresholds on input features, declared in JSON, evaluated vectorised.

The link a fallback chain ends on before its default answer: no learnt weights, nothing that can fail
to compute, answers in microseconds. The file (``rules.json``, backend ``rules``) is data, never code::

    {
      "inputs":  [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
      "outputs": [
        {"name": "score", "datatype": "FP32", "shape": [-1, 1], "default": 0.0,
         "rules": [
           {"when": [{"input": "x", "index": 2, "op": ">", "value": 900.0}], "then": 1.0},
           {"when": [{"input": "x", "index": 0, "op": "<", "value": 0.0},
                     {"input": "x", "index": 1, "op": ">=", "value": 5.0}], "then": 0.5}
         ]}
      ]
    }

For every row of the batch, each output takes the ``then`` of its first rule whose conditions all hold
(``index`` counts the row's elements flattened), else its ``default``. ``then`` and ``default`` are a
scalar (repeated across the row) or a list the size of the output's row; BYTES outputs take strings.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infer.config.model import ModelConfig
from infer.core.types import DataType, TensorSpec
from infer.errors import ModelConfigError
from infer.runtimes.base import Array, Runtime, RuntimeOptions, Signature

__all__ = ["RulesRuntime"]

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">=": operator.ge, ">": operator.gt,
}
MAX_RULES = 10_000


@dataclass(frozen=True, slots=True)
class _Condition:
    input: str
    index: int
    op: Callable[[Any, Any], Any]
    value: float


@dataclass(frozen=True, slots=True)
class _Output:
    spec: TensorSpec
    row: int  # elements per row
    default: Array  # shape [row]
    rules: tuple[tuple[tuple[_Condition, ...], Array], ...]


class RulesRuntime(Runtime):
    names = ("rules",)
    default_filename = "rules.json"

    def __init__(self, inputs: tuple[TensorSpec, ...], outputs: tuple[_Output, ...]) -> None:
        self._inputs = inputs
        self._outputs = {o.spec.name: o for o in outputs}

    @classmethod
    def open(cls, path: Path, config: ModelConfig, options: RuntimeOptions) -> RulesRuntime:
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelConfigError(f"model '{config.name}': {path.name} is not readable JSON: {e}") from None
        try:
            return _parse(doc)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelConfigError(f"model '{config.name}': {path.name}: {e}") from None

    def signature(self) -> Signature:
        return Signature(self._inputs, tuple(o.spec for o in self._outputs.values()))

    def run(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        rows = {name: np.asarray(a).reshape(len(a), -1) for name, a in inputs.items()}
        n = len(next(iter(rows.values())))
        result: dict[str, Array] = {}
        for name in outputs:
            out = self._outputs[name]
            value = np.tile(out.default, (n, 1))
            open_rows = np.ones(n, dtype=bool)
            for conditions, then in out.rules:
                hit = open_rows.copy()
                for c in conditions:
                    hit &= np.asarray(c.op(rows[c.input][:, c.index], c.value), dtype=bool)
                value[hit] = then
                open_rows &= ~hit
                if not open_rows.any():
                    break
            result[name] = value.reshape((n, *out.spec.shape[1:]))
        return result

    def describe(self) -> str:
        count = sum(len(o.rules) for o in self._outputs.values())
        return f"rules ({count} rules over {len(self._outputs)} outputs)"


def _spec(d: Mapping[str, Any], what: str) -> TensorSpec:
    name = str(d["name"])
    try:
        dt = DataType(d["datatype"])
    except ValueError:
        raise ValueError(f"{what} '{name}': unknown datatype {d['datatype']!r}") from None
    shape = tuple(int(x) for x in d["shape"])
    if not shape or shape[0] != -1 or any(x < 1 for x in shape[1:]):
        raise ValueError(f"{what} '{name}': shape must be [-1, d1, ...] (batch first, fixed row dims)")
    return TensorSpec(name, dt, shape)


def _values(raw: Any, spec: TensorSpec, row: int, what: str) -> Array:
    items = raw if isinstance(raw, list) else [raw] * row
    if len(items) != row:
        raise ValueError(f"{what}: {len(items)} values for a row of {row}")
    if spec.datatype is DataType.BYTES:
        return np.array([str(v).encode() for v in items], dtype=object)
    if any(isinstance(v, str) or (isinstance(v, float) and not math.isfinite(v)) for v in items):
        raise ValueError(f"{what}: values must be finite numbers")
    return np.array(items, dtype=spec.datatype.numpy)


def _parse(doc: Mapping[str, Any]) -> RulesRuntime:
    inputs = tuple(_spec(d, "input") for d in doc["inputs"])
    widths = {t.name: math.prod(t.shape[1:]) for t in inputs}
    if not inputs or any(t.datatype is DataType.BYTES for t in inputs):
        raise ValueError("give at least one input, all numeric")
    outputs = []
    for od in doc["outputs"]:
        spec = _spec(od, "output")
        row = math.prod(spec.shape[1:])
        rules = []
        if len(od.get("rules", [])) > MAX_RULES:
            raise ValueError(f"output '{spec.name}': at most {MAX_RULES} rules")
        for k, rd in enumerate(od.get("rules", [])):
            where = f"output '{spec.name}' rule {k}"
            conditions = []
            for cd in rd["when"]:
                name, index, op = str(cd["input"]), int(cd["index"]), str(cd["op"])
                if name not in widths or not 0 <= index < widths[name]:
                    raise ValueError(f"{where}: no element {index} in input '{name}'")
                if op not in _OPS:
                    raise ValueError(f"{where}: op {op!r} is not one of {' '.join(_OPS)}")
                value = float(cd["value"])
                if not math.isfinite(value):
                    raise ValueError(f"{where}: value must be finite")
                conditions.append(_Condition(name, index, _OPS[op], value))
            if not conditions:
                raise ValueError(f"{where}: 'when' needs at least one condition")
            rules.append((tuple(conditions), _values(rd["then"], spec, row, where)))
        outputs.append(_Output(spec, row, _values(od["default"], spec, row, f"output '{spec.name}' default"),
                               tuple(rules)))
    if not outputs:
        raise ValueError("give at least one output")
    return RulesRuntime(inputs, tuple(outputs))
