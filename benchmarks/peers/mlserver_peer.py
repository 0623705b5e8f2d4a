"""Start and stop Seldon MLServer as a benchmark peer serving one ONNX file.

This module runs in the project's venv and never imports ``mlserver``: it writes MLServer's ``settings.json`` and
``<model>/model-settings.json`` into a work folder, starts ``benchmarks/.venv-mlserver/bin/mlserver start`` (set
up by ``setup_mlserver.sh``) with :mod:`mlserver_runtime` on PYTHONPATH, and waits on gRPC ``ModelReady`` using
the project's own V2 stubs.  Everything listens on 127.0.0.1; tracing and Kafka stay off (MLServer's defaults).

    proc = start_mlserver(onnx, "anomaly", workdir, grpc_port=..., http_port=..., metrics_port=...,
                          max_batch_size=32, max_batch_time_s=0.002, parallel_workers=1)
    ...
    stop_mlserver(proc)

``python benchmarks/peers/mlserver_peer.py`` is a smoke test: it builds the anomaly model, starts MLServer with
adaptive batching for ``parallel_workers`` 0 and 1, checks one raw-input request (and one typed-contents and one
multi-row request) against in-process onnxruntime, then sends 200 concurrent requests with grpc.aio and prints
the throughput.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

__all__ = ["MLSERVER_BIN", "MLSERVER_VENV", "start_mlserver", "stop_mlserver", "write_mlserver_config"]

PEERS_DIR = Path(__file__).resolve().parent
MLSERVER_VENV = PEERS_DIR.parent / ".venv-mlserver"
MLSERVER_BIN = MLSERVER_VENV / "bin" / "mlserver"
RUNTIME_IMPLEMENTATION = "mlserver_runtime.OnnxRuntimeModel"
LOG_NAME = "mlserver.log"


def write_mlserver_config(
    onnx_path: Path,
    model_name: str,
    workdir: Path,
    *,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    max_batch_size: int = 0,
    max_batch_time_s: float = 0.0,
    parallel_workers: int = 1,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    metrics: bool = True,
    offload: bool = False,
    extra: Mapping[str, object] | None = None,
) -> tuple[Path, Path]:
    """Write ``workdir/settings.json`` and ``workdir/<model_name>/model-settings.json``; return both paths."""
    workdir = Path(workdir).resolve()
    model_dir = workdir / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        # None turns off the metrics server and the gRPC Prometheus interceptor.
        "metrics_endpoint": "/metrics" if metrics else None,
        "metrics_dir": str(workdir / ".metrics"),
        "environments_dir": str(workdir / ".envs"),
        "parallel_workers": parallel_workers,
        "debug": False,  # True adds a per-request access-log interceptor
        "load_models_at_startup": True,
        "tracing_server": None,
        "kafka_enabled": False,
        "cache_enabled": False,
    }
    runtime_extra: dict[str, object] = {"offload": offload}
    if intra_op_threads:
        runtime_extra["intra_op_threads"] = intra_op_threads
    if inter_op_threads:
        runtime_extra["inter_op_threads"] = inter_op_threads
    runtime_extra.update(extra or {})
    model_settings = {
        "name": model_name,
        "implementation": RUNTIME_IMPLEMENTATION,
        "parameters": {"uri": str(Path(onnx_path).resolve()), "extra": runtime_extra},
        "max_batch_size": max_batch_size,
        "max_batch_time": max_batch_time_s,
    }
    settings_path = workdir / "settings.json"
    model_settings_path = model_dir / "model-settings.json"
    settings_path.write_text(json.dumps(settings, indent=2) + "\n")
    model_settings_path.write_text(json.dumps(model_settings, indent=2) + "\n")
    return settings_path, model_settings_path


def _child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLSERVER_") and k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env["PYTHONPATH"] = str(PEERS_DIR)
    env["PATH"] = f"{MLSERVER_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _log_tail(workdir: Path, n: int = 40) -> str:
    try:
        lines = (Path(workdir) / LOG_NAME).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def wait_model_ready(
    proc: subprocess.Popen[bytes], model_name: str, grpc_port: int, *, timeout_s: float, workdir: Path
) -> None:
    """Poll gRPC ``ModelReady`` on 127.0.0.1:``grpc_port`` until true; raise if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlserver exited with {proc.returncode} before model '{model_name}' was ready:\n"
                    + _log_tail(workdir)
                )
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name=model_name), timeout=2.0).ready:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"model '{model_name}' not ready on 127.0.0.1:{grpc_port} after {timeout_s:.0f}s:\n"
                    + _log_tail(workdir)
                )
            time.sleep(0.25)


def start_mlserver(
    onnx_path: Path,
    model_name: str,
    workdir: Path,
    *,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    max_batch_size: int = 0,
    max_batch_time_s: float = 0.0,
    parallel_workers: int = 1,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    metrics: bool = True,
    offload: bool = False,
    extra: Mapping[str, object] | None = None,
    ready_timeout_s: float = 120.0,
) -> subprocess.Popen[bytes]:
    """Write the config into ``workdir``, start MLServer on it and return once ``model_name`` is ready.

    ``parallel_workers`` 0 runs inference in the server process itself; N > 0 runs N worker processes (the
    adaptive batcher still lives in the server process).  ``intra_op_threads`` / ``inter_op_threads`` 0 leave
    onnxruntime's defaults; ``extra`` is merged into the runtime's ``parameters.extra`` (see
    :mod:`mlserver_runtime`).  ``metrics=False`` turns MLServer's Prometheus endpoint and interceptor off.  The
    server's output goes to ``workdir/mlserver.log``.  The process leads its own process group so
    :func:`stop_mlserver` can also reap the workers.
    """
    if not MLSERVER_BIN.exists():
        raise FileNotFoundError(f"{MLSERVER_BIN} not found: run benchmarks/peers/setup_mlserver.sh first")
    workdir = Path(workdir).resolve()
    write_mlserver_config(
        onnx_path,
        model_name,
        workdir,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        max_batch_size=max_batch_size,
        max_batch_time_s=max_batch_time_s,
        parallel_workers=parallel_workers,
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        metrics=metrics,
        offload=offload,
        extra=extra,
    )
    with open(workdir / LOG_NAME, "ab") as log:
        proc = subprocess.Popen(
            [str(MLSERVER_BIN), "start", str(workdir)],
            cwd=workdir,  # MLServer reads ./.env and puts ./.metrics, ./.envs here
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_model_ready(proc, model_name, grpc_port, timeout_s=ready_timeout_s, workdir=workdir)
    except BaseException:
        stop_mlserver(proc)
        raise
    return proc


def stop_mlserver(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int | None:
    """SIGTERM the server (it stops its workers), SIGKILL its process group if it lingers; return the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
    # Kill anything left in the server's own process group (stuck server or orphaned workers).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        return None


# --------------------------------------------------------------------------------------------- smoke test


def _free_ports(n: int) -> list[int]:
    import socket

    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _raw_request(model_name: str, x: NDArray[np.float32]) -> pb.ModelInferRequest:
    arr = np.ascontiguousarray(x, dtype=np.float32)
    return pb.ModelInferRequest(
        model_name=model_name,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=list(arr.shape))],
        raw_input_contents=[arr.tobytes()],
    )


def _output(resp: pb.ModelInferResponse, name: str) -> tuple[NDArray[Any], str]:
    """The output ``name`` as a numpy array, and where it came from ('raw' or 'typed')."""
    dtypes: dict[str, type[np.generic]] = {
        "FP32": np.float32,
        "INT64": np.int64,
        "FP64": np.float64,
        "INT32": np.int32,
        "BOOL": np.bool_,
    }
    fields = {"FP32": "fp32_contents", "INT64": "int64_contents", "FP64": "fp64_contents", "INT32": "int_contents"}
    for i, out in enumerate(resp.outputs):
        if out.name != name:
            continue
        shape = tuple(out.shape)
        dtype = dtypes[out.datatype]
        if resp.raw_output_contents:
            return np.frombuffer(resp.raw_output_contents[i], dtype=dtype).reshape(shape), "raw"
        values = getattr(out.contents, fields.get(out.datatype, "bool_contents"))
        return np.asarray(values, dtype=dtype).reshape(shape), "typed"
    raise KeyError(f"no output {name!r} in response (outputs: {[o.name for o in resp.outputs]})")


def _batch_sizes(workdir: Path, offset: int) -> str:
    """Tally the runtime's ``onnx batch rows=N`` log lines written after byte ``offset`` of the log."""
    import collections
    import re

    time.sleep(0.5)  # let the log catch up
    with open(workdir / LOG_NAME, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    counts = collections.Counter(int(m) for m in re.findall(r"onnx batch rows=(\d+)", text))
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "(none logged)"


def _smoke(
    onnx_path: Path, workroot: Path, parallel_workers: int, x: NDArray[np.float32], expected: dict[str, NDArray[Any]]
) -> float:
    import asyncio

    model = "anomaly"
    grpc_port, http_port, metrics_port = _free_ports(3)
    workdir = workroot / f"mlserver-w{parallel_workers}"
    t0 = time.perf_counter()
    proc = start_mlserver(
        onnx_path,
        model,
        workdir,
        grpc_port=grpc_port,
        http_port=http_port,
        metrics_port=metrics_port,
        max_batch_size=32,
        max_batch_time_s=0.002,
        parallel_workers=parallel_workers,
        intra_op_threads=1,
        extra={"log_batches": True},
    )
    tag = f"[workers={parallel_workers}]"
    print(f"{tag} mlserver pid {proc.pid} ready in {time.perf_counter() - t0:.1f}s (grpc 127.0.0.1:{grpc_port})")
    xs = np.asarray(x, dtype=np.float32)
    exp_score = np.asarray(expected["score"])
    exp_label = np.asarray(expected["label"])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            # 1. one row, raw input (as tritonclient and the harness send it)
            resp = stub.ModelInfer(_raw_request(model, xs[:1]), timeout=30)
            score, how = _output(resp, "score")
            label, _ = _output(resp, "label")
            assert score.shape == (1, 1) and label.shape == (1, 1), (score.shape, label.shape)
            np.testing.assert_allclose(score, exp_score[:1], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(label, exp_label[:1])
            print(f"{tag} raw-input request ok: outputs came back as {how} contents, score {float(score[0, 0]):+.6f}")
            # 2. one row, typed input contents
            typed = pb.ModelInferRequest(
                model_name=model,
                inputs=[
                    pb.ModelInferRequest.InferInputTensor(
                        name="features",
                        datatype="FP32",
                        shape=[1, xs.shape[1]],
                        contents=pb.InferTensorContents(fp32_contents=xs[1].tolist()),
                    )
                ],
            )
            resp = stub.ModelInfer(typed, timeout=30)
            score, how = _output(resp, "score")
            np.testing.assert_allclose(score, exp_score[1:2], rtol=1e-5, atol=1e-6)
            print(f"{tag} typed-input request ok: outputs came back as {how} contents")
            # 3. several rows in one request
            resp = stub.ModelInfer(_raw_request(model, xs[:5]), timeout=30)
            score, _ = _output(resp, "score")
            np.testing.assert_allclose(score, exp_score[:5], rtol=1e-5, atol=1e-6)
            print(f"{tag} 5-row request ok")

        # 4. 200 concurrent single-row requests over one grpc.aio channel; adaptive batching groups them.
        n = 200

        async def burst() -> float:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
                astub = pb_grpc.GRPCInferenceServiceStub(ch)
                reqs = [_raw_request(model, xs[i % len(xs)][None, :]) for i in range(n)]
                # warm-up burst (first batches, thread pools), then the timed one
                await asyncio.gather(*(astub.ModelInfer(r, timeout=60) for r in reqs[:32]))
                t = time.perf_counter()
                resps = await asyncio.gather(*(astub.ModelInfer(r, timeout=60) for r in reqs))
                elapsed = time.perf_counter() - t
            for i, r in enumerate(resps):
                s, _ = _output(r, "score")
                lab, _ = _output(r, "label")
                np.testing.assert_allclose(s, exp_score[i % len(xs)][None, :], rtol=1e-5, atol=1e-6)
                np.testing.assert_array_equal(lab, exp_label[i % len(xs)][None, :])
            return elapsed

        log_size = (workdir / LOG_NAME).stat().st_size
        elapsed = asyncio.run(burst())
        rps = n / elapsed
        print(f"{tag} {n} concurrent requests ok in {elapsed * 1000:.0f} ms: ~{rps:.0f} req/s")
        print(f"{tag} onnx batch sizes (rows: calls) over warm-up 32 + timed {n}: {_batch_sizes(workdir, log_size)}")
        return rps
    except BaseException:
        print(f"{tag} FAILED; end of {workdir / LOG_NAME}:\n{_log_tail(workdir)}")
        raise
    finally:
        code = stop_mlserver(proc)
        print(f"{tag} mlserver stopped (exit {code})")


def main() -> int:
    import tempfile

    import onnxruntime as ort

    from infer.tasks.anomaly.build import build_model
    from infer.tasks.anomaly.data import make_normal

    version = subprocess.run(
        [str(MLSERVER_VENV / "bin" / "python"), "-c", "import mlserver; print(mlserver.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"mlserver {version} from {MLSERVER_VENV}")
    with tempfile.TemporaryDirectory(prefix="mlserver-peer-") as tmp:
        root = Path(tmp)
        build_model(root, n_train=2000)
        onnx_path = root / "anomaly" / "1" / "model.onnx"
        x = make_normal(64, np.random.default_rng(1)).astype(np.float32)
        x[:4] *= 4.0  # a few out-of-distribution rows so both labels occur
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        label, score = sess.run(["label", "score"], {"features": x})
        expected = {"label": label, "score": score}
        results = {w: _smoke(onnx_path, root, w, x, expected) for w in (0, 1)}
    print("smoke test passed: " + ", ".join(f"parallel_workers={w}: ~{r:.0f} req/s" for w, r in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
