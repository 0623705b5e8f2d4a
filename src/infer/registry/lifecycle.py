"""Lifecycle of a model version: a state enum and the table of allowed transitions.

```
LOAD -> WARM -> ACTIVE <-> DEGRADED
  \\       \\        \\          \
   +-------+--------+----------+--> ERROR      (any live state can fail)
ACTIVE / DEGRADED / ERROR -> UNLOADING -> UNLOADED
```
A version takes traffic only in ACTIVE or DEGRADED.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from infer.errors import FailedPrecondition

__all__ = ["ModelState", "Transition", "VersionLifecycle"]


class ModelState(enum.Enum):
    LOAD = "LOAD"
    WARM = "WARM"
    ACTIVE = "ACTIVE"
    DEGRADED = "DEGRADED"
    ERROR = "ERROR"
    UNLOADING = "UNLOADING"
    UNLOADED = "UNLOADED"

    @property
    def serving(self) -> bool:
        return self in (ModelState.ACTIVE, ModelState.DEGRADED)

    @property
    def triton_state(self) -> str:
        """The state name Triton's RepositoryIndex uses."""
        return _TRITON[self]


_TRITON = {
    ModelState.LOAD: "LOADING",
    ModelState.WARM: "LOADING",
    ModelState.ACTIVE: "READY",
    ModelState.DEGRADED: "READY",
    ModelState.ERROR: "UNAVAILABLE",
    ModelState.UNLOADING: "UNLOADING",
    ModelState.UNLOADED: "UNAVAILABLE",
}

_ALLOWED: dict[ModelState, frozenset[ModelState]] = {
    ModelState.LOAD: frozenset({ModelState.WARM, ModelState.ERROR}),
    ModelState.WARM: frozenset({ModelState.ACTIVE, ModelState.ERROR}),
    ModelState.ACTIVE: frozenset({ModelState.DEGRADED, ModelState.ERROR, ModelState.UNLOADING}),
    ModelState.DEGRADED: frozenset({ModelState.ACTIVE, ModelState.ERROR, ModelState.UNLOADING}),
    ModelState.ERROR: frozenset({ModelState.UNLOADING}),
    ModelState.UNLOADING: frozenset({ModelState.UNLOADED}),
    ModelState.UNLOADED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Transition:
    at: float  # wall-clock seconds since the epoch
    source: ModelState
    target: ModelState
    reason: str


@dataclass(slots=True)
class VersionLifecycle:
    """The current state of one version and how it got there."""

    state: ModelState = ModelState.LOAD
    reason: str = ""
    history: list[Transition] = field(default_factory=list)

    def move(self, target: ModelState, reason: str = "") -> None:
        if target not in _ALLOWED[self.state]:
            raise FailedPrecondition(f"cannot move a model version from {self.state.value} to {target.value}")
        self.history.append(Transition(time.time(), self.state, target, reason))
        self.state = target
        self.reason = reason
