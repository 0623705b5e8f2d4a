"""Anomaly recipes of :mod:`infer.tasks.anomaly.events`: the kinds, their variants and their injection.

Each recipe edits a few normal events in place or inserts an episode of new ones; ``EVENTS.md`` describes
what each looks like in the raw fields.  Import the public names from ``events``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np
from numpy.typing import NDArray

from infer.tasks.anomaly._population import (
    _BIG_TEXT_IDS,
    _DOC_NS_IDS,
    _EXEC_IDS,
    _MAX_SIZE,
    _N_NORMAL_TYPES,
    _PLAIN_NS_IDS,
    _SENSITIVE_IDS,
    _TINY_MEDIA_IDS,
    Array,
    Population,
    _Clock,
    _Cols,
    _draw,
    _events,
    _hex,
    _physics,
    _sizes,
    _strings,
)

__all__ = ["DEFAULT_MIX", "KINDS", "VARIANTS"]

KINDS: Final[tuple[str, ...]] = ("statistical", "behavioural", "temporal", "performance", "content", "security")
DEFAULT_MIX: Final[Mapping[str, float]] = MappingProxyType(
    {"statistical": 0.18, "behavioural": 0.22, "temporal": 0.15, "performance": 0.20, "content": 0.12, "security": 0.13}
)

# kind -> ((variant, share of the kind's events, (min, max) events per episode, inserted as new events?), ...)
_RECIPES: Final[dict[str, tuple[tuple[str, float, tuple[int, int], bool], ...]]] = {
    "statistical": (("size", 0.6, (1, 3), False), ("latency", 0.4, (1, 2), False)),
    "behavioural": (("burst", 0.6, (30, 300), True), ("sweep", 0.4, (8, 40), True)),
    "temporal": (("night", 0.6, (3, 25), True), ("weekend", 0.4, (3, 25), True)),
    "performance": (("degradation", 0.45, (20, 150), False), ("slow_hash", 0.3, (5, 40), False),
                    ("surge", 0.25, (10, 80), False)),
    "content": (("foreign_type", 0.4, (1, 3), False), ("executable", 0.35, (1, 4), False),
                ("size_mismatch", 0.25, (1, 2), False)),
    "security": (("malformed_hash", 0.35, (1, 5), False), ("sensitive_access", 0.35, (3, 15), True),
                 ("hash_reuse", 0.3, (8, 40), True)),
}
VARIANTS: Final[tuple[str, ...]] = tuple(f"{k}.{r[0]}" for k in KINDS for r in _RECIPES[k])  # variant code - 1
_HEX: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HASH_STYLES: Final = ("zeros", "repeat", "low_entropy", "md5", "sha1", "truncated", "non_hex", "empty")


@dataclass(eq=False)
class _Ctx:
    """Anomaly injection state: normal events (edited in place) and the inserted episodes."""

    pop: Population
    rng: np.random.Generator
    clock: _Clock
    cols: _Cols
    kind: NDArray[np.int8]
    variant: NDArray[np.int8]
    episode: NDArray[np.int32]
    by_user: NDArray[np.int64]
    pos: NDArray[np.int64]
    lo: NDArray[np.int64]
    cnt: NDArray[np.int64]
    inserted: list[tuple[_Cols, int, int, int]]
    n_episodes: int = 0

    def label(self, idx: Array, code: tuple[int, int]) -> int:
        """Label normal events ``idx`` (edited by the caller) as one episode."""
        if idx.shape[0]:
            self.kind[idx], self.variant[idx], self.episode[idx] = code[0], code[1], self.n_episodes
            self.n_episodes += 1
        return int(idx.shape[0])

    def add(self, code: tuple[int, int], user: Array, ts: Array, ns: Array | None = None, ftype: Array | None = None,
            size: Array | None = None, hashes: Array | None = None, extra_conc: Array | int = 0) -> int:
        """Insert an episode of events by ``user`` at ``ts``; fields not given follow the users' habits."""
        d_ns, d_type, d_size = _draw(self.pop, self.rng, user)
        if ftype is not None and size is None:
            size = _sizes(self.rng, ftype, self.pop.size_shift[user])
        c = _events(self.pop, self.rng, self.clock, self.clock.fit(ts), user, d_ns if ns is None else ns,
                    d_type if ftype is None else ftype, d_size if size is None else size,
                    _hex(self.rng, user.shape[0]) if hashes is None else hashes, extra_conc)
        self.inserted.append((c, code[0], code[1], self.n_episodes))
        self.n_episodes += 1
        return int(c.ts.shape[0])

    def free_anchor(self) -> int | None:
        for _ in range(30 if self.kind.shape[0] else 0):
            i = int(self.rng.integers(self.kind.shape[0]))
            if self.kind[i] == 0:
                return i
        return None

    def run(self, m: int) -> NDArray[np.int64]:
        """Up to ``m`` consecutive free events of one user, from a random anchor."""
        if (i := self.free_anchor()) is None:
            return np.zeros(0, np.int64)
        u = self.cols.user[i]
        cand = self.by_user[self.pos[i] : min(self.pos[i] + 3 * m, self.lo[u] + self.cnt[u])]
        return np.asarray(cand[self.kind[cand] == 0][:m], dtype=np.int64)

    def window(self, m: int) -> NDArray[np.int64]:
        """Up to ``m`` consecutive events of anyone, from a random anchor up to the next labelled one."""
        if (i := self.free_anchor()) is None:
            return np.zeros(0, np.int64)
        cand = np.arange(i, min(i + m, self.kind.shape[0]))
        taken = np.flatnonzero(self.kind[cand] != 0)
        return cand[: taken[0]] if taken.shape[0] else cand

    def user_time(self, u: int) -> float:
        """The time of a random normal event of user ``u`` (so, a time the user is active)."""
        if self.cnt[u] == 0:
            return float(self.rng.uniform(self.clock.start, self.clock.end))
        return float(self.cols.ts[self.by_user[self.lo[u] + self.rng.integers(self.cnt[u])]])

    def pick_user(self, ok: Array) -> int:
        users = np.flatnonzero(ok)
        return int(self.rng.choice(users if users.shape[0] else np.arange(self.pop.n_users)))

    def gaps(self, m: int, lo: float, hi: float) -> NDArray[np.float64]:
        return np.asarray(np.cumsum(self.rng.exponential(self.rng.uniform(lo, hi), m)), dtype=np.float64)


def _recompute(ctx: _Ctx, idx: Array) -> None:
    _physics(ctx.pop, ctx.rng, ctx.cols, ctx.clock.load_at(ctx.cols.ts[idx]), idx)


def _statistical(ctx: _Ctx, variant: str, m: int, code: tuple[int, int]) -> int:
    rng, c = ctx.rng, ctx.cols
    idx = ctx.run(m)
    if variant == "size":  # 12x..245x larger (or smaller) than the user's usual file of that type
        sign = 1.0 if rng.random() < 0.8 else -1.0
        f = np.exp(sign * rng.uniform(2.5, 5.5) + rng.normal(0.0, 0.2, idx.shape[0]))
        c.size[idx] = np.clip(np.round(c.size[idx] * f), 1, _MAX_SIZE).astype(np.int64)
        _recompute(ctx, idx)
    else:  # one user's calls 7x..33x slower than their usual, nothing else changes
        c.latency[idx] *= np.exp(rng.uniform(2.0, 3.5, idx.shape[0]))
    return ctx.label(idx, code)


def _performance(ctx: _Ctx, variant: str, m: int, code: tuple[int, int]) -> int:
    rng, c = ctx.rng, ctx.cols
    idx = ctx.window(m)
    k = idx.shape[0]
    ramp = np.sqrt(np.sin(np.pi * (np.arange(k) + 0.5) / max(k, 1)))  # builds up, then recovers
    if variant == "degradation":  # a backend degrades: slower calls and hashing, requests pile up
        peak = rng.uniform(1.0, 2.5)
        c.conc[idx] = np.round(c.conc[idx] * (1.0 + rng.uniform(1.0, 3.0) * ramp)).astype(np.int64)
        extra = c.hash_ms[idx] * (np.exp(0.4 * peak * ramp) - 1.0)
        c.hash_ms[idx] += extra
        c.latency[idx] = (c.latency[idx] + extra) * np.exp(peak * ramp)
    elif variant == "slow_hash":  # a storage node's disk: hashing 4.5x..20x slower than the size explains
        extra = c.hash_ms[idx] * (np.exp(rng.uniform(1.5, 3.0) * ramp) - 1.0)
        c.hash_ms[idx] += extra
        c.latency[idx] += extra
    else:  # a thundering herd: concurrency x3..x6, latency grows with the queue
        old = c.conc[idx].astype(np.float64)
        c.conc[idx] = np.round(old * (1.0 + rng.uniform(2.0, 5.0) * ramp)).astype(np.int64)
        c.latency[idx] *= (1.0 + c.conc[idx] / 25.0) / (1.0 + old / 25.0)
    return ctx.label(idx, code)


def _content(ctx: _Ctx, variant: str, m: int, code: tuple[int, int]) -> int:
    rng, c, pop = ctx.rng, ctx.cols, ctx.pop
    idx = ctx.run(m)
    if idx.shape[0] == 0:
        return 0
    u = int(c.user[idx[0]])
    if variant == "foreign_type":  # a type the user never sends, of a plausible size for that type
        c.ftype[idx] = rng.choice(np.setdiff1d(np.arange(_N_NORMAL_TYPES), pop.type_ids[u]))
        c.size[idx] = _sizes(rng, c.ftype[idx], pop.size_shift[c.user[idx]])
    elif variant == "executable":  # executables and scripts dropped into a document namespace
        docs = np.intersect1d(pop.ns_ids[u], _DOC_NS_IDS)
        c.ns[idx] = rng.choice(docs if docs.shape[0] else _DOC_NS_IDS)
        c.ftype[idx] = rng.choice(_EXEC_IDS, idx.shape[0])
        c.size[idx] = _sizes(rng, c.ftype[idx], pop.size_shift[c.user[idx]])
    elif rng.random() < 0.5:  # a 0.5..4 GB "text" file
        c.ftype[idx] = rng.choice(_BIG_TEXT_IDS)
        c.size[idx] = np.exp(rng.uniform(np.log(5e8), np.log(4e9), idx.shape[0])).astype(np.int64)
    else:  # a 100 B..4 KB "video", "audio" or "photo"
        c.ftype[idx] = rng.choice(_TINY_MEDIA_IDS)
        c.size[idx] = np.exp(rng.uniform(np.log(100.0), np.log(4096.0), idx.shape[0])).astype(np.int64)
    _recompute(ctx, idx)
    return ctx.label(idx, code)


def _malformed(rng: np.random.Generator, m: int) -> NDArray[np.object_]:
    """``m`` hashes of one randomly chosen malformation (a tampering or broken client is consistent)."""
    style = _HASH_STYLES[int(rng.integers(len(_HASH_STYLES)))]
    if style in ("zeros", "repeat"):
        unit = "0" if style == "zeros" else str(_hex(rng, 1, int(rng.choice([2, 4, 8])))[0])
        return np.full(m, unit * (64 // len(unit)), dtype=object)
    if style == "low_entropy":  # 64 hex digits drawn from only 2..3 symbols
        alphabet = rng.choice(_HEX, int(rng.integers(2, 4)), replace=False)
        return _strings(np.ascontiguousarray(alphabet[rng.integers(0, alphabet.shape[0], (m, 64))]))
    if style == "non_hex":  # right length, a few characters outside [0-9a-f]
        chars = np.frombuffer(rng.bytes(32 * m).hex().encode("ascii"), dtype=np.uint8).reshape(m, 64).copy()
        bad = rng.random((m, 64)) < 0.08
        bad[np.arange(m), rng.integers(0, 64, m)] = True
        chars[bad] = rng.integers(ord("g"), ord("z") + 1, int(bad.sum()), dtype=np.uint8)
        return _strings(chars)
    width = {"md5": 32, "sha1": 40, "truncated": int(rng.integers(48, 64)), "empty": 0}[style]
    return _hex(rng, m, width)


def _security(ctx: _Ctx, variant: str, m: int, code: tuple[int, int]) -> int:
    rng, pop = ctx.rng, ctx.pop
    if variant == "malformed_hash":
        idx = ctx.run(m)
        ctx.cols.hash[idx] = _malformed(rng, idx.shape[0])
        return ctx.label(idx, code)
    if variant == "sensitive_access":  # a user who never touches sensitive namespaces opens one or two
        never = ~np.isin(pop.ns_ids, _SENSITIVE_IDS).any(axis=1) & ~pop.service
        u = ctx.pick_user(never)
        ns = rng.choice(rng.choice(_SENSITIVE_IDS, int(rng.integers(1, 3)), replace=False), m)
        return ctx.add(code, np.full(m, u), ctx.user_time(u) + ctx.gaps(m, 30.0, 900.0), ns=ns)
    # one file (same hash, size, type) arriving from many different users within 10 minutes..3 hours
    users = rng.permutation(np.resize(rng.permutation(pop.n_users), m))
    t0 = ctx.user_time(int(users[0]))
    ts = np.sort(t0 + rng.uniform(0.0, rng.uniform(600.0, 10800.0), m))
    _, ftype, size = _draw(pop, rng, users[:1])
    return ctx.add(code, users, ts, ftype=np.repeat(ftype, m), size=np.repeat(size, m),
                   hashes=np.repeat(_hex(rng, 1), m))


def _behavioural(ctx: _Ctx, variant: str, m: int, code: tuple[int, int]) -> int:
    rng, pop = ctx.rng, ctx.pop
    u = ctx.pick_user(~pop.service & ~pop.batch)
    unusual = np.setdiff1d(_PLAIN_NS_IDS, pop.ns_ids[u])
    t0, users = ctx.user_time(u), np.full(m, u)
    if variant == "burst":  # exfiltration-like: 30..300 events seconds apart over 3..8 unusual namespaces
        chosen = rng.choice(unusual, min(unusual.shape[0], int(rng.integers(3, 9))), replace=False)
        own, _, _ = _draw(pop, rng, users)
        ns = np.where(rng.random(m) < rng.uniform(0.2, 0.6), own, rng.choice(chosen, m))
        donors = rng.choice(np.flatnonzero(~pop.service), m)  # files like those other teams keep
        _, ftype, size = _draw(pop, rng, donors)
        return ctx.add(code, users, t0 + ctx.gaps(m, 2.0, 15.0), ns=ns, ftype=ftype, size=size,
                       extra_conc=rng.poisson(2.0, m))
    # sweep: at a normal pace (minutes apart), one unusual namespace after another
    ns = rng.permutation(unusual)[np.arange(m) % unusual.shape[0]]
    return ctx.add(code, users, t0 + ctx.gaps(m, 60.0, 600.0), ns=ns)


def _temporal(ctx: _Ctx, variant: str, m: int, code: tuple[int, int]) -> int:
    """Normal-looking work (usual namespaces, types, sizes) from 0:30-3:30 local or on a weekend."""
    rng, pop, clock = ctx.rng, ctx.pop, ctx.clock
    humans = np.flatnonzero(~pop.service)
    users = rng.choice(humans if humans.shape[0] else np.arange(pop.n_users), 512)
    t = rng.uniform(clock.start, clock.end, 512)
    h, dow = pop.local_time(users, t)
    act = pop.activity(users, t)
    night = (h >= 0.5) & (h < 3.5) & (act < 0.05)
    at_work = (h - pop.work_start[users]) % 24.0 < pop.work_len[users] - 2.0
    weekend = (dow >= 5) & (pop.weekend[users] < 0.05) & at_work
    ok = weekend if variant == "weekend" and weekend.any() else night
    if variant == "weekend" and not weekend.any():
        code = (code[0], VARIANTS.index("temporal.night") + 1)  # no weekend in this stream's span
    i = int(rng.choice(np.flatnonzero(ok))) if ok.any() else int(np.argmin(act))
    return ctx.add(code, np.full(m, users[i]), t[i] + ctx.gaps(m, 30.0, 300.0))


_APPLY: Final = {"statistical": _statistical, "behavioural": _behavioural, "temporal": _temporal,
                 "performance": _performance, "content": _content, "security": _security}


def _mean_size(lo: int, hi: int) -> float:
    return (hi + 1 - lo) / float(np.log((hi + 1) / lo)) - 0.5


def _episode_size(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(np.exp(rng.uniform(np.log(lo), np.log(hi + 1))))  # log-uniform in [lo, hi]


def _plan(rng: np.random.Generator, budgets: Mapping[str, int]) -> list[tuple[str, str, int, bool]]:
    """Episodes (kind, variant, events, inserted) filling each kind's budget exactly."""
    plan = []
    for kind, budget in budgets.items():
        recipes = _RECIPES[kind]
        p = np.array([share / _mean_size(*size) for _, share, size, _ in recipes])  # shares of events
        while budget > 0:
            name, _, (lo, hi), inserted = recipes[int(rng.choice(len(recipes), p=p / p.sum()))]
            m = min(budget, _episode_size(rng, lo, hi))
            plan.append((kind, name, m, inserted))
            budget -= m
    return plan


def _inject(ctx: _Ctx, plan: list[tuple[str, str, int, bool]]) -> None:
    """Realise the plan; episodes edited into normal events that fall short are topped up in kind."""
    deficit = dict.fromkeys(KINDS, 0)
    for kind, variant, m, _ in plan:
        code = (KINDS.index(kind) + 1, VARIANTS.index(f"{kind}.{variant}") + 1)
        deficit[kind] += m - _APPLY[kind](ctx, variant, m, code)
    for kind, missing in deficit.items():
        in_place = [r for r in _RECIPES[kind] if not r[3]]
        misses = 0
        while missing > 0 and in_place and misses < 20:
            name, _, (lo, hi), _ = in_place[int(ctx.rng.integers(len(in_place)))]
            code = (KINDS.index(kind) + 1, VARIANTS.index(f"{kind}.{name}") + 1)
            got = _APPLY[kind](ctx, name, min(missing, _episode_size(ctx.rng, lo, hi)), code)
            missing, misses = missing - got, misses + 1 if got == 0 else 0


def _budgets(n: int, fraction: float, mix: Mapping[str, float] | None) -> dict[str, int]:
    mix = DEFAULT_MIX if mix is None else mix
    unknown = set(mix) - set(KINDS)
    if unknown or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"mix must map some of {KINDS} to non-negative weights with a positive sum, got {dict(mix)}")
    total = round(fraction * n)
    weights = np.array([mix.get(k, 0.0) for k in KINDS], dtype=np.float64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact)[: total - int(counts.sum())]] += 1  # largest remainders
    return {k: int(c) for k, c in zip(KINDS, counts, strict=True) if c > 0}

