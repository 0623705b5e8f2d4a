"""The rule-based runtime: first matching rule per row, defaults, vector and BYTES outputs, refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures import RULES_SPEC

from infer.config.model import ModelConfig
from infer.errors import ModelConfigError
from infer.runtimes.base import RuntimeOptions, runtime_for
from infer.runtimes.rules import RulesRuntime


def _open(tmp_path: Path, spec: Any) -> RulesRuntime:
    path = tmp_path / "rules.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return RulesRuntime.open(path, ModelConfig(name="r", backend="rules"), RuntimeOptions())


def test_chosen_by_backend_name() -> None:
    assert runtime_for(ModelConfig(name="r", backend="rules")) is RulesRuntime


def test_first_matching_rule_wins_per_row(tmp_path: Path) -> None:
    rt = _open(tmp_path, RULES_SPEC)
    sig = rt.signature()
    assert [(t.name, t.shape) for t in sig.inputs] == [("x", (-1, 4))]
    assert [(t.name, t.datatype.value, t.shape) for t in sig.outputs] == [("y", "FP32", (-1, 4))]
    x = np.array([[200, 0, 0, 1],      # rule 0 (also matches rule 1's first condition: first wins)
                  [1, 0, 0, 5],        # rule 1
                  [1, 0, 0, 6],        # rule 1's second condition fails: default
                  [-3, 0, 0, 0]], np.float32)
    y = rt.run({"x": x}, ["y"])["y"]
    assert y.dtype == np.float32 and y.shape == (4, 4)
    assert y.tolist() == [[1.0] * 4, [5.0, 6.0, 7.0, 8.0], [0.0] * 4, [0.0] * 4]
    assert rt.describe() == "rules (2 rules over 1 outputs)"


def test_bytes_outputs_and_multi_dim_inputs(tmp_path: Path) -> None:
    spec = {
        "inputs": [{"name": "m", "datatype": "INT64", "shape": [-1, 2, 2]}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1, 1], "default": "normal",
                     "rules": [{"when": [{"input": "m", "index": 3, "op": ">=", "value": 10}], "then": "alert"}]}],
    }
    rt = _open(tmp_path, spec)
    m = np.array([[[0, 0], [0, 10]], [[0, 0], [0, 9]]], np.int64)
    out = rt.run({"m": m}, ["label"])["label"]
    assert out.dtype == object and out.tolist() == [[b"alert"], [b"normal"]]


@pytest.mark.parametrize("mutate,words", [
    (lambda s: s["outputs"][0]["rules"][0]["when"][0].update(op="=~"), "op '=~'"),
    (lambda s: s["outputs"][0]["rules"][0]["when"][0].update(index=4), "no element 4 in input 'x'"),
    (lambda s: s["outputs"][0]["rules"][0]["when"][0].update(input="z"), "input 'z'"),
    (lambda s: s["outputs"][0]["rules"][1].update(then=[1.0, 2.0]), "2 values for a row of 4"),
    (lambda s: s["outputs"][0].update(default="high"), "finite numbers"),
    (lambda s: s["outputs"][0].update(shape=[4]), "shape must be [-1"),
    (lambda s: s["inputs"][0].update(datatype="FP128"), "unknown datatype"),
    (lambda s: s["outputs"][0]["rules"][0].update(when=[]), "at least one condition"),
    (lambda s: s.pop("outputs"), "'outputs'"),
])
def test_bad_rule_files_are_refused_by_name(tmp_path: Path, mutate: Any, words: str) -> None:
    spec = json.loads(json.dumps(RULES_SPEC))
    mutate(spec)
    with pytest.raises(ModelConfigError) as e:
        _open(tmp_path, spec)
    assert words in e.value.message and "model 'r'" in e.value.message


def test_not_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="not readable JSON"):
        _open(tmp_path, "import os; os.system('true')")
