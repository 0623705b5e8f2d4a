"""Per-stage cost of infer's request path in process (no socket): where a request's time goes.

    python benchmarks/stages.py REPO [--model anomaly] [--input features:FP32:-1,16] [-n 3000]

Drives the real servicer, data plane and scheduler on a real model with an event loop, then times
each stage alone: protobuf parse, protobuf -> core, validation, runtime call, core -> protobuf.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen

from infer._proto import grpc_service_pb2 as pb
from infer.dataplane.service import DataPlane
from infer.dataplane.validate import validate_inputs
from infer.observability.metrics import Metrics
from infer.registry.registry import ModelRegistry
from infer.registry.repository import ModelRepository
from infer.scheduling.dispatch import Dispatcher
from infer.transport.grpc.converters import infer_request_from_pb, infer_response_to_pb
from infer.transport.grpc.servicer import InferenceServicer


class _Context:
    def time_remaining(self) -> None:
        return None


def _per_call_us(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


async def run(repo: Path, model: str, spec: str, n: int) -> None:
    registry = ModelRegistry(ModelRepository(repo))
    dispatcher = Dispatcher(Metrics())
    registry.add_listener(dispatcher)
    await registry.load_all([model])
    dp = DataPlane(registry, dispatcher)
    dp.started = True
    servicer = InferenceServicer(dp)
    data = loadgen.request_from_spec(model, [loadgen.parse_spec(spec)])
    ctx = _Context()

    async def one() -> bytes:
        resp = await servicer.ModelInfer(pb.ModelInferRequest.FromString(data), ctx)
        return bytes(resp.SerializeToString())

    for _ in range(200):
        await one()
    for conc in (1, 32):
        t0 = time.perf_counter()
        for _ in range(n // conc):
            await asyncio.gather(*[one() for _ in range(conc)])
        print(f"whole path, {conc:>2} concurrent: {(time.perf_counter() - t0) / n * 1e6:7.1f} us/request")
    req = pb.ModelInferRequest.FromString(data)
    core = infer_request_from_pb(req, None)
    lv = registry.get(model)
    feeds = validate_inputs(lv, core)
    names = [t.name for t in lv.outputs]
    resp = await dp.infer(core)
    rows = [
        ("protobuf parse", lambda: pb.ModelInferRequest.FromString(data)),
        ("protobuf -> core", lambda: infer_request_from_pb(req, None)),
        ("validation", lambda: validate_inputs(lv, core)),
        ("runtime call (batch 1)", lambda: lv.runtime.run(feeds, names)),
        ("core -> protobuf", lambda: infer_response_to_pb(resp)),
    ]
    for label, fn in rows:
        print(f"{label:<24}{_per_call_us(fn, n):7.1f} us")
    await registry.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repo", type=Path)
    p.add_argument("--model", default="anomaly")
    p.add_argument("--input", default="features:FP32:-1,16")
    p.add_argument("-n", type=int, default=3000)
    a = p.parse_args()
    np.random.seed(0)
    asyncio.run(run(a.repo, a.model, a.input, a.n))


if __name__ == "__main__":
    main()
