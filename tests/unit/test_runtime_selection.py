"""Execution-provider choice follows the config and falls back to CPU with a reason (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import write_double

from infer.config.pbtxt import config_from_pbtxt
from infer.errors import ModelConfigError
from infer.runtimes.base import RuntimeOptions, runtime_for
from infer.runtimes.onnx import OnnxRuntime, choose_providers

GPU_TRT = """
name: "m" platform: "onnxruntime_onnx"
instance_group [ { kind: KIND_GPU count: 1 } ]
optimization { execution_accelerators { gpu_execution_accelerator [ { name: "tensorrt" } ] } }
"""


def test_cpu_config_asks_for_cpu_only() -> None:
    chosen, dropped = choose_providers(config_from_pbtxt('name: "m"', "m"), ["CPUExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"] and dropped == []


def test_gpu_and_tensorrt_are_asked_for_when_available() -> None:
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen, dropped = choose_providers(config_from_pbtxt(GPU_TRT, "m"), avail)
    assert chosen == avail and dropped == []


def test_missing_gpu_providers_fall_back_to_cpu_with_reasons() -> None:
    chosen, dropped = choose_providers(config_from_pbtxt(GPU_TRT, "m"), ["CPUExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"]
    assert len(dropped) == 2 and "TensorrtExecutionProvider is not available" in dropped[0]


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
