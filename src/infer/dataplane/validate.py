"""Check a request's inputs against the model's metadata before anything is queued."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from infer.core.types import InferRequest, ParamValue, shape_matches
from infer.errors import InvalidArgument
from infer.registry.registry import LoadedVersion

__all__ = ["reserved_parameters", "validate_inputs", "validate_outputs"]


def validate_inputs(lv: LoadedVersion, request: InferRequest) -> dict[str, npt.NDArray[np.generic]]:
    """The request's inputs by name, each checked for name, datatype, shape and batch size."""
    specs = lv.input_specs
    model = f"model '{lv.name}'"
    out: dict[str, npt.NDArray[np.generic]] = {}
    batch: int | None = None
    mbs = lv.config.max_batch_size
    for t in request.inputs:
        spec = specs.get(t.name)
        if spec is None:
            raise InvalidArgument(f"input '{t.name}': {model} has no such input (expected {sorted(specs)})")
        if t.name in out:
            raise InvalidArgument(f"input '{t.name}': given more than once")
        if t.datatype is not spec.datatype:
            raise InvalidArgument(
                f"input '{t.name}': datatype {t.datatype.value} but {model} expects {spec.datatype.value}"
            )
        shape = t.data.shape
        if not shape_matches(shape, spec.shape):
            raise InvalidArgument(f"input '{t.name}': shape {list(shape)} but {model} expects {list(spec.shape)}")
        if mbs > 0:
            n = shape[0]
            if n < 1 or n > mbs:
                raise InvalidArgument(
                    f"input '{t.name}': batch size {n} outside 1..max_batch_size {mbs} of {model}"
                )
            if batch is not None and n != batch:
                raise InvalidArgument(f"input '{t.name}': batch size {n} differs from other inputs' {batch}")
            batch = n
        out[t.name] = t.data
    required = [] if len(out) == len(specs) else [
        n for n, c in zip(specs, lv.config.input, strict=True) if not c.optional and n not in out]
    if required:
        raise InvalidArgument(f"{model}: missing required input(s) {required}")
    return out


def validate_outputs(lv: LoadedVersion, requested: list[str]) -> None:
    known = {t.name for t in lv.outputs}
    seen: set[str] = set()
    for name in requested:
        if name not in known:
            raise InvalidArgument(f"output '{name}': model '{lv.name}' has no such output (has {sorted(known)})")
        if name in seen:
            raise InvalidArgument(f"output '{name}': requested more than once")
        seen.add(name)


def reserved_parameters(params: dict[str, ParamValue]) -> tuple[int, int]:
    """Triton's reserved request parameters: ``priority`` (level) and ``timeout`` (microseconds)."""
    priority = params.get("priority", 0)
    timeout = params.get("timeout", 0)
    for key, value in (("priority", priority), ("timeout", timeout)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"parameter '{key}': expected a non-negative integer, got {value!r}")
    assert isinstance(priority, int) and isinstance(timeout, int)
    return priority, timeout
