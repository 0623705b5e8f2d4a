"""The population model behind :mod:`infer.tasks.anomaly.events`: users and the normal traffic they produce.

A :class:`Population` of users (roles, home time zones, working hours, rates, usual namespaces and file
types) and the vectorised generation of its normal events (system load, daily and weekly seasonality,
batch jobs, re-uploads, shared templates).  Import the public names from ``events``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["FILE_TYPES", "NAMESPACES", "ROLES", "SENSITIVE_NAMESPACES", "Population", "make_population"]

NAMESPACES: Final[tuple[str, ...]] = (
    "finance", "hr", "legal", "marketing", "sales", "support", "shared", "design", "eng-build", "eng-src",
    "ops-logs", "data-lake", "backups", "research", "secrets", "payroll", "audit", "exec",
)
SENSITIVE_NAMESPACES: Final[tuple[str, ...]] = ("secrets", "payroll", "audit", "exec")
_DOC_NAMESPACES: Final = ("finance", "hr", "legal", "marketing", "sales", "support", "shared")

# (extension, median bytes, sigma of log size); the last eight are never uploaded in normal traffic
_TYPES: Final[tuple[tuple[str, float, float], ...]] = (
    ("pdf", 250e3, 1.0), ("docx", 60e3, 0.9), ("xlsx", 90e3, 1.1), ("pptx", 2.5e6, 0.9), ("txt", 6e3, 1.3),
    ("csv", 300e3, 1.6), ("png", 350e3, 1.0), ("jpg", 1.8e6, 0.7), ("psd", 45e6, 0.8), ("svg", 25e3, 1.0),
    ("mp4", 90e6, 1.1), ("mov", 250e6, 1.0), ("wav", 25e6, 0.9), ("py", 7e3, 1.0), ("js", 18e3, 1.2),
    ("go", 9e3, 1.0), ("json", 25e3, 1.6), ("yaml", 2.5e3, 0.9), ("log", 3e6, 1.5), ("gz", 40e6, 1.5),
    ("zip", 15e6, 1.4), ("parquet", 80e6, 1.2), ("", 4e6, 2.0),
    ("exe", 3e6, 1.0), ("dll", 8e5, 1.0), ("msi", 8e6, 1.0), ("scr", 5e5, 0.9), ("ps1", 6e3, 0.8),
    ("bat", 1.5e3, 0.8), ("vbs", 3e3, 0.8), ("jar", 2e6, 1.0),
)
FILE_TYPES: Final[tuple[str, ...]] = tuple(t[0] for t in _TYPES)

# role -> (share of users, usual namespaces, usual file types, P(granted a sensitive namespace), which ones)
_ROLE_SPEC: Final[dict[str, tuple[float, tuple[str, ...], tuple[str, ...], float, tuple[str, ...]]]] = {
    "office": (0.42, _DOC_NAMESPACES, ("pdf", "docx", "xlsx", "pptx", "txt", "csv", "png", "jpg"),
               0.15, ("payroll", "audit", "exec")),
    "engineer": (0.22, ("eng-build", "eng-src", "data-lake", "research", "shared", "ops-logs"),
                 ("py", "js", "go", "json", "yaml", "log", "gz", "zip", "txt", ""), 0.06, ("secrets",)),
    "designer": (0.08, ("design", "marketing", "shared"), ("png", "jpg", "psd", "svg", "mp4", "mov", "wav", "pdf"),
                 0.0, ()),
    "ops": (0.10, ("ops-logs", "backups", "eng-build", "data-lake"), ("log", "gz", "zip", "json", "yaml", "csv", ""),
            0.3, ("secrets",)),
    "analyst": (0.12, ("data-lake", "research", "finance", "shared", "sales"),
                ("csv", "parquet", "xlsx", "json", "pdf", "pptx"), 0.1, ("audit", "payroll")),
    "service": (0.06, ("ops-logs", "backups", "data-lake"), ("log", "gz", "parquet", "json", "csv"), 0.3, ("secrets",)),
}
ROLES: Final[tuple[str, ...]] = tuple(_ROLE_SPEC)
_SERVICE: Final = ROLES.index("service")
_BATCH_ROLES: Final = [ROLES.index(r) for r in ("engineer", "ops", "analyst")]  # some of them run batch jobs

_NS_ID: Final = {n: i for i, n in enumerate(NAMESPACES)}
_TYPE_ID: Final = {t: i for i, t in enumerate(FILE_TYPES)}
_NS_NAMES: Final = np.array(NAMESPACES, dtype=object)
_TYPE_NAMES: Final = np.array(FILE_TYPES, dtype=object)
_TYPE_MU: Final = np.log([t[1] for t in _TYPES])
_TYPE_SIGMA: Final = np.array([t[2] for t in _TYPES])
_N_NORMAL_TYPES: Final = FILE_TYPES.index("exe")
_EXEC_IDS: Final = np.arange(_N_NORMAL_TYPES, len(FILE_TYPES))
_SENSITIVE_IDS: Final = np.array([_NS_ID[n] for n in SENSITIVE_NAMESPACES])
_PLAIN_NS_IDS: Final = np.array([i for i, n in enumerate(NAMESPACES) if n not in SENSITIVE_NAMESPACES])
_DOC_NS_IDS: Final = np.array([_NS_ID[n] for n in _DOC_NAMESPACES])
_BIG_TEXT_IDS: Final = np.array([_TYPE_ID[t] for t in ("txt", "csv", "json", "yaml")])
_TINY_MEDIA_IDS: Final = np.array([_TYPE_ID[t] for t in ("mp4", "mov", "wav", "psd", "jpg")])
_TEMPLATE_TYPE_IDS: Final = np.array([_TYPE_ID[t] for t in ("pdf", "docx", "xlsx", "pptx")])
_TZ: Final = np.array([-8.0, -5.0, 0.0, 1.0, 5.5, 8.0, 9.0])
_TZ_P: Final = np.array([0.2, 0.3, 0.15, 0.15, 0.1, 0.05, 0.05])
_NS_SLOTS, _TYPE_SLOTS, _TEMPLATES = 5, 6, 4
_BIN_S, _WEEK_BINS, _MONDAY = 900.0, 672, 4 * 86400.0  # 15-minute bins; 1970-01-05 was a Monday
_MAX_SIZE = float(2**41)
_BATCH_SHARE = 0.08  # share of normal events that come from batch jobs
_HASH_BYTES_PER_MS, _UPLOAD_BYTES_PER_MS = 6.0e5, 5.0e4

Array = NDArray[Any]


@dataclass(frozen=True, eq=False)
class Population:
    """The users behind a stream; every array has one entry (row) per user."""

    names: NDArray[np.object_]
    role: NDArray[np.int64]  # index into ROLES
    tz_hours: NDArray[np.float64]  # local time = UTC + tz_hours
    work_start: NDArray[np.float64]  # local hour the working window opens
    work_len: NDArray[np.float64]  # hours
    off_floor: NDArray[np.float64]  # activity outside working hours, relative to working hours
    weekend: NDArray[np.float64]  # activity on Saturday and Sunday, relative to weekdays
    rate: NDArray[np.float64]  # events per hour at full activity
    net: NDArray[np.float64]  # latency multiplier of the user's network path
    size_shift: NDArray[np.float64]  # added to log(file size)
    ns_ids: NDArray[np.int64]  # [n_users, 5] usual namespaces (index into NAMESPACES), padded by repetition
    ns_cum: NDArray[np.float64]  # cumulative probabilities over those slots
    type_ids: NDArray[np.int64]  # [n_users, 6] usual file types (index into FILE_TYPES)
    type_cum: NDArray[np.float64]
    batch: NDArray[np.bool_]  # runs batch jobs
    batch_hour: NDArray[np.float64]  # local hour of a service account's nightly job
    template_hash: NDArray[np.object_]  # shared files, _TEMPLATES per namespace
    template_type: NDArray[np.int64]
    template_size: NDArray[np.int64]
    weekly: NDArray[np.float64]  # [n_users, 672] activity per 15 minutes of a UTC week from Monday 00:00
    hourly_rate: float = 0.0  # the population's mean events per hour
    peak_rate: float = 0.0  # the highest aggregate events per hour of the week (load 1)

    @property
    def n_users(self) -> int:
        return int(self.names.shape[0])

    @property
    def service(self) -> NDArray[np.bool_]:
        return np.asarray(self.role == _SERVICE)

    def local_time(self, users: Array, t: Array) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Local hour [0, 24) and day of week (Monday = 0) of each user at UTC time ``t`` (broadcasts)."""
        local = np.asarray(t, dtype=np.float64) + self.tz_hours[users] * 3600.0
        return (local / 3600.0) % 24.0, ((local // 86400.0).astype(np.int64) + 3) % 7

    def activity(self, users: Array, t: Array) -> NDArray[np.float64]:
        """Relative activity in [0, 1] of each user at UTC time ``t``: 1 at the height of working hours."""
        h, dow = self.local_time(users, t)
        s, length = self.work_start[users], self.work_len[users]
        window = sum(_sig((h + k - s) / 0.35) * _sig((s + length - h - k) / 0.5) for k in (-24.0, 0.0, 24.0))
        lunch = 1.0 - 0.3 * np.exp(-((h - s - length / 2.0) ** 2) / 0.5)
        tail = 0.12 * np.exp(-((h - s - length) % 24.0) / 1.5)  # evening stragglers
        day = np.minimum(1.0, window * lunch + tail + self.off_floor[users])
        return np.asarray(day * np.where(dow >= 5, self.weekend[users], 1.0), dtype=np.float64)

    def usual_namespaces(self, user: int) -> frozenset[str]:
        return frozenset(NAMESPACES[i] for i in self.ns_ids[user])

    def usual_types(self, user: int) -> frozenset[str]:
        return frozenset(FILE_TYPES[i] for i in self.type_ids[user])


def _sig(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


def _child(seed: int | np.random.SeedSequence, i: int) -> np.random.SeedSequence:
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, i))


def _pieces(text: str, stride: int, width: int, n: int) -> NDArray[np.object_]:
    """``n`` strings: the first ``width`` characters of each ``stride``-long piece of ``text``."""
    out = np.empty(n, dtype=object)
    out[:] = [text[i : i + width] for i in range(0, n * stride, stride)] if stride else [""] * n
    return out


def _hex(rng: np.random.Generator, n: int, n_chars: int = 64) -> NDArray[np.object_]:
    """``n`` random lowercase hex strings (a SHA-256 of random content by default)."""
    stride = 2 * ((n_chars + 1) // 2)
    return _pieces(rng.bytes(n * stride // 2).hex(), stride, n_chars, n)


def _strings(chars: NDArray[np.uint8]) -> NDArray[np.object_]:
    """One ASCII string per row of ``chars``."""
    n, width = chars.shape
    return _pieces(np.ascontiguousarray(chars).tobytes().decode("ascii"), width, width, n)


def make_population(n_users: int = 300, seed: int | np.random.SeedSequence = 0) -> Population:
    """Draw ``n_users`` users: roles, time zones, working hours, rates, usual namespaces and file types."""
    if n_users < 2:
        raise ValueError(f"n_users must be at least 2, got {n_users}")
    rng = np.random.default_rng(_child(seed, 0))
    n = n_users
    role = rng.choice(len(ROLES), n, p=[s[0] for s in _ROLE_SPEC.values()]).astype(np.int64)
    service = role == _SERVICE
    late = rng.random(n) < 0.05  # a late shift
    weekend = np.where(rng.random(n) < 0.75, rng.uniform(0.005, 0.03, n), rng.uniform(0.15, 0.5, n))  # 3/4: weekdays
    ns_ids, ns_cum = np.zeros((n, _NS_SLOTS), np.int64), np.ones((n, _NS_SLOTS))
    type_ids, type_cum = np.zeros((n, _TYPE_SLOTS), np.int64), np.ones((n, _TYPE_SLOTS))
    for u in range(n):
        _, nss, types, p_sensitive, sensitive = _ROLE_SPEC[ROLES[role[u]]]
        k = int(rng.integers(1, min(4, len(nss)) + 1))
        ids = [_NS_ID[x] for x in rng.choice(nss, k, replace=False)]
        w = np.sort(rng.dirichlet(np.ones(k)))[::-1]
        if sensitive and rng.random() < p_sensitive:
            ws = rng.uniform(0.03, 0.15)
            ids, w = [*ids, _NS_ID[str(rng.choice(sensitive))]], np.append(w * (1.0 - ws), ws)
        _fill_slots(ns_ids[u], ns_cum[u], ids, w)
        k = int(rng.integers(3, min(6, len(types)) + 1))
        w = np.sort(rng.dirichlet(np.full(k, 0.8)))[::-1]
        _fill_slots(type_ids[u], type_cum[u], [_TYPE_ID[x] for x in rng.choice(types, k, replace=False)], w)
    template_type = rng.choice(_TEMPLATE_TYPE_IDS, len(NAMESPACES) * _TEMPLATES)
    pop = Population(
        names=np.array([f"svc-{u:04d}" if service[u] else f"u{u:04d}" for u in range(n)], dtype=object),
        role=role,
        tz_hours=np.where(service, 0.0, rng.choice(_TZ, n, p=_TZ_P)),
        work_start=np.where(late, rng.uniform(13.0, 16.0, n), rng.uniform(7.0, 10.0, n)),
        work_len=rng.uniform(7.5, 10.0, n),
        off_floor=np.where(service, 1.0, rng.uniform(0.003, 0.02, n)),
        weekend=np.where(service, 1.0, weekend),
        rate=np.where(service, rng.lognormal(np.log(3.0), 0.5, n), rng.lognormal(np.log(4.0), 0.7, n)),
        net=rng.lognormal(0.0, 0.3, n),
        size_shift=rng.normal(0.0, 0.4, n),
        ns_ids=ns_ids, ns_cum=ns_cum, type_ids=type_ids, type_cum=type_cum,
        batch=service | (np.isin(role, _BATCH_ROLES) & (rng.random(n) < 0.3)),
        batch_hour=rng.uniform(1.0, 4.0, n),
        template_hash=_hex(rng, template_type.shape[0]),
        template_type=template_type,
        template_size=_sizes(rng, template_type, np.zeros(template_type.shape[0])),
        weekly=np.zeros((n, 0)),
    )
    t = _MONDAY + (np.arange(_WEEK_BINS) + 0.5) * _BIN_S
    weekly = pop.activity(np.arange(n)[:, None], t[None, :])
    aggregate = (pop.rate[:, None] * weekly).sum(axis=0)
    return replace(pop, weekly=weekly, hourly_rate=float(aggregate.mean()), peak_rate=float(aggregate.max()))


def _fill_slots(ids_row: Array, cum_row: Array, ids: list[int], w: Array) -> None:
    k = len(ids)
    ids_row[:k], ids_row[k:] = ids, ids[-1]
    cum_row[:k] = np.cumsum(w)
    cum_row[k - 1 :] = 1.0


def _sizes(rng: np.random.Generator, types: Array, shift: Array) -> NDArray[np.int64]:
    log = _TYPE_MU[types] + shift + _TYPE_SIGMA[types] * rng.normal(size=types.shape[0])
    return np.asarray(np.clip(np.exp(np.minimum(log, 40.0)), 1.0, _MAX_SIZE).round(), dtype=np.int64)


def _slot(rng: np.random.Generator, cum: Array, users: Array) -> NDArray[np.int64]:
    r = rng.random((int(users.shape[0]), 1))
    return np.asarray((r >= cum[users]).sum(axis=1), dtype=np.int64)


def _draw(pop: Population, rng: np.random.Generator, users: Array) -> tuple[Array, Array, Array]:
    """Namespaces, file types and sizes of events by ``users``, from their usual habits."""
    ns = pop.ns_ids[users, _slot(rng, pop.ns_cum, users)]
    types = pop.type_ids[users, _slot(rng, pop.type_cum, users)]
    return ns, types, _sizes(rng, types, pop.size_shift[users])


@dataclass(frozen=True)
class _Clock:
    start: float
    end: float
    load: NDArray[np.float64]  # system load per 15-minute bin, about 0..1.3

    def load_at(self, ts: Array) -> NDArray[np.float64]:
        b = np.clip(((ts - self.start) // _BIN_S).astype(np.int64), 0, self.load.shape[0] - 1)
        return np.asarray(self.load[b])

    def fit(self, ts: Array) -> NDArray[np.float64]:
        """Move (and if need be squeeze) an episode's sorted times into ``[start, end)``."""
        room = (self.end - self.start) * 0.98
        if ts[-1] - ts[0] > room:
            ts = ts[0] + (ts - ts[0]) * (room / (ts[-1] - ts[0]))
        ts = ts + min(0.0, self.end - 1e-3 - ts[-1])
        return np.asarray(ts + max(0.0, self.start - ts[0]), dtype=np.float64)


@dataclass(eq=False)
class _Cols:
    """Events under construction; user, namespace and file type as integer codes."""

    ts: NDArray[np.float64]
    user: NDArray[np.int64]
    ns: NDArray[np.int64]
    ftype: NDArray[np.int64]
    size: NDArray[np.int64]
    hash: NDArray[np.object_]
    conc: NDArray[np.int64]
    hash_ms: NDArray[np.float64]
    latency: NDArray[np.float64]


def _physics(pop: Population, rng: np.random.Generator, c: _Cols, load: Array, idx: Any = slice(None)) -> None:
    """(Re)compute hash time and API latency of events ``idx`` from their size, load and concurrency."""
    size, conc, users = c.size[idx].astype(np.float64), c.conc[idx], c.user[idx]
    n = size.shape[0]
    hash_ms = (0.03 + size / (_HASH_BYTES_PER_MS * rng.lognormal(0.0, 0.15, n))) * (1.0 + 0.4 * load)
    base = 18.0 * pop.net[users] * rng.lognormal(0.0, 0.3, n) * (1.0 + conc / 25.0)
    transfer = size * pop.net[users] / (_UPLOAD_BYTES_PER_MS * rng.lognormal(0.0, 0.35, n))
    tail = np.where(rng.random(n) < 0.004 + 0.025 * load, np.exp(rng.uniform(0.7, 2.3, n)), 1.0)  # GC, retries
    c.hash_ms[idx], c.latency[idx] = hash_ms, (base + transfer + hash_ms) * tail


def _events(pop: Population, rng: np.random.Generator, clock: _Clock, ts: Array, user: Array, ns: Array,
            ftype: Array, size: Array, hashes: Array, extra_conc: Array | int = 0) -> _Cols:
    load = clock.load_at(ts)
    conc = 1 + rng.poisson(1.0 + 24.0 * load) + extra_conc
    n = ts.shape[0]
    c = _Cols(np.asarray(ts, np.float64), np.asarray(user, np.int64), np.asarray(ns, np.int64),
              np.asarray(ftype, np.int64), np.asarray(size, np.int64), hashes, conc.astype(np.int64),
              np.zeros(n), np.zeros(n))
    _physics(pop, rng, c, load)
    return c


def _background(
    pop: Population, rng: np.random.Generator, n: int, start: float, span: float
) -> tuple[_Clock, Array, Array]:
    """The clock (system load) and ``n`` ordinary events' users and times, by each user's activity."""
    nb = max(1, int(np.ceil(span / _BIN_S)))
    t0 = start + np.arange(nb) * _BIN_S
    width = np.minimum(_BIN_S, start + span - t0)
    phase = ((t0 - _MONDAY) // _BIN_S).astype(np.int64) % _WEEK_BINS
    day = ((t0 - start) // 86400.0).astype(np.int64)
    day_mult = rng.lognormal(-0.06, 0.35, (pop.n_users, int(day[-1]) + 1))  # busy and quiet days
    day_mult[(rng.random(day_mult.shape) < 0.04) & ~pop.service[:, None]] *= 0.05  # days off
    w = pop.rate[:, None] * pop.weekly[:, phase] * day_mult[:, day] * (width / _BIN_S)
    clock = _Clock(start, start + span, w.sum(axis=0) / (pop.peak_rate * width / _BIN_S))
    totals = w.sum(axis=1)
    counts = rng.multinomial(n, totals / totals.sum())
    users, times = [], []
    for u in np.flatnonzero(counts):
        cum = np.cumsum(w[u])
        b = np.minimum(np.searchsorted(cum, rng.random(counts[u]) * cum[-1], side="right"), nb - 1)
        users.append(np.full(counts[u], u, np.int64))
        times.append(t0[b] + rng.random(counts[u]) * width[b])
    return clock, np.concatenate(users or [np.zeros(0, np.int64)]), np.concatenate(times or [np.zeros(0)])


def _batch_jobs(pop: Population, rng: np.random.Generator, clock: _Clock, n: int, bg_user: Array,
                bg_ts: Array) -> tuple[Array, Array, Array, Array, Array]:
    """``n`` events in bursts of batch jobs: nightly for service accounts, in working hours for people."""
    lengths = np.clip(np.round(rng.lognormal(np.log(50.0), 0.8, n // 8 + 2)), 8, 600).astype(np.int64)
    nbursts = int(np.searchsorted(np.cumsum(lengths), n)) + 1
    lengths = lengths[:nbursts]
    lengths[-1] -= lengths.sum() - n
    owners_pool = np.flatnonzero(pop.batch)
    p = np.where(pop.service[owners_pool], 3.0, 1.0)
    owner = rng.choice(owners_pool, nbursts, p=p / p.sum())
    gaps = rng.exponential(1.0, n) * np.repeat(rng.lognormal(np.log(1.5), 0.6, nbursts), lengths)
    first = np.cumsum(lengths) - lengths
    offs = np.cumsum(gaps)
    offs -= np.repeat(offs[first] - gaps[first], lengths)
    duration = offs[first + lengths - 1]
    # a random ordinary event of the owner, else a random time
    order = np.argsort(bg_user, kind="stable")
    cnt = np.bincount(bg_user, minlength=pop.n_users)
    lo = np.cumsum(cnt) - cnt
    pick = np.minimum(lo[owner] + (rng.random(nbursts) * cnt[owner]).astype(np.int64), max(order.shape[0] - 1, 0))
    t_start = rng.uniform(clock.start, clock.end, nbursts)
    t_start[cnt[owner] > 0] = bg_ts[order[pick[cnt[owner] > 0]]]
    day0 = np.floor(clock.start / 86400.0) * 86400.0
    days = rng.integers(0, int(np.ceil((clock.end - day0) / 86400.0)), nbursts)
    nightly = day0 + days * 86400.0 + (pop.batch_hour[owner] - pop.tz_hours[owner]) * 3600.0
    nightly += rng.uniform(0.0, 900.0, nbursts)
    ok = pop.service[owner] & (nightly >= clock.start) & (nightly + duration < clock.end)
    latest = np.maximum(clock.start, clock.end - duration - 1.0)
    t_start = np.minimum(np.maximum(np.where(ok, nightly, t_start), clock.start), latest)
    ts = np.minimum(np.repeat(t_start, lengths) + offs, clock.end - 1e-3)
    slot = (rng.random(nbursts) < 0.3).astype(np.int64)
    ns = np.repeat(pop.ns_ids[owner, 0], lengths)
    ftype = np.repeat(pop.type_ids[owner, slot], lengths)
    return np.repeat(owner, lengths), ts, ns, ftype, np.repeat(rng.poisson(4.0, nbursts) + 1, lengths)


def _normal(pop: Population, rng: np.random.Generator, n: int, start: float) -> tuple[_Clock, _Cols]:
    """The clock and ``n`` normal events sorted by time."""
    n_batch = round(_BATCH_SHARE * n) if n >= 100 and pop.batch.any() else 0
    span = max(n - n_batch, 1) / pop.hourly_rate * 3600.0
    clock, user, ts = _background(pop, rng, n - n_batch, start, span)
    ns, ftype, size = _draw(pop, rng, user)
    extra = np.zeros(user.shape[0], np.int64)
    if n_batch:
        b_user, b_ts, b_ns, b_type, b_extra = _batch_jobs(pop, rng, clock, n_batch, user, ts)
        b_size = _sizes(rng, b_type, pop.size_shift[b_user])
        user, ts, ns, ftype = (np.concatenate(p) for p in ((user, b_user), (ts, b_ts), (ns, b_ns), (ftype, b_type)))
        size, extra = np.concatenate((size, b_size)), np.concatenate((extra, b_extra))
    batch = np.arange(n) >= n - n_batch
    novel = rng.random(n) < 0.004  # the odd visit to another team's namespace
    ns[novel & ~batch] = rng.choice(_PLAIN_NS_IDS, int((novel & ~batch).sum()))
    novel = (rng.random(n) < 0.01) & ~batch  # the odd file of an unusual (never executable) type
    ftype[novel] = rng.integers(0, _N_NORMAL_TYPES, int(novel.sum()))
    size[novel] = _sizes(rng, ftype[novel], pop.size_shift[user[novel]])
    hashes = _hex(rng, n)
    tpl = np.flatnonzero((rng.random(n) < 0.004) & ~batch)  # a shared template, uploaded again
    j = ns[tpl] * _TEMPLATES + rng.integers(0, _TEMPLATES, tpl.shape[0])
    hashes[tpl], ftype[tpl], size[tpl] = pop.template_hash[j], pop.template_type[j], pop.template_size[j]
    order = np.argsort(ts, kind="stable")
    user, ts, ns, ftype, size, extra = (a[order] for a in (user, ts, ns, ftype, size, extra))
    hashes = hashes[order]
    # re-uploads: a user sends one of their own files again (same hash, size, type, namespace)
    by_user, lo, cnt = _group(user, pop.n_users)
    again = np.flatnonzero((rng.random(n) < 0.02) & (cnt[user] > 1))
    src = by_user[lo[user[again]] + (rng.random(again.shape[0]) * cnt[user[again]]).astype(np.int64)]
    ns[again], ftype[again], size[again], hashes[again] = ns[src], ftype[src], size[src], hashes[src]
    return clock, _events(pop, rng, clock, ts, user, ns, ftype, size, hashes, extra)


def _group(user: Array, n_users: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Event indices sorted by (user, time), and each user's first position and count in that order."""
    by_user = np.argsort(user, kind="stable").astype(np.int64)
    cnt = np.bincount(user, minlength=n_users).astype(np.int64)
    return by_user, np.cumsum(cnt) - cnt, cnt

