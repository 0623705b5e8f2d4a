"""The ``vision_quality`` model: a kernel program with no trained parameters (see
:mod:`infer.runtimes.vision_programs` and :mod:`kernels.image`), written into a repository."""

from __future__ import annotations

import json
from pathlib import Path

from infer.core.files import write_atomic

__all__ = ["write_quality_model"]


def write_quality_model(repo: Path, name: str = "vision_quality", *, min_side: int = 224,
                        max_batch_size: int = 64) -> Path:
    """Write ``name``: ``image`` BYTES in, the quality score and its parts out. ``min_side`` is the shorter side
    (pixels) below which the resolution component drops under 1."""
    version = repo / name / "1"
    write_atomic(version / "kernel.json",
                  json.dumps({"program": "vision_quality", "params": {"min_side": min_side}}).encode())
    config = (f'name: "{name}"\nbackend: "kernel"\nmax_batch_size: {max_batch_size}\n'
              'input { name: "image" data_type: TYPE_STRING dims: [ 1 ] }\n'
              'output { name: "quality" data_type: TYPE_FP32 dims: [ 1 ] }\n'
              'output { name: "quality_components" data_type: TYPE_FP32 dims: [ 4 ] }\n'
              'output { name: "quality_features" data_type: TYPE_FP32 dims: [ 6 ] }\n'
              'output { name: "size" data_type: TYPE_INT32 dims: [ 2 ] }\n'
              "dynamic_batching { }\n"
              'parameters: { key: "infer.warmup" value: { string_value: "false" } }\n')
    write_atomic(repo / name / "config.pbtxt", config.encode())
    return repo / name
