"""Execution-provider choice follows the config and falls back to CPU with a reason (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import write_double

from infer.config.pbtxt import config_from_pbtxt
from infer.errors import ModelConfigError
from infer.runtimes.base import RuntimeOptions, runtime_for
from infer.runtimes.onnx import OnnxRuntime


def test_runtimes_are_chosen_by_name() -> None:
    assert runtime_for(config_from_pbtxt('name: "m" platform: "onnxruntime_onnx"', "m")) is OnnxRuntime
    assert runtime_for(config_from_pbtxt('name: "m" backend: "onnxruntime"', "m")) is OnnxRuntime
    with pytest.raises(ModelConfigError, match="'tensorflow_savedmodel' is not supported"):
        runtime_for(config_from_pbtxt('name: "m" platform: "tensorflow_savedmodel"', "m"))


@pytest.mark.gpu
def test_cuda_session_runs_on_a_gpu(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider here")
    model = write_double(tmp_path) / "1" / "model.onnx"
    cfg = config_from_pbtxt('name: "double" instance_group [ { kind: KIND_GPU count: 1 } ]', "double")
    runtime = OnnxRuntime.open(model, cfg, RuntimeOptions())
    try:
        assert "CUDAExecutionProvider" in runtime.describe()
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        np.testing.assert_array_equal(runtime.run({"x": x}, ["y"])["y"], x * 2)
    finally:
        runtime.close()
