"""The native TensorRT runtime (platform ``tensorrt_plan``): its GPU-free logic (profiles, profile choice, engine
cache keys, the INT8 calibration set, which file a version directory offers) and a load that fails clearly
without a GPU; the engine build and run are marked ``gpu`` and skip without TensorRT and a CUDA device."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_double

from infer.config.pbtxt import config_from_pbtxt
from infer.errors import ModelConfigError
from infer.runtimes import gpu
from infer.runtimes.base import RuntimeOptions, runtime_for
from infer.runtimes.tensorrt import (
    CALIBRATION_FILE,
    Profile,
    TensorRTRuntime,
    _batchless_shapes,
    _model_file,
    _write_atomic,
    calibration_batches,
    engine_cache_key,
    load_calibration,
    profiles_for,
    select_profile,
)

TRT_CONFIG = """
name: "double"
platform: "tensorrt_plan"
max_batch_size: 8
default_model_filename: "model.onnx"
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { preferred_batch_size: [ 2, 4 ] }
instance_group [ { kind: KIND_GPU count: 2 } ]
"""


def _trt_config(precision: str = "") -> str:
    if not precision:
        return TRT_CONFIG
    return TRT_CONFIG + (
        'optimization { execution_accelerators { gpu_execution_accelerator [ { name: "tensorrt" '
        f'parameters {{ key: "precision_mode" value: "{precision}" }} }} ] }} }}'
    )


# --- optimisation profiles -------------------------------------------------------------------------------------

def test_preferred_sizes_make_buckets_without_gaps() -> None:
    profiles = profiles_for(64, [32, 8], {"x": (4,)})
    assert profiles == [Profile(1, 8, 8), Profile(9, 32, 32), Profile(33, 64, 64)]
    assert profiles[1].shapes({"x": (4,), "m": (2, 3)}) == {
        "x": ((9, 4), (32, 4), (32, 4)),
        "m": ((9, 2, 3), (32, 2, 3), (32, 2, 3)),
    }


def test_no_preferred_sizes_make_one_profile_up_to_the_max() -> None:
    assert profiles_for(16, [], {"x": (4,)}) == [Profile(1, 16, 16)]
    assert profiles_for(1, [], {"x": (4,)}) == [Profile(1, 1, 1)]


def test_a_preferred_size_equal_to_the_max_adds_no_profile() -> None:
    assert profiles_for(32, [4, 32, 4], {"x": (4,)}) == [Profile(1, 4, 4), Profile(5, 32, 32)]


def test_a_model_that_does_not_batch_gets_one_fixed_profile() -> None:
    profiles = profiles_for(0, [], {"x": (3, 4)})
    assert profiles == [Profile(0, 0, 0)] and not profiles[0].batched
    assert profiles[0].shapes({"x": (3, 4)}) == {"x": ((3, 4), (3, 4), (3, 4))}


def test_a_variable_dimension_beside_the_batch_is_refused() -> None:
    with pytest.raises(ModelConfigError, match=r"input tokens has a variable dimension.*fixed dims beside the batch"):
        profiles_for(8, [], {"x": (4,), "tokens": (-1,)})


def test_preferred_sizes_outside_the_batch_range_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[16\] outside 1..8"):
        profiles_for(8, [4, 16], {"x": (4,)})


@pytest.mark.parametrize(("batch", "index"), [(1, 0), (8, 0), (9, 1), (32, 1), (33, 2), (64, 2)])
def test_the_profile_holding_the_batch_is_chosen(batch: int, index: int) -> None:
    assert select_profile(profiles_for(64, [8, 32], {"x": (4,)}), batch) == index


@pytest.mark.parametrize("batch", [0, 65])
def test_a_batch_outside_every_profile_is_refused(batch: int) -> None:
    with pytest.raises(ValueError, match=rf"batch of {batch} is outside every optimisation profile \(max batch 64\)"):
        select_profile(profiles_for(64, [8, 32], {"x": (4,)}), batch)


def test_overlapping_profiles_from_an_engine_take_the_first() -> None:
    assert select_profile([Profile(1, 4, 8), Profile(4, 16, 16)], 4) == 0
    assert select_profile([Profile(0, 0, 0)], 0) == 0


# --- engine cache keys -----------------------------------------------------------------------------------------

KEY_FIELDS = {
    "onnx_sha256": "ab" * 32,
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "compute_capability": (9, 0),
    "trt_version": "10.3.0",
    "precision": "FP16",
    "profiles": (Profile(1, 8, 8), Profile(9, 32, 32)),
}
CHANGED = {
    "onnx_sha256": "cd" * 32,
    "gpu_name": "NVIDIA H200",
    "compute_capability": (8, 9),
    "trt_version": "10.4.0",
    "precision": "INT8",
    "profiles": (Profile(1, 32, 32),),
}


def test_the_cache_key_is_a_stable_digest() -> None:
    key = engine_cache_key(**KEY_FIELDS)
    assert key == engine_cache_key(**dict(KEY_FIELDS, profiles=list(KEY_FIELDS["profiles"])))
    assert len(key) == 64 and int(key, 16) >= 0


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_any_changed_field_changes_the_cache_key(field: str) -> None:
    assert engine_cache_key(**dict(KEY_FIELDS, **{field: CHANGED[field]})) != engine_cache_key(**KEY_FIELDS)


def test_another_calibration_set_changes_the_cache_key() -> None:
    base = engine_cache_key(**KEY_FIELDS)
    assert engine_cache_key(**KEY_FIELDS, calibration_sha256="ef" * 32) != base


# --- the INT8 calibration set ----------------------------------------------------------------------------------

def _calibration(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / CALIBRATION_FILE
    np.savez(path, **arrays)
    return path


def test_the_calibration_set_loads_one_array_per_input(tmp_path: Path) -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    ids = np.ones((10, 3), dtype=np.int64)
    path = _calibration(tmp_path, x=x, ids=ids, unused=np.zeros(1))
    data = load_calibration(path, {"x": np.dtype(np.float32), "ids": np.dtype(np.int64)})
    assert sorted(data) == ["ids", "x"]
    np.testing.assert_array_equal(data["x"], x)
    np.testing.assert_array_equal(data["ids"], ids)


def test_a_missing_calibration_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match=r"calibration\.npz not found .*INT8 needs a calibration set"):
        load_calibration(tmp_path / CALIBRATION_FILE, {"x": np.dtype(np.float32)})


def test_a_missing_input_is_named(tmp_path: Path) -> None:
    path = _calibration(tmp_path, x=np.zeros((4, 4), np.float32))
    with pytest.raises(ModelConfigError, match=r"calibration\.npz has no array for input 'mask'"):
        load_calibration(path, {"x": np.dtype(np.float32), "mask": np.dtype(np.bool_)})


def test_a_wrong_dtype_is_named(tmp_path: Path) -> None:
    path = _calibration(tmp_path, x=np.zeros((4, 4), np.float64))
    with pytest.raises(ModelConfigError, match=r"calibration\.npz: input 'x' is float64, the model takes float32"):
        load_calibration(path, {"x": np.dtype(np.float32)})


def test_a_pickled_object_array_is_refused(tmp_path: Path) -> None:
    path = _calibration(tmp_path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ModelConfigError, match=r"calibration\.npz: cannot read input 'x' \(pickled data is refused\)"):
        load_calibration(path, {"x": np.dtype(object)})


def test_a_single_array_file_and_unequal_sample_counts_are_refused(tmp_path: Path) -> None:
    single = tmp_path / "single.npz"
    with single.open("wb") as f:
        np.save(f, np.zeros((4, 4), np.float32))
    with pytest.raises(ModelConfigError, match="holds a single array"):
        load_calibration(single, {"x": np.dtype(np.float32)})
    path = _calibration(tmp_path, x=np.zeros((4, 4), np.float32), y=np.zeros((5, 4), np.float32))
    with pytest.raises(ModelConfigError, match=r"different numbers of samples \{'x': 4, 'y': 5\}"):
        load_calibration(path, {"x": np.dtype(np.float32), "y": np.dtype(np.float32)})
    empty = _calibration(tmp_path, x=np.zeros((0, 4), np.float32))
    with pytest.raises(ModelConfigError, match="holds no samples"):
        load_calibration(empty, {"x": np.dtype(np.float32)})


def test_calibration_batches_are_contiguous_and_drop_the_partial_last() -> None:
    data = {"x": np.arange(44, dtype=np.float32).reshape(11, 4), "ids": np.arange(11)}
    batches = list(calibration_batches(data, 4, 10))
    assert len(batches) == 2
    for i, b in enumerate(batches):
        assert b["x"].shape == (4, 4) and b["x"].flags.c_contiguous
        np.testing.assert_array_equal(b["ids"], np.arange(4 * i, 4 * i + 4))
        np.testing.assert_array_equal(b["x"], data["x"][4 * i:4 * i + 4])
    assert len(list(calibration_batches(data, 2, 3))) == 3  # capped by max_batches
    assert len(list(calibration_batches(data, 11, 3))) == 1


def test_fewer_samples_than_one_batch_fail_at_once() -> None:
    with pytest.raises(ValueError, match="holds 3 samples, less than one batch of 4"):
        calibration_batches({"x": np.zeros((3, 4))}, 4, 10)  # raised before iterating
    with pytest.raises(ValueError, match="must be at least 1"):
        calibration_batches({"x": np.zeros((3, 4))}, 0, 10)


# --- the model file, shapes and the engine cache file ----------------------------------------------------------

def test_the_version_directory_offers_an_engine_or_an_onnx_file(tmp_path: Path) -> None:
    version = write_double(tmp_path) / "1"
    assert _model_file(version / "model.onnx") == ("onnx", version / "model.onnx")
    assert _model_file(version / "model.plan") == ("onnx", version / "model.onnx")  # no plan: built from ONNX
    (version / "model.plan").write_bytes(b"engine")
    assert _model_file(version / "model.plan") == ("engine", version / "model.plan")
    with pytest.raises(ModelConfigError, match=r"other\.onnx not found"):
        _model_file(version / "other.onnx")
    with pytest.raises(ModelConfigError, match=r"model\.plan not found .*nor model\.onnx"):
        _model_file(tmp_path / "model.plan")


def test_the_batch_dimension_must_match_max_batch_size() -> None:
    assert _batchless_shapes({"x": (-1, 4), "m": (-1, 2, 3)}, 8, "m") == {"x": (4,), "m": (2, 3)}
    assert _batchless_shapes({"x": (3, 4)}, 0, "m") == {"x": (3, 4)}
    with pytest.raises(ModelConfigError, match=r"input x has shape \[1, 4\].*needs a variable first"):
        _batchless_shapes({"x": (1, 4)}, 8, "m")
    with pytest.raises(ModelConfigError, match=r"set max_batch_size in config\.pbtxt"):
        _batchless_shapes({"x": (-1, 4)}, 0, "m")


def test_engines_are_written_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "key.plan"
    _write_atomic(target, b"first")
    _write_atomic(target, bytearray(b"second"))
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["key.plan"]  # no temporary file left behind
    with pytest.raises(TypeError):  # a failed write leaves the old file and no temporary one
        _write_atomic(target, object())
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["key.plan"]


# --- loading without a GPU -------------------------------------------------------------------------------------

def _gpu_stack_present() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and gpu.torch_cuda_available()


def test_the_platform_selects_the_tensorrt_runtime() -> None:
    assert runtime_for(config_from_pbtxt(TRT_CONFIG, "double")) is TensorRTRuntime
    assert TensorRTRuntime.default_filename == "model.plan"


def test_loading_without_tensorrt_or_a_gpu_names_what_is_missing(tmp_path: Path) -> None:
    if _gpu_stack_present():
        pytest.skip("this machine has TensorRT and a CUDA device")
    model = write_double(tmp_path, config=TRT_CONFIG)
    config = config_from_pbtxt((model / "config.pbtxt").read_text(), "double")
    with pytest.raises(ModelConfigError) as caught:
        runtime_for(config).open(model / "1" / "model.onnx", config, RuntimeOptions(state_dir=tmp_path / "state"))
    message = str(caught.value)
    assert "model 'double': platform tensorrt_plan needs an NVIDIA GPU and the tensorrt package" in message
    assert "pip install 'infer[tensorrt]'" in message
    assert "tensorrt package is not importable" in message or "no CUDA device" in message
    assert not (tmp_path / "state").exists()  # nothing built, nothing cached


# --- on a GPU --------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["FP32", "FP16"])
def test_an_engine_built_from_onnx_matches_numpy(tmp_path: Path, precision: str) -> None:
    pytest.importorskip("tensorrt")
    if not gpu.torch_cuda_available():
        pytest.skip("PyTorch sees no CUDA device")
    model = write_double(tmp_path / "repo", config=_trt_config(precision))
    config = config_from_pbtxt((model / "config.pbtxt").read_text(), "double")
    options = RuntimeOptions(state_dir=tmp_path / "state")
    runtime = TensorRTRuntime.open(model / "1" / "model.onnx", config, options)
    try:
        assert f" {precision} " in runtime.describe() and "profiles=[1-2, 3-4, 5-8]" in runtime.describe()
        sig = runtime.signature()
        assert [(s.name, s.shape) for s in sig.inputs] == [("x", (-1, 4))]
        assert [(s.name, s.shape) for s in sig.outputs] == [("y", (-1, 4))]
        tol = 1e-6 if precision == "FP32" else 1e-2
        for rows in (1, 3, 8, 2):  # every profile, and back to a smaller one
            x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
            x.flags.writeable = False  # requests arrive as read-only views of the wire bytes
            y = runtime.run({"x": x}, ["y"])["y"]
            assert y.dtype == np.float32 and y.shape == (rows, 4)
            np.testing.assert_allclose(y, x * 2, rtol=tol, atol=tol)
        with pytest.raises(Exception, match="batch of 9 is outside every optimisation profile"):
            runtime.run({"x": np.zeros((9, 4), np.float32)}, ["y"])
        _run_concurrently(runtime, tol)
        cache = list((tmp_path / "state" / "tensorrt" / "double").glob("*.plan"))
        assert len(cache) == 1 and str(cache[0]) in runtime.describe()
    finally:
        runtime.close()
    again = TensorRTRuntime.open(model / "1" / "model.onnx", config, options)  # from the cache, not rebuilt
    try:
        assert str(cache[0]) in again.describe()
        np.testing.assert_allclose(again.run({"x": np.ones((5, 4), np.float32)}, ["y"])["y"], 2.0, rtol=tol)
    finally:
        again.close()
    cache[0].write_bytes(b"not an engine")  # a damaged cache file is rebuilt
    rebuilt = TensorRTRuntime.open(model / "1" / "model.onnx", config, options)
    try:
        np.testing.assert_allclose(rebuilt.run({"x": np.ones((1, 4), np.float32)}, ["y"])["y"], 2.0, rtol=tol)
        assert cache[0].stat().st_size > 100
    finally:
        rebuilt.close()


def _run_concurrently(runtime: TensorRTRuntime, tol: float) -> None:
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for _ in range(20):
                x = rng.standard_normal((int(rng.integers(1, 9)), 4)).astype(np.float32)
                np.testing.assert_allclose(runtime.run({"x": x}, ["y"])["y"], x * 2, rtol=tol, atol=tol)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
