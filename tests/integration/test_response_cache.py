"""The response cache behind the real server: hits skip the model, statistics count them, a reload invalidates."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
from fixtures import ServerProcess, write_double

from infer._proto import grpc_service_pb2 as pb
from infer._proto import grpc_service_pb2_grpc as pb_grpc

CONFIG = """
name: "cached"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
response_cache { enable: true }
parameters { key: "infer.cache_ttl_s" value: { string_value: "0.5" } }
"""


def _infer(stub: pb_grpc.GRPCInferenceServiceStub, v: float) -> np.ndarray:
    req = pb.ModelInferRequest(model_name="cached")
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(np.full((1, 4), v, np.float32).tobytes())
    resp = stub.ModelInfer(req, timeout=10)
    return np.frombuffer(resp.raw_output_contents[0], np.float32)


def _stats(stub: pb_grpc.GRPCInferenceServiceStub) -> pb.ModelStatistics:
    return stub.ModelStatistics(pb.ModelStatisticsRequest(name="cached"), timeout=10).model_stats[0]


def test_hits_misses_ttl_and_invalidation(tmp_path: Path) -> None:
    write_double(tmp_path, name="cached", config=CONFIG)
    with ServerProcess(tmp_path) as srv, grpc.insecure_channel(srv.address) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        assert _infer(stub, 1.0).tolist() == [2.0] * 4
        assert _infer(stub, 1.0).tolist() == [2.0] * 4  # hit
        assert _infer(stub, 3.0).tolist() == [6.0] * 4  # other input: miss
        s = _stats(stub).inference_stats
        assert (s.cache_hit.count, s.cache_miss.count) == (1, 2)
        assert _stats(stub).execution_count == 2  # the hit never reached the model
        assert s.success.count == 3
        time.sleep(0.6)  # past the 0.5 s time to live
        _infer(stub, 1.0)
        assert _stats(stub).inference_stats.cache_miss.count == 3
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="cached"), timeout=30)
        _infer(stub, 3.0)  # a reloaded version starts with nothing cached
        s = _stats(stub).inference_stats
        assert (s.cache_hit.count, s.cache_miss.count) == (0, 1)  # statistics are per loaded version
        _infer(stub, 3.0)
        assert _stats(stub).inference_stats.cache_hit.count == 1
