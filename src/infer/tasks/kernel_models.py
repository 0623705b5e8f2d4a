"""Writing kernel-program models: ``config.pbtxt`` from a program's tensor specs, and a family pipeline
(:class:`~infer.runtimes.task_pipeline.TaskPipeline`) put together from models already in a repository."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from infer.core.files import write_atomic
from infer.core.types import DataType, TensorSpec

__all__ = ["kernel_config", "staged_model", "write_task_pipeline"]


def kernel_config(name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], *,
                  max_batch_size: int, queue_delay_us: int = 2000) -> str:
    """config.pbtxt of a batched kernel program from its tensor specs (first dimension: the batch)."""

    def line(kind: str, spec: TensorSpec) -> str:
        dtype = "TYPE_STRING" if spec.datatype is DataType.BYTES else f"TYPE_{spec.datatype.value}"
        dims = ", ".join(str(d) for d in spec.shape[1:])
        return f'{kind} {{ name: "{spec.name}" data_type: {dtype} dims: [ {dims} ] }}\n'

    return (f'name: "{name}"\nbackend: "kernel"\nmax_batch_size: {max_batch_size}\n'
            + "".join(line("input", s) for s in inputs) + "".join(line("output", s) for s in outputs)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n"
            + 'parameters: { key: "infer.warmup" value: { string_value: "false" } }\n')


@contextlib.contextmanager
def staged_model(repo: Path, name: str) -> Iterator[Path]:
    """A model directory written beside its place (``repo/.{name}.writing``): renamed over ``repo/name`` when the
    block ends, removed when it raises, so a model that fails its load check leaves nothing behind."""
    staging = Path(repo) / f".{name}.writing"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(Path(repo) / name, ignore_errors=True)
    staging.rename(Path(repo) / name)


def write_task_pipeline(repo: Path, name: str, program: str, parts: Mapping[str, str], *,
                        max_batch_size: int = 16) -> Path:
    """Write ``name``, a ``program`` pipeline of the repository's models in ``parts`` (task -> model; version 1 of
    each copied in); parts whose model is not in the repository are left out. The pipeline is loaded before it
    is renamed into place, so a broken part fails here, never at serve time, and leaves nothing behind."""
    from infer.runtimes.kernel import PROGRAMS

    present = {task: model for task, model in parts.items() if (repo / model / "1" / "kernel.json").is_file()}
    if not present:
        raise ValueError(f"none of {sorted(parts.values())} is in {repo}")
    with staged_model(repo, name) as staging:
        version = staging / "1"
        for task, model in present.items():
            shutil.copytree(repo / model / "1", version / task)
        params = {"tasks": {task: task for task in present}}
        write_atomic(version / "kernel.json", json.dumps({"program": program, "params": params}).encode())
        pipeline = PROGRAMS[program]()(version, params)
        config = kernel_config(name, pipeline.inputs, pipeline.outputs, max_batch_size=max_batch_size)
        write_atomic(staging / "config.pbtxt", config.encode())
    return repo / name
