"""Builders of the control plane's messages: registry versions and the four traffic policies (A/B split, canary,
shadow, fallback chain). Each returns the ``infer.control.v1`` message, so anything the builders do not cover can
still be set on it before it is sent."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike

from infer._proto import control_pb2 as cpb
from infer.client._codec import datatype_of

__all__ = ["TargetLike", "ab_test", "canary", "default_answer", "fallback_chain", "model_version", "shadow", "target"]

TargetLike: TypeAlias = "str | tuple[str, str] | cpb.Target"


def target(spec: TargetLike) -> cpb.Target:
    """``"anomaly"`` (its newest ready version), ``"anomaly:2"`` or ``("anomaly", "2")`` as a Target."""
    if isinstance(spec, cpb.Target):
        return spec
    if isinstance(spec, tuple):
        return cpb.Target(model=spec[0], version=str(spec[1]))
    model, _, version = spec.partition(":")
    return cpb.Target(model=model, version=version)


def _targets(specs: Iterable[TargetLike]) -> list[cpb.Target]:
    return [target(s) for s in specs]


def ab_test(name: str, weights: Mapping[str, float] | Sequence[tuple[TargetLike, float]], *, sticky_key: str = "",
            promote_when_p_below: float = 0.0, promote_min_samples: int = 0,
            fallback: Sequence[TargetLike] = ()) -> cpb.Deployment:
    """An A/B split: ``{"anomaly:1": 90, "anomaly:2": 10}``; ``sticky_key`` pins a caller (by that request
    parameter) to one variant; with ``promote_when_p_below`` the winner takes all traffic once significant."""
    pairs = weights.items() if isinstance(weights, Mapping) else weights
    return cpb.Deployment(name=name, sticky_key=sticky_key, promote_when_p_below=promote_when_p_below,
                          promote_min_samples=promote_min_samples, fallback=_targets(fallback),
                          variants=[cpb.Variant(target=target(t), weight=float(w)) for t, w in pairs])


def canary(name: str, baseline: TargetLike, candidate: TargetLike, *,
           stages: Sequence[tuple[float, float]] = ((5, 300), (10, 300), (25, 300), (50, 300), (100, 300)),
           max_error_rate: float = 0.01, max_p99_ms: float = 0.0, min_requests: int = 20,
           fallback: Sequence[TargetLike] | None = None) -> cpb.Deployment:
    """A staged rollout: ``stages`` of ``(percent, duration_s)``; rolled back at once past ``max_error_rate`` or
    ``max_p99_ms``. ``fallback`` defaults to the baseline, so canary failures are answered while it is judged."""
    return cpb.Deployment(
        name=name, fallback=_targets([baseline] if fallback is None else fallback),
        canary=cpb.Canary(baseline=target(baseline), canary=target(candidate),
                          stages=[cpb.CanaryStage(percent=p, duration_s=d) for p, d in stages],
                          max_error_rate=max_error_rate, max_p99_ms=max_p99_ms, min_requests=min_requests))


def shadow(name: str, live: TargetLike, copy_to: TargetLike, *, tolerance: float = 0.0,
           fallback: Sequence[TargetLike] = ()) -> cpb.Deployment:
    """Blue-green: ``live`` answers; ``copy_to`` gets a copy of every request, compared within ``tolerance`` and
    never returned (``shadow_stats`` in ``get_deployment``)."""
    return cpb.Deployment(name=name, variants=[cpb.Variant(target=target(live), weight=1.0)],
                          shadow=target(copy_to), shadow_tolerance=tolerance, fallback=_targets(fallback))


def default_answer(outputs: Mapping[str, ArrayLike], *, unbatched: bool = False) -> cpb.DefaultAnswer:
    """A fallback chain's last link: one request row's outputs (repeated along the batch unless ``unbatched``)."""
    answer = cpb.DefaultAnswer(unbatched=unbatched)
    for name, value in outputs.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "OUS":
            strings = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
            answer.outputs.add(name=name, datatype="BYTES", shape=list(arr.shape), strings=strings)
        else:
            answer.outputs.add(name=name, datatype=datatype_of(name, arr), shape=list(arr.shape),
                               numbers=[float(v) for v in arr.reshape(-1)])
    return answer


def fallback_chain(name: str, primary: TargetLike, *fallback: TargetLike, link_timeout_us: int = 0,
                   default: cpb.DefaultAnswer | Mapping[str, ArrayLike] | None = None) -> cpb.Deployment:
    """``primary``, then each of ``fallback`` in order when a link fails, times out, is unloaded or DEGRADED (each
    link but the last within ``link_timeout_us``), then the ``default`` answer."""
    dep = cpb.Deployment(name=name, variants=[cpb.Variant(target=target(primary), weight=1.0)],
                         fallback=_targets(fallback), link_timeout_us=link_timeout_us)
    if default is not None:
        dep.default_answer.CopyFrom(default if isinstance(default, cpb.DefaultAnswer) else default_answer(default))
    return dep


def model_version(model_id: str, version: str, *, model_type: str = "", framework: str = "",
                  metrics: Mapping[str, float] | None = None, hyperparameters: Mapping[str, Any] | None = None,
                  parent_version: str = "", training_run: str = "", training_data_id: str = "",
                  training_data_size: int = -1, trained_at: float = 0.0) -> cpb.ModelVersion:
    """A registry version's metadata (hyperparameter values any JSON-able value) for ``register_version``."""
    return cpb.ModelVersion(
        model_id=model_id, version=version, model_type=model_type, framework=framework,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        hyperparameters={k: json.dumps(v) for k, v in (hyperparameters or {}).items()},
        parent_version=parent_version, training_run=training_run, training_data_id=training_data_id,
        training_data_size=training_data_size, trained_at=trained_at)
