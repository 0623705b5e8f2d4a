"""Seeded synthetic operational events and labelled anomalies, as 16 float32 features.

An *event* is one upload handled by an API: a file of some type and size is hashed and stored, while
the service runs under a time-of-day dependent load.  Normal events are drawn from a small generative
model whose latent *drivers* (time, load, file type, size, noise terms, per-user request rates...) are
stored in :class:`Events`; :func:`featurize` derives the observable quantities from the drivers, so the
features keep their physical relations (hash time and transfer time grow with size, latency grows with
concurrency, throughput is size over time, a namespace's entropy falls when one user dominates it).

Anomalies (:func:`inject_anomalies`) edit the drivers of a random subset of events and are then
featurised by the same code, so e.g. a latency spike also lowers throughput.  Some kinds are blatant
(latency spikes, error storms, bursts of one user), others only break a correlation (a slow hash for
the file's size, an incompressible payload in a text format) and are hard for an unsupervised model.

Everything is vectorised numpy; all randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ANOMALY_KINDS",
    "FEATURE_NAMES",
    "FILE_TYPES",
    "Dataset",
    "Events",
    "featurize",
    "generate_events",
    "inject_anomalies",
    "make_dataset",
    "make_normal",
]

FEATURE_NAMES: Final[tuple[str, ...]] = (
    "log_file_size",  # log1p(bytes)
    "file_type",  # integer code into FILE_TYPES, as float
    "hour_sin",
    "hour_cos",
    "dow_sin",  # day of week, Monday = 0
    "dow_cos",
    "log_hash_ms",  # log1p(milliseconds spent hashing the file)
    "log_api_latency_ms",  # log(milliseconds of end-to-end API latency)
    "concurrency",  # requests in flight on the serving node
    "log_bytes_per_s",  # log(size / (latency + hash time))
    "log_user_rate",  # log1p(requests per minute from this user)
    "log_namespace_rate",  # log1p(requests per minute in this user's namespace)
    "namespace_entropy",  # bits; entropy of the per-user request shares in the namespace
    "error_rate",  # fraction of this user's recent requests that failed
    "retry_count",  # client retries of this request
    "payload_ratio",  # compressed size / raw size
)

FILE_TYPES: Final[tuple[str, ...]] = ("json", "csv", "log", "parquet", "image", "video", "archive", "binary")
_TYPE_P = np.array([0.22, 0.15, 0.20, 0.10, 0.12, 0.04, 0.07, 0.10])
_TYPE_LOG_SIZE = np.array([9.0, 12.0, 11.0, 15.0, 13.0, 17.5, 16.0, 14.0])  # mean log(bytes)
_TYPE_RATIO = np.array([0.15, 0.25, 0.10, 0.90, 0.97, 0.99, 0.98, 0.60])  # mean compressed/raw
_TEXT_TYPES = np.array([0, 1, 2])
_DOW_P = np.array([0.17, 0.17, 0.17, 0.17, 0.16, 0.08, 0.08])

ANOMALY_KINDS: Final[tuple[str, ...]] = (
    "latency_spike",  # backend stall: latency x7..x55, some errors and retries
    "huge_file_odd_hour",  # 20..150x larger than usual for its type, uploaded at 1-5 am
    "user_burst",  # one user sends 20..150x their usual rate and dominates the namespace
    "error_storm",  # 20-80% errors, many retries, somewhat slower
    "payload_mismatch",  # text-typed file that does not compress (encrypted / disguised content)
    "slow_hash",  # hashing 7..33x slower than the file size explains (degraded disk)
)


@dataclass(frozen=True)
class Events:
    """Latent drivers of ``n`` events, one array of length ``n`` per field."""

    dow: NDArray[np.int64]
    hour: NDArray[np.float64]  # [0, 24)
    load: NDArray[np.float64]  # service load, about 0..1.2
    file_type: NDArray[np.int64]
    log_size: NDArray[np.float64]  # log(bytes)
    hash_noise: NDArray[np.float64]
    latency_noise: NDArray[np.float64]
    transfer_noise: NDArray[np.float64]
    concurrency: NDArray[np.float64]
    user_rate: NDArray[np.float64]  # requests / minute from this user
    ns_users: NDArray[np.float64]  # active users in the namespace, >= 1
    others_rate: NDArray[np.float64]  # mean rate of the other users in the namespace
    entropy_eff: NDArray[np.float64]  # evenness of the other users' shares, (0, 1]
    error_rate: NDArray[np.float64]
    retries: NDArray[np.float64]
    payload_ratio: NDArray[np.float64]
    latency_factor: NDArray[np.float64]  # 1 for normal events
    hash_factor: NDArray[np.float64]  # 1 for normal events

    def __len__(self) -> int:
        return int(self.dow.shape[0])

    def copy(self) -> Events:
        return replace(self, **{f.name: getattr(self, f.name).copy() for f in fields(self)})


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (float32, [n, 16]), labels ``y`` (1 = anomaly) and ``kind`` (0 = normal, else
    1 + index into :data:`ANOMALY_KINDS`)."""

    x: NDArray[np.float32]
    y: NDArray[np.int64]
    kind: NDArray[np.int64]


def _beta_around(rng: np.random.Generator, mean: NDArray[np.float64], concentration: float) -> NDArray[np.float64]:
    mean = np.clip(mean, 1e-3, 1.0 - 1e-3)
    return rng.beta(mean * concentration, (1.0 - mean) * concentration)


def generate_events(n: int, rng: np.random.Generator) -> Events:
    """Draw ``n`` normal events."""
    dow = rng.choice(7, size=n, p=_DOW_P).astype(np.int64)
    weekend = dow >= 5
    business = rng.random(n) < np.where(weekend, 0.5, 0.85)
    hour = np.where(business, rng.normal(13.5, 2.8, n), rng.uniform(0.0, 24.0, n)) % 24.0
    diurnal = 0.5 * (1.0 + np.cos(2.0 * np.pi * (hour - 14.0) / 24.0))
    load = np.clip(diurnal * np.where(weekend, 0.5, 1.0) + rng.normal(0.0, 0.08, n), 0.02, 1.2)
    file_type = rng.choice(len(FILE_TYPES), size=n, p=_TYPE_P).astype(np.int64)
    log_size = _TYPE_LOG_SIZE[file_type] + rng.normal(0.0, 1.0, n) + 0.3 * (load - 0.5)
    concurrency = 1.0 + rng.poisson(1.0 + 40.0 * load).astype(np.float64)
    user_rate = np.exp(rng.normal(np.log(3.0), 0.6, n)) * (0.5 + load)
    ns_users = 1.0 + rng.poisson(3.0 + 20.0 * load).astype(np.float64)
    others_rate = np.exp(rng.normal(np.log(3.0), 0.3, n)) * (0.5 + load)
    error_rate = _beta_around(rng, 0.004 + 0.02 * load + 0.0005 * concurrency, 120.0)
    return Events(
        dow=dow,
        hour=hour,
        load=load,
        file_type=file_type,
        log_size=log_size,
        hash_noise=rng.normal(0.0, 0.15, n),
        latency_noise=rng.normal(0.0, 0.25, n),
        transfer_noise=rng.normal(0.0, 0.2, n),
        concurrency=concurrency,
        user_rate=user_rate,
        ns_users=ns_users,
        others_rate=others_rate,
        entropy_eff=rng.uniform(0.75, 0.97, n),
        error_rate=error_rate,
        retries=rng.poisson(0.02 + 4.0 * error_rate).astype(np.float64),
        payload_ratio=_beta_around(rng, _TYPE_RATIO[file_type], 60.0),
        latency_factor=np.ones(n),
        hash_factor=np.ones(n),
    )


def featurize(ev: Events) -> NDArray[np.float32]:
    """Observable features of ``ev``, float32 [n, 16] in :data:`FEATURE_NAMES` order."""
    size = np.exp(ev.log_size)
    hash_ms = 0.05 + size / (4.0e5 * np.exp(ev.hash_noise)) * (1.0 + 0.5 * ev.load) * ev.hash_factor
    base_ms = 20.0 * np.exp(ev.latency_noise) * (1.0 + ev.concurrency / 30.0)
    transfer_ms = size / 5.0e4 * np.exp(ev.transfer_noise)
    latency_ms = (base_ms + transfer_ms) * ev.latency_factor
    ns_rate = ev.user_rate + (ev.ns_users - 1.0) * ev.others_rate
    share = ev.user_rate / ns_rate
    others = 1.0 - share
    h_share = -share * np.log2(share) - others * np.log2(np.where(others > 0.0, others, 1.0))
    entropy = h_share + others * ev.entropy_eff * np.log2(np.maximum(ev.ns_users - 1.0, 1.0))
    hour_angle = 2.0 * np.pi * ev.hour / 24.0
    dow_angle = 2.0 * np.pi * ev.dow / 7.0
    columns = (
        np.log1p(size),
        ev.file_type.astype(np.float64),
        np.sin(hour_angle),
        np.cos(hour_angle),
        np.sin(dow_angle),
        np.cos(dow_angle),
        np.log1p(hash_ms),
        np.log(latency_ms),
        ev.concurrency,
        np.log(size / ((latency_ms + hash_ms) / 1.0e3)),
        np.log1p(ev.user_rate),
        np.log1p(ns_rate),
        entropy,
        ev.error_rate,
        ev.retries,
        ev.payload_ratio,
    )
    return np.stack(columns, axis=1).astype(np.float32)


def _apply_kind(ev: Events, kind: str, idx: NDArray[np.intp], rng: np.random.Generator) -> None:
    """Edit the drivers of events ``idx`` in place so that they become anomalies of ``kind``."""
    m = idx.shape[0]
    if kind == "latency_spike":
        ev.latency_factor[idx] *= np.exp(rng.uniform(2.0, 4.0, m))
        ev.error_rate[idx] = np.minimum(ev.error_rate[idx] + rng.uniform(0.02, 0.2, m), 1.0)
        ev.retries[idx] += rng.poisson(2.0, m)
    elif kind == "huge_file_odd_hour":
        ev.hour[idx] = rng.uniform(1.0, 5.0, m)
        ev.load[idx] = rng.uniform(0.02, 0.1, m)
        ev.concurrency[idx] = 1.0 + rng.poisson(1.0 + 40.0 * ev.load[idx])
        ev.log_size[idx] += rng.uniform(3.0, 5.0, m)
    elif kind == "user_burst":
        ev.user_rate[idx] *= np.exp(rng.uniform(3.0, 5.0, m))
        ev.retries[idx] += rng.poisson(0.5, m)
    elif kind == "error_storm":
        ev.error_rate[idx] = rng.uniform(0.2, 0.8, m)
        ev.retries[idx] = rng.poisson(3.0 + 10.0 * ev.error_rate[idx]).astype(np.float64)
        ev.latency_factor[idx] *= np.exp(rng.uniform(0.3, 1.0, m))
    elif kind == "payload_mismatch":
        ev.file_type[idx] = rng.choice(_TEXT_TYPES, size=m)
        ev.log_size[idx] = _TYPE_LOG_SIZE[ev.file_type[idx]] + rng.normal(1.5, 1.0, m)
        ev.payload_ratio[idx] = rng.uniform(0.95, 1.0, m)
    elif kind == "slow_hash":
        ev.hash_factor[idx] *= np.exp(rng.uniform(2.0, 3.5, m))
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {ANOMALY_KINDS}")


def inject_anomalies(
    ev: Events,
    rng: np.random.Generator,
    *,
    fraction: float = 0.05,
    kinds: tuple[str, ...] = ANOMALY_KINDS,
) -> tuple[Events, NDArray[np.int64]]:
    """Turn ``round(fraction * n)`` random events into anomalies, kinds assigned uniformly at random.

    Returns a modified copy of ``ev`` and ``kind`` codes (0 = normal, ``1 + ANOMALY_KINDS.index(k)``).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    out = ev.copy()
    n = len(ev)
    chosen = rng.choice(n, size=round(fraction * n), replace=False)
    assigned = rng.integers(0, len(kinds), size=chosen.shape[0])
    kind_codes = np.zeros(n, dtype=np.int64)
    for i, kind in enumerate(kinds):
        idx = np.sort(chosen[assigned == i])
        _apply_kind(out, kind, idx, rng)
        kind_codes[idx] = 1 + ANOMALY_KINDS.index(kind)
    return out, kind_codes


def make_normal(n: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """Features of ``n`` normal events."""
    return featurize(generate_events(n, rng))


def make_dataset(n: int, rng: np.random.Generator, *, anomaly_fraction: float = 0.05) -> Dataset:
    """``n`` events of which ``anomaly_fraction`` are labelled anomalies of every kind."""
    events, kind = inject_anomalies(generate_events(n, rng), rng, fraction=anomaly_fraction)
    return Dataset(x=featurize(events), y=(kind > 0).astype(np.int64), kind=kind)
