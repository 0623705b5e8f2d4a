"""The ``vision`` pipeline model: the repository's vision models (quality, classifier, detector, OCR) put together
so that one call decodes each image once and returns every task's answer (see
:mod:`infer.runtimes.vision_pipeline`). Each task is still served on its own by the model it was copied from."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from infer.core.types import DataType, TensorSpec
from infer.tasks.files import write_atomic

__all__ = ["DEFAULT_PARTS", "kernel_config", "write_pipeline_model"]

# task -> the model of the default repository that serves it alone
DEFAULT_PARTS: dict[str, str] = {"quality": "vision_quality", "classify": "vision_classify",
                                 "detect": "vision_moderation", "ocr": "vision_ocr"}


def _dims(spec: TensorSpec) -> str:
    return ", ".join(str(d) for d in spec.shape[1:])


def kernel_config(name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], *,
                  max_batch_size: int, queue_delay_us: int = 2000) -> str:
    """config.pbtxt of a batched kernel program from its tensor specs (first dimension: the batch)."""

    def line(kind: str, spec: TensorSpec) -> str:
        dtype = "TYPE_STRING" if spec.datatype is DataType.BYTES else f"TYPE_{spec.datatype.value}"
        return f'{kind} {{ name: "{spec.name}" data_type: {dtype} dims: [ {_dims(spec)} ] }}\n'

    return (f'name: "{name}"\nbackend: "kernel"\nmax_batch_size: {max_batch_size}\n'
            + "".join(line("input", s) for s in inputs) + "".join(line("output", s) for s in outputs)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n"
            + 'parameters: { key: "infer.warmup" value: { string_value: "false" } }\n')


def write_pipeline_model(repo: Path, name: str = "vision", parts: Mapping[str, str] | None = None, *,
                         max_batch_size: int = 16) -> Path:
    """Write ``name`` from the repository's models named in ``parts`` (task -> model, default
    :data:`DEFAULT_PARTS`); parts whose model is not in the repository are left out (the detector needs the
    AGPL ``moderation`` extra, the classifier the ``vision`` extra). Version 1 of each part is copied."""
    from infer.runtimes.vision_pipeline import VisionPipeline

    parts = dict(DEFAULT_PARTS if parts is None else parts)
    present = {task: model for task, model in parts.items() if (repo / model / "1" / "kernel.json").is_file()}
    if not present:
        raise ValueError(f"none of {sorted(parts.values())} is in {repo}")
    staging = repo / f".{name}.writing"
    shutil.rmtree(staging, ignore_errors=True)
    version = staging / "1"
    try:
        for task, model in present.items():
            shutil.copytree(repo / model / "1", version / task)
        params = {"tasks": {task: task for task in present}}
        write_atomic(version / "kernel.json", json.dumps({"program": "vision", "params": params}).encode())
        pipeline = VisionPipeline(version, params)  # loads every part: a broken one fails here, not at serve time
        config = kernel_config(name, pipeline.inputs, pipeline.outputs, max_batch_size=max_batch_size)
        write_atomic(staging / "config.pbtxt", config.encode())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(repo / name, ignore_errors=True)
    staging.rename(repo / name)
    return repo / name
