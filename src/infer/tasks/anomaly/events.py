"""Realistic synthetic streams of file-processing events, with labelled anomalies of six kinds.

Each event is the metadata stamp an operator streams into infer when a file is processed: who
(``user``), where (``namespace``), what (``file_type``, ``content_hash``, ``file_size``), how it went
(``hash_time_ms``, ``api_latency_ms``, ``concurrency``) and when (``timestamp``).  A :class:`Population`
of users (roles, home time zones, working hours, rates, usual namespaces and file types) produces the
normal traffic, with daily and weekly seasonality, busy and absent days, nightly and ad hoc batch jobs,
re-uploads and shared templates.  Anomalies are then injected as short *episodes*, each one recipe of
:data:`VARIANTS`; every event of an episode is labelled.  ``EVENTS.md`` beside this file documents the
population model and what each recipe looks like in the raw fields.

Everything is vectorised numpy driven by one ``numpy.random.Generator`` per stream (no global state):
the same seed gives the same stream.  The older 16-feature generator in ``data.py`` is separate.
The population model and normal traffic live in ``_population.py``, the recipes and their injection
in ``_recipes.py``; import everything from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from infer.tasks.anomaly._population import (
    _NS_NAMES,
    _TYPE_NAMES,
    FILE_TYPES,
    NAMESPACES,
    ROLES,
    SENSITIVE_NAMESPACES,
    Array,
    Population,
    _child,
    _group,
    _normal,
    make_population,
)
from infer.tasks.anomaly._recipes import DEFAULT_MIX, KINDS, VARIANTS, _budgets, _Ctx, _inject, _plan

__all__ = [
    "DEFAULT_MIX",
    "DEFAULT_START",
    "FIELDS",
    "FILE_TYPES",
    "KINDS",
    "NAMESPACES",
    "ROLES",
    "SENSITIVE_NAMESPACES",
    "VARIANTS",
    "EventStream",
    "Population",
    "Split",
    "generate",
    "generate_split",
    "make_population",
]

FIELDS: Final[tuple[str, ...]] = (
    "timestamp", "user", "namespace", "file_type", "content_hash",
    "file_size", "hash_time_ms", "api_latency_ms", "concurrency",
)
DEFAULT_START: Final[float] = 1704067200.0  # 2024-01-01T00:00:00Z, a Monday


@dataclass(frozen=True, eq=False)
class EventStream:
    """``n`` events sorted by time with their labels; ``events`` maps each of :data:`FIELDS` to an array.

    ``kind`` is 0 for normal events, else ``1 + KINDS.index(kind)``; ``variant`` is 0 or ``1 +
    VARIANTS.index(recipe)``; ``episode`` numbers the injected episodes (-1 for normal events).
    The stream covers ``[start, end)``; the next held-out stream starts at ``end``.
    """

    events: dict[str, Array]
    kind: NDArray[np.int8]
    variant: NDArray[np.int8]
    episode: NDArray[np.int32]
    start: float
    end: float
    population: Population

    @property
    def n(self) -> int:
        return int(self.kind.shape[0])

    def __len__(self) -> int:
        return self.n

    @property
    def is_anomaly(self) -> NDArray[np.bool_]:
        return np.asarray(self.kind > 0)

    def slice(self, a: int, b: int) -> EventStream:
        """Events ``a:b``; the slice covers the time from its first event to the next one."""
        a, b, _ = slice(a, b).indices(self.n)
        ts = self.events["timestamp"]
        start = self.start if a == 0 else float(ts[a])
        end = self.end if b >= self.n else float(ts[b])
        return self._select(slice(a, b), start, max(start, end))

    def normal_only(self) -> EventStream:
        """The normal events alone (for training an unsupervised detector)."""
        return self._select(np.flatnonzero(self.kind == 0), self.start, self.end)

    def to_columns(self) -> dict[str, Array]:
        """Copies of all fields plus the labels ``is_anomaly`` and ``kind``."""
        columns = {k: v.copy() for k, v in self.events.items()}
        return {**columns, "is_anomaly": self.is_anomaly, "kind": self.kind.copy()}

    def _select(self, sel: Any, start: float, end: float) -> EventStream:
        return replace(self, events={k: v[sel] for k, v in self.events.items()}, kind=self.kind[sel],
                       variant=self.variant[sel], episode=self.episode[sel], start=start, end=end)


@dataclass(frozen=True, eq=False)
class Split:
    """Consecutive, non-overlapping train, validation and test streams."""

    train: EventStream
    validation: EventStream
    test: EventStream


def generate(
    n_events: int,
    seed: int | np.random.SeedSequence = 0,
    *,
    population: Population | None = None,
    n_users: int = 300,
    anomaly_fraction: float = 0.025,
    mix: Mapping[str, float] | None = None,
    start: float = DEFAULT_START,
) -> EventStream:
    """A stream of ``n_events`` events from ``start`` with ``round(anomaly_fraction * n_events)`` anomalies.

    ``mix`` weighs the kinds (default :data:`DEFAULT_MIX`; missing kinds get none).  Without a
    ``population`` one of ``n_users`` users is drawn from the seed.  The stream's time span follows
    from the population's activity: about 85 days for 10**6 events by 300 users.
    """
    if n_events < 1:
        raise ValueError(f"n_events must be positive, got {n_events}")
    if not 0.0 <= anomaly_fraction <= 0.5:
        raise ValueError(f"anomaly_fraction must be in [0, 0.5], got {anomaly_fraction}")
    pop = make_population(n_users, _child(seed, 0)) if population is None else population
    rng = np.random.default_rng(_child(seed, 1))
    plan = _plan(rng, _budgets(n_events, anomaly_fraction, mix))
    n_normal = n_events - sum(m for *_, m, inserted in plan if inserted)
    clock, cols = _normal(pop, rng, n_normal, float(start))
    by_user, lo, cnt = _group(cols.user, pop.n_users)
    pos = np.empty_like(by_user)
    pos[by_user] = np.arange(by_user.shape[0])
    ctx = _Ctx(pop, rng, clock, cols, np.zeros(n_normal, np.int8), np.zeros(n_normal, np.int8),
               np.full(n_normal, -1, np.int32), by_user, pos, lo, cnt, [])
    _inject(ctx, plan)
    return _assemble(ctx)


def _assemble(ctx: _Ctx) -> EventStream:
    parts = [ctx.cols, *(c for c, *_ in ctx.inserted)]
    sizes = [p.ts.shape[0] for p in parts]

    def cat(name: str) -> Array:
        return np.concatenate([getattr(p, name) for p in parts])

    labels = np.array([(k, v, e) for _, k, v, e in ctx.inserted], dtype=np.int64).reshape(-1, 3)
    extra = np.repeat(labels, sizes[1:], axis=0)
    kind = np.concatenate([ctx.kind, extra[:, 0].astype(np.int8)])
    variant = np.concatenate([ctx.variant, extra[:, 1].astype(np.int8)])
    episode = np.concatenate([ctx.episode, extra[:, 2].astype(np.int32)])
    order = np.argsort(cat("ts"), kind="stable")
    events: dict[str, Array] = {
        "timestamp": cat("ts")[order],
        "user": ctx.pop.names[cat("user")[order]],
        "namespace": _NS_NAMES[cat("ns")[order]],
        "file_type": _TYPE_NAMES[cat("ftype")[order]],
        "content_hash": cat("hash")[order],
        "file_size": cat("size")[order].astype(np.int64),
        "hash_time_ms": cat("hash_ms")[order].astype(np.float32),
        "api_latency_ms": cat("latency")[order].astype(np.float32),
        "concurrency": np.minimum(cat("conc")[order], np.iinfo(np.int32).max).astype(np.int32),
    }
    return EventStream(events, kind[order], variant[order], episode[order], ctx.clock.start, ctx.clock.end, ctx.pop)


def generate_split(
    n_train: int,
    n_validation: int,
    n_test: int,
    seed: int = 0,
    *,
    n_users: int = 300,
    anomaly_fraction: float = 0.025,
    mix: Mapping[str, float] | None = None,
    start: float = DEFAULT_START,
    normal_train: bool = True,
    same_population: bool = True,
) -> Split:
    """Train, validation and test streams, one after the other in time, each from its own seed.

    ``normal_train`` makes the training stream anomaly-free (for unsupervised training).  With
    ``same_population`` (default) all three come from the same users; otherwise validation and test
    come from a second population (different habits: a drifted deployment).
    """
    pop = make_population(n_users, _child(seed, 0))
    held_out = pop if same_population else make_population(n_users, _child(seed, 1))
    train = generate(n_train, _child(seed, 2), population=pop, mix=mix, start=start,
                     anomaly_fraction=0.0 if normal_train else anomaly_fraction)
    validation = generate(n_validation, _child(seed, 3), population=held_out, mix=mix, start=train.end,
                          anomaly_fraction=anomaly_fraction)
    test = generate(n_test, _child(seed, 4), population=held_out, mix=mix, start=validation.end,
                    anomaly_fraction=anomaly_fraction)
    return Split(train, validation, test)
