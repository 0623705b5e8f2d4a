"""Minimal MLServer custom runtime serving one ONNX file with onnxruntime (CPU).

Loaded by MLServer (``"implementation": "mlserver_runtime.OnnxRuntimeModel"`` in model-settings.json), so it
runs inside ``benchmarks/.venv-mlserver`` and is imported from there with ``benchmarks/peers`` on PYTHONPATH; it
is never imported by the project itself.

model-settings.json::

    {"name": "anomaly", "implementation": "mlserver_runtime.OnnxRuntimeModel",
     "parameters": {"uri": "/abs/path/model.onnx",
                    "extra": {"intra_op_threads": 1, "inter_op_threads": 1, "offload": false}},
     "max_batch_size": 32, "max_batch_time": 0.002}

``extra`` (all optional): ``intra_op_threads`` / ``inter_op_threads`` (0 or absent: onnxruntime's default),
``offload`` (run ``session.run`` in a thread so the event loop keeps serving; default false, which is what
MLServer's own runtimes do), ``log_batches`` (log ``onnx batch rows=N`` for every ``predict`` call, to see what the
adaptive batcher merged; default false).

Requests are decoded with MLServer's :class:`~mlserver.codecs.NumpyCodec`, one array per input (the batch
dimension is dim 0, so MLServer's adaptive batcher can concatenate requests along it and split the response
again), and every model output (or only the requested ones, when the request names outputs) is encoded back with
the same codec.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

log = logging.getLogger("mlserver")

# onnxruntime type strings -> numpy dtypes, to cast inputs whose wire datatype differs from the model's.
_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class OnnxRuntimeModel(MLModel):
    """Serve ``parameters.uri`` (an ONNX file, or a folder holding ``model.onnx``) with onnxruntime."""

    async def load(self) -> bool:
        uri = await get_model_uri(self.settings, wellknown_filenames=["model.onnx"])
        extra: dict[str, Any] = dict((self.settings.parameters.extra if self.settings.parameters else None) or {})
        so = ort.SessionOptions()
        intra = int(extra.get("intra_op_threads", 0) or 0)
        inter = int(extra.get("inter_op_threads", 0) or 0)
        if intra > 0:
            so.intra_op_num_threads = intra
        if inter > 0:
            so.inter_op_num_threads = inter
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self._session = ort.InferenceSession(uri, sess_options=so, providers=["CPUExecutionProvider"])
        self._offload = bool(extra.get("offload", False))
        self._log_batches = bool(extra.get("log_batches", False))
        self._input_dtypes = {i.name: _ORT_TO_NUMPY.get(i.type) for i in self._session.get_inputs()}
        self._output_names = [o.name for o in self._session.get_outputs()]
        return True

    def _feeds(self, payload: InferenceRequest) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {}
        for request_input in payload.inputs:
            if request_input.name not in self._input_dtypes:
                raise InferenceError(f"model '{self.name}' has no input '{request_input.name}'")
            array = NumpyCodec.decode_input(request_input)
            want = self._input_dtypes[request_input.name]
            if want is not None and array.dtype != want:
                array = array.astype(want)
            feeds[request_input.name] = array
        missing = set(self._input_dtypes) - set(feeds)
        if missing:
            raise InferenceError(f"model '{self.name}' is missing inputs {sorted(missing)}")
        return feeds

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = self._feeds(payload)
        names = self._output_names
        if payload.outputs:
            names = [o.name for o in payload.outputs]
            unknown = set(names) - set(self._output_names)
            if unknown:
                raise InferenceError(f"model '{self.name}' has no outputs {sorted(unknown)}")
        if self._log_batches:
            rows = {len(a) if a.ndim else 1 for a in feeds.values()}
            log.info("onnx batch rows=%s", ",".join(map(str, sorted(rows))))
        if self._offload:
            results = await asyncio.to_thread(self._session.run, names, feeds)
        else:
            results = self._session.run(names, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name, np.asarray(value)) for name, value in zip(names, results, strict=True)
            ],
        )
