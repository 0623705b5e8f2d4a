"""Check and time every GPU path of infer on a lent GPU machine, in one call (``benchmarks/gpu_check.sh`` runs it).

Sections, each bounded in time and recorded even when it fails (the table says why):

1. **environment**: the card, driver, PyTorch/CUDA, ONNX Runtime's providers, TensorRT, numba-cuda.
2. **kernels**: the ``numba.cuda`` feature kernels (``kernels._cuda``) against the CPU kernels on 1M events:
   largest difference and the time of each.
3. **in-process ceilings**: each model file run by each engine this machine has (infer's torch engine on the
   GPU in FP32 and FP16; ONNX Runtime's CUDA/TensorRT providers and native TensorRT where installed; ONNX
   Runtime on the CPU as the reference) at batch 1, 8, 64, 256: relative error against ONNX Runtime FP32 on
   the CPU, rows/s and latency (median of repeated runs, inputs copied in and results copied out each time).
   Models: the compute-bound dense benchmark model (built here), the NLP sentence encoder and the vision
   classifier (carried by ``gpu_models.py``).
4. **served**: ``infer serve`` with the same models on the GPU (``instance_group KIND_GPU count 2``, dynamic
   batching), closed-loop gRPC load at concurrency 1, 32 and 256, each point twice: requests/s, p50 and p99,
   and the served rows/s over the best in-process rows/s of the same engine and precision.
5. **tests**: ``pytest -m gpu`` (the test suite's GPU halves), when time is left.

Writes ``$OUT/gpu_check.md`` (the tables) and ``$OUT/gpu_check.json``; prints the tables last.

    python benchmarks/gpu_check.py --models DIR [--out DIR] [--budget 420] [--quick]

``--quick`` shrinks every size and time so that the whole script can be tried on a CPU-only machine
(sections that need a GPU then record "skipped").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "src"), str(ROOT)]

import bench  # noqa: E402
import gpu_models  # noqa: E402
import loadgen  # noqa: E402
from models import dense_onnx  # noqa: E402

from infer.runtimes import gpu  # noqa: E402

T0 = time.monotonic()
REPORT: dict[str, Any] = {"sections": {}}


def elapsed() -> float:
    return time.monotonic() - T0


def section(name: str, fn: Callable[[], Any]) -> Any:
    """Run one section; its result, or the error that stopped it, goes into the report."""
    t = time.monotonic()
    print(f"== {name} (at {elapsed():.0f} s)", flush=True)
    try:
        result = fn()
        REPORT["sections"][name] = {"ok": True, "seconds": round(time.monotonic() - t, 1), "result": result}
        return result
    except Exception as e:  # recorded; the next section still runs
        traceback.print_exc()
        REPORT["sections"][name] = {"ok": False, "seconds": round(time.monotonic() - t, 1),
                                    "error": f"{type(e).__name__}: {e}"}
        return None


def _run(cmd: list[str], timeout: float = 20) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"({e})"


# --- 1. environment ------------------------------------------------------------------------------------------

def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.node()}
    env["nvidia_smi"] = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                              "--format=csv,noheader"])
    import onnxruntime as ort

    env["onnxruntime"] = ort.__version__
    env["ort_providers"] = ort.get_available_providers()
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as e:
        env["torch"] = f"not usable: {e}"
    for mod in ("tensorrt", "onnx2torch", "numba", "numba_cuda", "cupy"):
        try:
            m = __import__(mod)
            env[mod] = getattr(m, "__version__", "present")
        except Exception as e:
            env[mod] = f"absent ({type(e).__name__}: {str(e)[:80]})"
    env["torch_engine"] = gpu.torch_cuda_available() and gpu.onnx2torch_available()
    return env


# --- 2. numba.cuda kernels -----------------------------------------------------------------------------------

def kernels_check(events: int) -> dict[str, Any]:
    from kernel_speed import best_of, make_events

    from kernels import _cuda
    from kernels import anomaly_features as af
    from kernels import streaming as st

    if not _cuda.available():
        return {"skipped": "numba.cuda cannot run here"}
    enc = af.encode_events(make_events(events, 0))
    out: dict[str, Any] = {"events": events}
    cpu = af.stateless_features(enc, backend="cpu")
    cuda = af.stateless_features(enc, backend="cuda")  # compiles
    out["stateless_max_abs_diff"] = float(np.nanmax(np.abs(cpu - cuda)))
    out["stateless_cpu_ms"] = best_of(3, lambda: af.stateless_features(enc, backend="cpu")) * 1e3
    out["stateless_cuda_ms"] = best_of(3, lambda: af.stateless_features(enc, backend="cuda")) * 1e3
    rng = np.random.default_rng(1)
    ids = (rng.integers(0, 10_000, events).astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    values = rng.normal(0.0, 1.0, events)
    for kind in st.KINDS:
        s_cpu, s_gpu = st.new_series_state(kind, 16384), st.new_series_state(kind, 16384)
        a = st.score_series(ids, values, s_cpu, backend="cpu")
        b = st.score_series(ids, values, s_gpu, backend="cuda")
        out[f"{kind}_max_abs_diff"] = float(np.nanmax(np.abs(a - b)))
        for backend in ("cpu", "cuda"):
            out[f"{kind}_{backend}_ms"] = best_of(3, lambda k=kind, b=backend: st.score_series(
                ids, values, st.new_series_state(k, 16384), backend=b)) * 1e3
    return out


# --- 3. in-process ceilings ----------------------------------------------------------------------------------

def build_models(models_dir: Path, repo: Path, quick: bool) -> dict[str, Path]:
    """The dense model built here; the carried NLP and vision models unpacked; name -> model.onnx."""
    files: dict[str, Path] = {}
    dims = dict(hidden=256, layers=2, inputs=64) if quick else dict(hidden=8192, layers=4, inputs=1024)
    dense = repo / "_files" / "dense.onnx"
    dense.parent.mkdir(parents=True, exist_ok=True)
    dense.write_bytes(dense_onnx(seed=0, **dims).SerializeToString())
    files["dense"] = dense
    if models_dir.is_dir():
        gpu_models.unpack(models_dir, repo / "_carried")
        for name, key in (("nlp_embed_fp32", "nlp"), ("vision_classify_fp32", "vision")):
            path = repo / "_carried" / name / "1" / "model.onnx"
            if path.is_file():
                files[key] = path
    return files


def feeds(key: str, batch: int, rng: np.random.Generator, width: int) -> dict[str, np.ndarray]:
    if key == "dense":
        return {"x": rng.standard_normal((batch, width)).astype(np.float32)}
    if key == "nlp":
        ids = rng.integers(1000, 29000, (batch, 128)).astype(np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    return {"image": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}


def _input_names(session: Any) -> list[str]:
    return [i.name for i in session.get_inputs()]


def _adapt(f: dict[str, np.ndarray], session: Any) -> dict[str, np.ndarray]:
    """Give the generic feed names the session's own input names (the vision model's input is not "image")."""
    names = _input_names(session)
    if set(names) <= f.keys():
        return {n: f[n] for n in names}
    return dict(zip(names, f.values(), strict=True))


def _time(session: Any, f: dict[str, np.ndarray], seconds: float) -> float:
    """Median seconds per call (inputs in, outputs out), after warming up."""
    for _ in range(3):
        session.run(None, f)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        session.run(None, f)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.linalg.norm(x.astype(np.float64) - y) / max(np.linalg.norm(y.astype(np.float64)), 1e-30))
               for x, y in zip(a, b, strict=True))


def engines() -> list[tuple[str, Callable[[Path], Any]]]:
    """(label, opener) for every engine this machine can run."""
    import onnxruntime as ort

    out: list[tuple[str, Callable[[Path], Any]]] = []
    if gpu.torch_cuda_available() and gpu.onnx2torch_available():
        for precision in ("FP32", "FP16"):
            out.append((f"torch {precision}", lambda p, pr=precision: gpu.TorchSession.from_onnx(p, "cuda:0", pr)))
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" in providers:
        out.append(("ort-cuda FP32", lambda p: _ort(p, [("CUDAExecutionProvider", {"device_id": 0})])))
    if "TensorrtExecutionProvider" in providers:
        for precision in ("FP32", "FP16"):
            out.append((f"ort-trt {precision}", lambda p, pr=precision: _ort(
                p, [("TensorrtExecutionProvider", {"trt_fp16_enable": pr == "FP16"}), "CUDAExecutionProvider"])))
    return out


def _ort(path: Path, providers: list[Any]) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=so, providers=[*providers, "CPUExecutionProvider"])
    return gpu.BoundSession(session)


def ceilings(files: dict[str, Path], batches: list[int], seconds: float) -> list[dict[str, Any]]:
    import onnxruntime as ort

    rows: list[dict[str, Any]] = []
    for key, path in files.items():
        ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        width = int(ref.get_inputs()[0].shape[1]) if key == "dense" else 0
        check = _adapt(feeds(key, 8, np.random.default_rng(7), width), ref)
        expected = ref.run(None, check)
        for b in (min(64, max(batches)),):  # the CPU reference's own ceiling at one batch size
            f = _adapt(feeds(key, b, np.random.default_rng(b), width), ref)
            per = _time(ref, f, seconds)
            rows.append({"model": key, "engine": "ort-cpu FP32", "batch": b, "rel_err": 0.0,
                         "ms": per * 1e3, "rows_per_s": b / per})
        for label, opener in engines():
            try:
                session = opener(path)
                err = _rel(session.run(None, check), expected)
                for b in batches:
                    f = _adapt(feeds(key, b, np.random.default_rng(b), width), session)
                    per = _time(session, f, seconds)
                    rows.append({"model": key, "engine": label, "batch": b, "rel_err": err,
                                 "ms": per * 1e3, "rows_per_s": b / per})
                del session
            except Exception as e:  # one engine failing on one model is a finding
                rows.append({"model": key, "engine": label, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            print(f"  {key} {label} done at {elapsed():.0f} s", flush=True)
    return rows


# --- 4. served -----------------------------------------------------------------------------------------------

ON_GPU = True  # False: the dry run serves the same repository on the CPU (no GPU engine on that machine)


def _gpu_block(precision: str, count: int = 2) -> str:
    if not ON_GPU:
        return f"instance_group [ {{ kind: KIND_CPU count: {count} }} ]\n"
    return (f"instance_group [ {{ kind: KIND_GPU count: {count} }} ]\n"
            "optimization { execution_accelerators { gpu_execution_accelerator [ "
            f'{{ name: "torch" parameters {{ key: "precision_mode" value: "{precision}" }} }} ] }} }}\n')


def serving_repo(repo: Path, files: dict[str, Path], max_batch: int) -> dict[str, tuple[str, str]]:
    """Model directories for the server: name -> (model key, precision)."""
    served: dict[str, tuple[str, str]] = {}
    for precision in ("FP32", "FP16"):
        name = f"dense_{precision.lower()}"
        d = repo / name
        (d / "1").mkdir(parents=True, exist_ok=True)
        if not (d / "1" / "model.onnx").exists():
            os.link(files["dense"], d / "1" / "model.onnx")
        (d / "config.pbtxt").write_text(
            f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
            f"dynamic_batching {{ max_queue_delay_microseconds: 500 }}\n" + _gpu_block(precision))
        served[name] = ("dense", precision)
    for key, src_name in (("nlp", "nlp_embed_fp32"), ("vision", "vision_classify_fp32")):
        src = repo / "_carried" / src_name
        if key not in files or not src.is_dir():
            continue
        name = f"{key}_fp16"
        shutil.copytree(src, repo / name, dirs_exist_ok=True)
        lines = [ln for ln in (src / "config.pbtxt").read_text().splitlines()
                 if not ln.startswith(("name:", "max_batch_size:", "dynamic_batching", "instance_group"))]
        (repo / name / "config.pbtxt").write_text(
            f'name: "{name}"\nmax_batch_size: {max_batch}\n' + "\n".join(lines) + "\n"
            "dynamic_batching { max_queue_delay_microseconds: 500 }\n" + _gpu_block("FP16"))
        served[name] = (key, "FP16")
    return served


def _bytes_request(model: str, name: str, items: list[bytes]) -> bytes:
    from infer._proto import grpc_service_pb2 as pb

    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name=name, datatype="BYTES", shape=[len(items), 1])
    req.raw_input_contents.append(b"".join(len(x).to_bytes(4, "little") + x for x in items))
    return req.SerializeToString()


def _jpeg() -> bytes:
    from PIL import Image

    try:
        from skimage import data

        pixels = data.astronaut()
    except Exception:  # any photo-like array does for timing
        pixels = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# (served model, rows or items per request, concurrencies): one row per request measures the front end and the
# scheduler's batching; 64 rows per request measure the engine through the server
POINTS: list[tuple[str, int, list[int]]] = [
    ("dense_fp32", 1, [1, 32, 256]), ("dense_fp16", 1, [1, 32, 256]),
    ("dense_fp32", 64, [1, 4, 16]), ("dense_fp16", 64, [1, 4, 16]),
    ("nlp_fp16", 1, [1, 32, 256]), ("nlp_fp16", 64, [1, 4, 16]),
    ("vision_fp16", 1, [1, 32, 256]),
]


def parse_point(text: str) -> tuple[str, int, list[int]]:
    name, rows, conc = text.split(":")
    return name, int(rows), [int(c) for c in conc.split(",")]


def served_points(repo: Path, files: dict[str, Path], points: list[tuple[str, int, list[int]]], seconds: float,
                  repeat: int, max_batch: int, out: Path) -> list[dict[str, Any]]:
    models = serving_repo(repo, files, max_batch)
    for d in ("_files", "_carried"):  # not model directories: keep them out of the server's repository
        shutil.move(str(repo / d), str(repo.parent / f"{repo.name}{d}"))
    proc, target = bench.start_infer(repo, out, [])
    text = b"The quick brown fox jumps over the lazy dog while the server batches sentences on the GPU."
    rows: list[dict[str, Any]] = []
    try:
        for name, per_request, concurrency in points:
            if name not in models:
                continue
            key, precision = models[name]
            if key == "dense":
                width = int(dense_width(repo.parent / f"{repo.name}_files" / "dense.onnx"))
                payload = loadgen.request_from_spec(name, [("x", "FP32", [-1, width])], batch=per_request)
            elif key == "nlp":
                payload = _bytes_request(name, "text", [text] * per_request)
            else:
                payload = _bytes_request(name, "image", [_jpeg()] * per_request)
            loadgen.verify(target, payload)
            for rep in range(repeat):
                for c in concurrency:
                    r = loadgen.run_point(target, name, payload, backend="python", concurrency=c, seconds=seconds,
                                          warmup=1.0, label=f"{name}#{rep + 1}", batch=per_request)
                    print("  " + r.summary(), flush=True)
                    rows.append({"model": key, "name": name, "precision": precision, "rows": per_request,
                                 "concurrency": c, "run": rep + 1, "req_per_s": r.throughput,
                                 "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors})
    finally:
        bench.stop(proc)
    return rows


def dense_width(path: Path) -> int:
    import onnx

    return int(onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1].dim_value)


# --- 5. the test suite's GPU halves --------------------------------------------------------------------------

def gpu_tests(timeout: float) -> dict[str, Any]:
    # -c /dev/null: the project's pytest settings name plug-ins (pytest-asyncio, pytest-timeout) that the GPU
    # machine may lack, and turn their unknown-option warnings into errors; the GPU tests need none of them
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-c", "/dev/null",
           "--rootdir", str(ROOT)]
    cmd += [f for f in ("tests/unit/test_gpu_execution.py", "tests/unit/test_kernels_features.py",
                        "tests/unit/test_kernels_streaming.py", "tests/unit/test_runtime_selection.py",
                        "tests/unit/test_tensorrt_runtime.py") if (ROOT / f).is_file()]
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        return {"returncode": done.returncode, "tail": tail}
    except subprocess.TimeoutExpired:
        return {"returncode": None, "tail": [f"timed out after {timeout:.0f} s"]}


# --- tables --------------------------------------------------------------------------------------------------

def tables() -> str:
    s = REPORT["sections"]
    lines = [f"# GPU check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed():.0f} s)", ""]
    env = s.get("environment", {}).get("result") or {}
    for k in ("nvidia_smi", "torch", "torch_cuda", "onnxruntime", "ort_providers", "tensorrt", "onnx2torch",
              "numba", "numba_cuda", "cpus"):
        lines.append(f"- {k}: {env.get(k)}")
    for name, sec in s.items():
        if not sec["ok"]:
            lines.append(f"- section {name} FAILED: {sec['error']}")
    k = (s.get("kernels") or {}).get("result")
    if k:
        lines += ["", "## numba.cuda kernels vs CPU", "", "| kernel | max abs diff | CPU ms | CUDA ms |",
                  "| --- | --- | --- | --- |"]
        for name in ("stateless", "zscore", "madev"):
            if f"{name}_cpu_ms" in k:
                lines.append(f"| {name} ({k['events']:,} events) | {k[f'{name}_max_abs_diff']:.2e} | "
                             f"{k[f'{name}_cpu_ms']:.1f} | {k[f'{name}_cuda_ms']:.1f} |")
        if "skipped" in k:
            lines.append(f"| skipped: {k['skipped']} | | | |")
    rows = (s.get("ceilings") or {}).get("result") or []
    if rows:
        lines += ["", "## In-process ceilings (inputs in and results out each call)", "",
                  "| model | engine | batch | rel. error vs ORT CPU FP32 | ms | rows/s |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['engine']} | | failed: {r['error']} | | |")
            else:
                lines.append(f"| {r['model']} | {r['engine']} | {r['batch']} | {r['rel_err']:.1e} | {r['ms']:.3f} | "
                             f"{r['rows_per_s']:,.0f} |")
    served = (s.get("served") or {}).get("result") or []
    if served:
        best: dict[tuple[str, str], float] = {}
        for r in rows:
            if "error" not in r and r["engine"].startswith("torch"):
                key = (r["model"], r["engine"].split()[1])
                best[key] = max(best.get(key, 0.0), r["rows_per_s"])
        lines += ["", "## Served through the scheduler (KIND_GPU count 2, torch engine, closed loop)", "",
                  "| model | precision | rows/request | concurrency | run | req/s | rows/s | p50 ms | p99 ms | errors "
                  "| served / in-process rows/s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in served:
            ceiling = best.get((r["model"], r["precision"]))
            done = r["req_per_s"] * r["rows"]
            ratio = f"{done / ceiling:.3f}" if ceiling else "n/a"
            errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
            lines.append(f"| {r['name']} | {r['precision']} | {r['rows']} | {r['concurrency']} | {r['run']} | "
                         f"{r['req_per_s']:,.0f} | {done:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {errors} | "
                         f"{ratio} |")
    t = (s.get("gpu tests") or {}).get("result")
    if t:
        lines += ["", "## pytest -m gpu", "", "```", *t["tail"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=ROOT / ".gpu" / "models", help="gpu_models.py pack output")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "benchmarks" / "out" / "gpu")))
    p.add_argument("--work", type=Path, default=Path("/tmp/infer-gpu-check"))
    p.add_argument("--budget", type=float, default=420.0, help="seconds; the test section runs only within it")
    p.add_argument("--quick", action="store_true", help="tiny sizes and times (a dry run on a CPU machine)")
    p.add_argument("--sections", nargs="+", default=["kernels", "ceilings", "served", "tests"])
    p.add_argument("--ceiling-models", nargs="+", default=["dense", "nlp", "vision"])
    p.add_argument("--points", nargs="+", type=parse_point, default=POINTS, metavar="MODEL:ROWS:C1,C2",
                   help="served points, e.g. dense_fp32:64:1,4,16")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    repo = args.work / "repo"
    repo.mkdir(parents=True)
    quick = args.quick
    section("environment", environment)
    if "kernels" in args.sections:
        section("kernels", lambda: kernels_check(20_000 if quick else 1_000_000))
    files = section("models", lambda: {k: str(v) for k, v in build_models(args.models, repo, quick).items()})
    files = {k: Path(v) for k, v in (files or {}).items()}
    if "ceilings" in args.sections:
        chosen = {k: v for k, v in files.items() if k in args.ceiling_models}
        section("ceilings", lambda: ceilings(chosen, [1, 8] if quick else [1, 8, 64, 256], 0.2 if quick else 0.8))
    global ON_GPU
    ON_GPU = gpu.torch_cuda_available() and gpu.onnx2torch_available()
    if "served" in args.sections and (ON_GPU or quick):
        points = [(n, min(r, 4), c[:2]) for n, r, c in args.points] if quick else args.points
        section("served", lambda: served_points(repo, files, points, 1.0 if quick else 4.0, 1 if quick else 2,
                                                256, args.out))
    left = args.budget - elapsed()
    if left > 60 and "tests" in args.sections:
        section("gpu tests", lambda: gpu_tests(min(left - 20, 150)))
    text = tables()
    (args.out / "gpu_check.md").write_text(text)
    (args.out / "gpu_check.json").write_text(json.dumps(REPORT, indent=1, default=str))
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(60)
    sys.exit(main())
