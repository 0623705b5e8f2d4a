"""The deployments in force, looked up per request; changed through the control plane."""

from __future__ import annotations

import random
from collections.abc import Iterable

from infer.core.types import InferRequest
from infer.routing.policies import Deployment, Target, plan

__all__ = ["Router"]


class Router:
    def __init__(self, deployments: Iterable[Deployment] = (), seed: int | None = None) -> None:
        self._deployments = {d.name: d for d in deployments}
        self._rng = random.Random(seed)

    def __contains__(self, name: str) -> bool:
        return name in self._deployments

    def get(self, name: str) -> Deployment | None:
        return self._deployments.get(name)

    def all(self) -> list[Deployment]:
        return [self._deployments[n] for n in sorted(self._deployments)]

    def put(self, dep: Deployment) -> None:
        self._deployments[dep.name] = dep

    def remove(self, name: str) -> bool:
        return self._deployments.pop(name, None) is not None

    def route(self, request: InferRequest) -> tuple[Deployment, list[Target]] | None:
        """The deployment and the targets to try, or None when the name is a plain model."""
        dep = self._deployments.get(request.model_name)
        if dep is None or request.model_version:
            return None
        raw = request.parameters.get(dep.sticky_key) if dep.sticky_key else None
        return dep, plan(dep, None if raw is None else str(raw), self._rng)
