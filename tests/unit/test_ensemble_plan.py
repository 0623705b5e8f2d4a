"""Ensemble wiring checked and ordered at load (no sockets): names, producers, datatypes, cycles."""

from __future__ import annotations

from typing import Any

import pytest

from infer.config.model import ModelConfig
from infer.core.types import DataType, TensorSpec
from infer.errors import ModelConfigError, NotFound
from infer.runtimes.ensemble import plan_ensemble

F32, I64 = DataType.FP32, DataType.INT64
MODELS = {  # name -> (inputs, outputs), served shapes with the batch dim
    "feat": ((TensorSpec("raw", F32, (-1, 8)),), (TensorSpec("out", F32, (-1, 4)),)),
    "det_a": ((TensorSpec("x", F32, (-1, 4)),), (TensorSpec("score", F32, (-1, 1)),)),
    "det_b": ((TensorSpec("x", F32, (-1, 4)),), (TensorSpec("score", F32, (-1, 1)),)),
    "mix": ((TensorSpec("a", F32, (-1, 1)), TensorSpec("b", F32, (-1, 1))), (TensorSpec("y", F32, (-1, 1)),)),
    "ids": ((TensorSpec("x", I64, (-1, 4)),), (TensorSpec("y", I64, (-1, 4)),)),
}


def lookup(name: str, version: str) -> Any:
    if name not in MODELS:
        raise NotFound(f"model '{name}' is not loaded")
    return MODELS[name]


def step(model: str, ins: dict[str, str], outs: dict[str, str]) -> dict[str, Any]:
    return {"model_name": model, "input_map": ins, "output_map": outs}


def config(steps: list[dict[str, Any]], outputs: tuple[str, ...] = ("y",)) -> ModelConfig:
    return ModelConfig.model_validate({
        "name": "pipe", "platform": "ensemble", "max_batch_size": 8,
        "input": [{"name": "events", "data_type": "TYPE_FP32", "dims": [8]}],
        "output": [{"name": o, "data_type": "TYPE_FP32", "dims": [1]} for o in outputs],
        "ensemble_scheduling": {"step": steps},
    })


GOOD = [  # listed out of order on purpose: mix needs both detectors, which need feat
    step("mix", {"a": "sa", "b": "sb"}, {"y": "y"}),
    step("det_a", {"x": "f"}, {"score": "sa"}),
    step("feat", {"raw": "events"}, {"out": "f"}),
    step("det_b", {"x": "f"}, {"score": "sb"}),
]


def test_a_good_pipeline_is_ordered_by_its_dependencies() -> None:
    plan = plan_ensemble(config(GOOD), lookup)
    assert [s.model for s in plan.steps] == ["feat", "det_a", "det_b", "mix"]
    assert plan.steps[0].inputs == (("raw", "events"),) and plan.outputs == ("y",)


@pytest.mark.parametrize("steps,words", [
    ([step("nope", {"raw": "events"}, {"out": "y"})], "composing model not available"),
    ([step("feat", {"rawx": "events"}, {"out": "y"})], "input_map names 'rawx'"),
    ([step("feat", {"raw": "events"}, {"outx": "y"})], "output_map names 'outx'"),
    ([step("feat", {"raw": "events"}, {"out": "f"}), step("det_a", {"x": "g"}, {"score": "y"})],
     "tensor 'g' is produced by nothing"),
    ([step("feat", {"raw": "events"}, {"out": "f"}), step("det_a", {"x": "f"}, {"score": "f"})],
     "tensor 'f' is already produced"),
    ([step("feat", {"raw": "events"}, {"out": "f"})], "output 'y' is produced by no step"),
    ([step("pipe", {"raw": "events"}, {"out": "y"})], "cannot call itself"),
    ([step("feat", {"raw": "events"}, {"out": "f"}), step("ids", {"x": "f"}, {"y": "y"})],
     "input 'x' is INT64 but tensor 'f'"),
])
def test_bad_wiring_is_refused_by_name(steps: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(ModelConfigError) as e:
        plan_ensemble(config(steps), lookup)
    assert words in e.value.message and "ensemble 'pipe'" in e.value.message


def test_a_cycle_is_refused() -> None:
    cyc = [step("det_a", {"x": "b"}, {"score": "a"}), step("det_b", {"x": "a"}, {"score": "b"}),
           step("feat", {"raw": "events"}, {"out": "y"})]
    # det_a/det_b take FP32 [4] and make [1]: same datatype, so only the cycle is wrong
    with pytest.raises(ModelConfigError, match="wait on each other"):
        plan_ensemble(config(cyc), lookup)


def test_platform_and_scheduling_go_together() -> None:
    with pytest.raises(ValueError, match="go together"):
        ModelConfig.model_validate({"name": "p", "platform": "ensemble"})
