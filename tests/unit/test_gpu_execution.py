"""Where a model runs: the GPU request read from the config, the engine chosen from what the machine has, and the
executors' staging logic, checked on the CPU (the GPU halves are marked ``gpu`` and skip without one)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures import onnx_run, write_dense, write_double
from onnx import numpy_helper

from infer.config.pbtxt import config_from_pbtxt
from infer.errors import ModelConfigError
from infer.runtimes import gpu
from infer.runtimes.base import RuntimeOptions
from infer.runtimes.onnx import OnnxRuntime, model_session

CPU_ONLY = ["CPUExecutionProvider"]
ALL_ORT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _config(body: str = "") -> str:
    return 'name: "m" platform: "onnxruntime_onnx" max_batch_size: 8\n' + body


def _accel(name: str, **params: str) -> str:
    kv = " ".join(f'parameters {{ key: "{k}" value: "{v}" }}' for k, v in params.items())
    return f'optimization {{ execution_accelerators {{ gpu_execution_accelerator [ {{ name: "{name}" {kv} }} ] }} }}'


def _request(body: str) -> gpu.GpuRequest:
    return gpu.gpu_request(config_from_pbtxt(_config(body), "m"))


GPU_GROUP = "instance_group [ { kind: KIND_GPU count: 2 gpus: [ 1 ] } ]"


# --- reading the config ----------------------------------------------------------------------------------------

def test_a_cpu_config_asks_for_no_gpu() -> None:
    assert _request("") == gpu.GpuRequest(warm_up=8)
    assert not _request("instance_group [ { kind: KIND_CPU count: 2 } ]").wanted


def test_the_gpu_request_reads_group_device_accelerator_and_precision() -> None:
    r = _request(GPU_GROUP + "\n" + _accel("tensorrt", precision_mode="fp16", trt_engine_cache_path="/c"))
    assert r == gpu.GpuRequest(True, ("tensorrt",), "FP16", 1, "/c", 8)
    assert _request(_accel("cuda")).wanted  # an accelerator alone asks for the GPU


def test_bad_accelerator_settings_name_the_field() -> None:
    with pytest.raises(ModelConfigError, match=r"gpu_execution_accelerator\[0\]\.name 'openvino'"):
        _request(_accel("openvino"))
    with pytest.raises(ModelConfigError, match=r"parameters\.precision_mode 'FP8' is not one of FP32, FP16, INT8"):
        _request(_accel("tensorrt", precision_mode="FP8"))


# --- choosing the engine ---------------------------------------------------------------------------------------

def _plan(body: str, ort: list[str], torch_cuda: bool = False, onnx2torch: bool = False) -> gpu.ExecutionPlan:
    return gpu.plan_execution(_request(body), ort_providers=ort, torch_cuda=torch_cuda, onnx2torch=onnx2torch,
                              cache_dir=Path("/repo/m/1/.engines"))


def test_no_gpu_request_runs_onnxruntime_on_the_cpu() -> None:
    plan = _plan("", ALL_ORT, torch_cuda=True, onnx2torch=True)
    assert plan == gpu.ExecutionPlan("onnxruntime") and not plan.on_gpu


def test_tensorrt_gets_precision_device_and_an_engine_cache() -> None:
    plan = _plan(GPU_GROUP + "\n" + _accel("tensorrt", precision_mode="FP16"), ALL_ORT)
    (trt, trt_opts), (cuda, cuda_opts), cpu = plan.providers
    assert (trt, cuda, cpu) == tuple(ALL_ORT) and plan.device == "cuda:1" and plan.precision == "FP16"
    assert trt_opts["trt_fp16_enable"] and not trt_opts["trt_int8_enable"] and trt_opts["device_id"] == 1
    assert trt_opts["trt_engine_cache_enable"] and trt_opts["trt_engine_cache_path"] == "/repo/m/1/.engines"
    assert cuda_opts == {"device_id": 1} and plan.notes == ()
    int8 = _plan(_accel("tensorrt", precision_mode="INT8"), ALL_ORT).providers[0][1]
    assert int8["trt_int8_enable"] and int8["trt_fp16_enable"]


def test_a_missing_tensorrt_provider_leaves_cuda_with_a_note() -> None:
    plan = _plan(_accel("tensorrt"), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [p if isinstance(p, str) else p[0] for p in plan.providers] == ["CUDAExecutionProvider",
                                                                          "CPUExecutionProvider"]
    assert "TensorrtExecutionProvider is not available" in plan.notes[0]


def test_fp16_without_tensorrt_runs_the_files_precision_on_cuda() -> None:
    plan = _plan(_accel("cuda", precision_mode="FP16"), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert plan.precision == "FP32" and "needs TensorRT" in plan.notes[0]


def test_without_a_gpu_provider_torch_takes_the_gpu() -> None:
    plan = _plan(GPU_GROUP, CPU_ONLY, torch_cuda=True, onnx2torch=True)
    assert plan.engine == "torch" and plan.device == "cuda:1" and plan.precision == "FP32"
    assert any("through PyTorch" in n for n in plan.notes)
    fp16 = _plan(_accel("torch", precision_mode="FP16"), ALL_ORT, torch_cuda=True, onnx2torch=True)
    assert fp16.engine == "torch" and fp16.precision == "FP16" and fp16.notes == ()  # asked for by name


def test_nothing_on_the_gpu_falls_back_to_the_cpu_with_every_reason() -> None:
    plan = _plan(_accel("torch"), CPU_ONLY, torch_cuda=True, onnx2torch=False)
    assert plan.engine == "onnxruntime" and not plan.on_gpu and plan.providers == ("CPUExecutionProvider",)
    text = " | ".join(plan.notes)
    assert "onnx2torch is not installed" in text and "CUDAExecutionProvider is not available" in text
    assert "running on the CPU" in text


def test_int8_that_no_engine_can_honour_fails_the_load() -> None:
    for ort in (CPU_ONLY, ["CUDAExecutionProvider", "CPUExecutionProvider"]):
        with pytest.raises(ModelConfigError, match="precision_mode INT8 on a GPU needs TensorRT"):
            _plan(_accel("cuda", precision_mode="INT8"), ort, torch_cuda=True, onnx2torch=True)


def test_a_gpu_config_loads_on_this_machine_wherever_it_can(tmp_path: Path) -> None:
    """Here (no GPU, CPU onnxruntime) a KIND_GPU model loads on the CPU and serves; on a GPU machine it runs there."""
    model = write_double(tmp_path) / "1" / "model.onnx"
    cfg = config_from_pbtxt('name: "double" instance_group [ { kind: KIND_GPU count: 1 } ]', "double")
    runtime = OnnxRuntime.open(model, cfg, RuntimeOptions())
    try:
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        np.testing.assert_array_equal(runtime.run({"x": x}, ["y"])["y"], x * 2)
        if not gpu.torch_cuda_available():
            assert runtime.describe() == "onnxruntime providers=['CPUExecutionProvider']"
    finally:
        runtime.close()


# --- ONNX Runtime through IO binding ---------------------------------------------------------------------------

def test_bound_session_gives_what_a_plain_run_gives(tmp_path: Path) -> None:
    import onnxruntime as ort

    path = write_dense(tmp_path) / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=CPU_ONLY)
    bound = gpu.BoundSession(session)
    assert [i.name for i in bound.get_inputs()] == ["x"] and bound.get_providers() == CPU_ONLY
    rng = np.random.default_rng(3)
    for n in (1, 5, 3):
        x = rng.standard_normal((n, 64)).astype(np.float32)
        (y,) = bound.run(["y"], {"x": x})
        np.testing.assert_array_equal(y, session.run(["y"], {"x": x})[0])


def test_kernel_programs_open_their_file_on_the_cpu_without_a_gpu_request(tmp_path: Path) -> None:
    path = write_double(tmp_path) / "1" / "model.onnx"
    session = model_session(path, {})
    assert session.get_providers() == CPU_ONLY


# --- PyTorch: staging, threads, copies -------------------------------------------------------------------------

def _torch_dense(path: Path):  # type: ignore[no-untyped-def]
    """The fixtures' dense ONNX MLP rebuilt as a PyTorch module with the same weights (MatMul, Relu, ..., MatMul)."""
    torch = pytest.importorskip("torch")
    weights = [torch.from_numpy(numpy_helper.to_array(w).copy()) for w in onnx.load(str(path)).graph.initializer]

    class Dense(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.ParameterList([torch.nn.Parameter(w, requires_grad=False) for w in weights])

        def forward(self, x):  # type: ignore[no-untyped-def]
            for w in self.w[:-1]:
                x = torch.relu(x @ w)
            return x @ self.w[-1]

    return Dense()


def _args(path: Path) -> tuple[list[gpu._Arg], list[gpu._Arg]]:
    model = onnx.load(str(path))
    return gpu._onnx_args(model.graph.input), gpu._onnx_args(model.graph.output)


def test_onnx_tensors_are_described_like_onnxruntime_does(tmp_path: Path) -> None:
    import onnxruntime as ort

    path = write_dense(tmp_path) / "1" / "model.onnx"
    ins, outs = _args(path)
    ref = ort.InferenceSession(str(path), providers=CPU_ONLY)
    assert [(a.name, a.type, a.shape) for a in ins] == [(a.name, a.type, tuple(a.shape)) for a in ref.get_inputs()]
    assert [(a.name, a.type, a.shape) for a in outs] == [(a.name, a.type, tuple(a.shape)) for a in ref.get_outputs()]


def test_torch_session_matches_onnxruntime_and_reuses_its_buffers(tmp_path: Path) -> None:
    model_dir = write_dense(tmp_path)
    path = model_dir / "1" / "model.onnx"
    session = gpu.TorchSession(_torch_dense(path), *_args(path))
    assert session.get_providers() == ["torch:cpu:FP32"]
    rng = np.random.default_rng(0)
    staged = None
    for n in (8, 3, 8, 1):
        x = rng.standard_normal((n, 64)).astype(np.float32)
        (y,) = session.run(["y"], {"x": x})
        np.testing.assert_allclose(y, onnx_run(model_dir, {"x": x})[0], rtol=2e-5, atol=2e-5)
        buffers = session._state().buffers
        if staged is None:
            staged = buffers[("in", "x")]
        assert buffers[("in", "x")] is staged  # smaller batches reuse the first batch's staging buffer
    previous = y.copy()
    session.run(None, {"x": rng.standard_normal((1, 64)).astype(np.float32)})
    np.testing.assert_array_equal(y, previous)  # results are copies, not views of the reused buffers
    with pytest.raises(ValueError, match=r"missing inputs \['x'\]"):
        session.run(["y"], {})


def test_torch_session_buffers_grow_and_each_thread_has_its_own(tmp_path: Path) -> None:
    model_dir = write_dense(tmp_path)
    path = model_dir / "1" / "model.onnx"
    session = gpu.TorchSession(_torch_dense(path), *_args(path))
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((n, 64)).astype(np.float32) for n in (1, 2, 16, 64, 5, 33, 7, 64)]
    expected = [onnx_run(model_dir, {"x": x})[0] for x in inputs]
    errors: list[BaseException] = []
    seen: list[object] = []  # the buffers themselves: ids of freed objects could be reused by a later thread

    def work(offset: int) -> None:
        try:
            for i in range(len(inputs)):
                k = (i + offset) % len(inputs)
                np.testing.assert_allclose(session.run(["y"], {"x": inputs[k]})[0], expected[k], rtol=2e-5, atol=2e-5)
            seen.append(session._state().buffers[("in", "x")])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len({id(b) for b in seen}) == 4  # one staging buffer per worker thread: none writes into another's batch


def test_batches_are_padded_to_powers_of_two_and_cut_back(tmp_path: Path) -> None:
    assert [gpu.bucket_size(n) for n in (0, 1, 2, 3, 5, 64, 65, 4096, 5000)] == [0, 1, 2, 4, 8, 64, 128, 4096, 5000]
    model_dir = write_dense(tmp_path)
    path = model_dir / "1" / "model.onnx"
    module = _torch_dense(path)
    seen: list[tuple[int, ...]] = []
    module.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    session = gpu.TorchSession(module, *_args(path))
    rng = np.random.default_rng(4)
    for n in (3, 5, 7, 1):
        x = rng.standard_normal((n, 64)).astype(np.float32)
        x.flags.writeable = False  # request tensors arrive read-only
        (y,) = session.run(["y"], {"x": x})
        assert y.shape == (n, 8)
        np.testing.assert_allclose(y, onnx_run(model_dir, {"x": x})[0], rtol=2e-5, atol=2e-5)
    assert seen == [(4, 64), (8, 64), (8, 64), (1, 64)]
    exact = gpu.TorchSession(_torch_dense(path), *_args(path), bucket_batches=False)
    assert exact.run(["y"], {"x": np.ones((3, 64), np.float32)})[0].shape == (3, 8)


def test_warm_up_runs_each_padded_batch_size_once(tmp_path: Path) -> None:
    path = write_dense(tmp_path) / "1" / "model.onnx"
    module = _torch_dense(path)
    seen: list[int] = []
    module.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    session = gpu.TorchSession(module, *_args(path))
    assert session.warm_up(20) == [1, 2, 4, 8, 16, 32] and seen == [1, 2, 4, 8, 16, 32]
    ins, outs = _args(path)
    varying = [gpu._Arg("x", "tensor(float)", ("N", "D"))]  # a size beside the batch that requests choose
    assert gpu.TorchSession(_torch_dense(path), varying, outs).warm_up(20) == []
    assert gpu.TorchSession(_torch_dense(path), ins, outs, bucket_batches=False).warm_up(20) == []


def test_the_config_sets_the_warm_up() -> None:
    assert _request(GPU_GROUP).warm_up == 8  # max_batch_size
    off = _request(GPU_GROUP + '\nparameters { key: "infer.gpu_warmup" value: { string_value: "false" } }')
    assert off.warm_up == 0
    plan = _plan(GPU_GROUP, CPU_ONLY, torch_cuda=True, onnx2torch=True)
    assert plan.warm_up == 8


def test_torch_engine_refuses_int8() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(ModelConfigError, match="FP32 or FP16, not INT8"):
        gpu.TorchSession(torch.nn.Identity(), [], [], precision="INT8")


# --- on a GPU --------------------------------------------------------------------------------------------------

def _gpu_torch() -> None:
    if not gpu.torch_cuda_available():
        pytest.skip("PyTorch sees no CUDA device here")
    if not gpu.onnx2torch_available():
        pytest.skip("onnx2torch is not installed (infer[gpu-torch])")


@pytest.mark.gpu
@pytest.mark.parametrize("precision, tolerance", [("FP32", 1e-3), ("FP16", 1e-2)])
def test_onnx_files_run_on_the_gpu_through_torch(tmp_path: Path, precision: str, tolerance: float) -> None:
    _gpu_torch()
    model_dir = write_dense(tmp_path, hidden=512)
    session = gpu.TorchSession.from_onnx(model_dir / "1" / "model.onnx", "cuda:0", precision)
    rng = np.random.default_rng(2)
    for n in (1, 17, 64):
        x = rng.standard_normal((n, 64)).astype(np.float32)
        (y,) = session.run(["y"], {"x": x})
        ref = onnx_run(model_dir, {"x": x})[0]
        assert y.dtype == np.float32 and np.linalg.norm(y - ref) / np.linalg.norm(ref) < tolerance


@pytest.mark.gpu
def test_a_kind_gpu_model_runs_on_the_gpu(tmp_path: Path) -> None:
    _gpu_torch()
    model = write_double(tmp_path) / "1" / "model.onnx"
    cfg = config_from_pbtxt('name: "double" instance_group [ { kind: KIND_GPU count: 1 } ]', "double")
    runtime = OnnxRuntime.open(model, cfg, RuntimeOptions())
    try:
        assert "cuda" in runtime.describe().lower()
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        np.testing.assert_array_equal(runtime.run({"x": x}, ["y"])["y"], x * 2)
    finally:
        runtime.close()
