"""Speed of the numba feature and streaming kernels against their plain NumPy/Python references.

    python benchmarks/kernel_speed.py [--events 1000000] [--ref-events 100000] [--repeat 3] [--seed 0]

Generates ``--events`` random upload events in the raw schema of ``kernels.anomaly_features`` (its own simple
generator: 5,000 users, 200 namespaces, mostly valid SHA-256 hex hashes), then times each stage after one
warm-up call (compilation excluded), best of ``--repeat`` runs:

* encode: strings -> fixed-width bytes (NumPy ``S`` dtype) + FNV-1a hashes and file-type codes (numba)
* stateless: the parallel kernel on all cores, the same kernel on one thread, the vectorised NumPy reference
* stateful: the sequential kernel against the per-event Python reference
* extract: encoded events -> all features, and raw events -> all features
* streaming: EW z-score and moving-average deviation over 10,000 series

References that loop in Python (the encode reference, the stateful reference, the streaming references) run on
``--ref-events`` events and their time is scaled linearly to ``--events`` (marked "scaled").
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from kernels import anomaly_features as af
from kernels import streaming as st


def make_events(n: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    users = np.array([f"user-{i:05d}@example.com" for i in range(5000)], dtype=object)
    namespaces = np.array([f"org-{i % 17}/project-{i}" for i in range(200)], dtype=object)
    types = np.array([*af.FILE_TYPES, "", "bak", "iso", "heic"], dtype=object)
    hexd = np.frombuffer(b"0123456789abcdef", np.uint8)
    hashes = hexd[rng.integers(0, 16, (n, 64), dtype=np.uint8)]
    bad = rng.random(n) < 0.01
    hashes[bad, rng.integers(8, 64)] = ord("0")
    hashes[bad, 32:] = ord("0")  # low-entropy tails
    content_hash = np.ascontiguousarray(hashes).view("S64").ravel().astype("U64").astype(object)
    return {
        "timestamp": 1.7e9 + np.cumsum(rng.exponential(0.5, n)),
        "user": users[rng.zipf(1.5, n) % users.size],
        "namespace": namespaces[rng.integers(0, namespaces.size, n)],
        "file_type": types[rng.integers(0, types.size, n)],
        "content_hash": content_hash,
        "file_size": np.exp(rng.normal(12.0, 3.0, n)).astype(np.int64),
        "hash_time_ms": rng.gamma(2.0, 10.0, n).astype(np.float32),
        "api_latency_ms": rng.gamma(2.0, 50.0, n).astype(np.float32),
        "concurrency": rng.integers(0, 64, n).astype(np.int32),
    }


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--ref-events", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n, m, r = args.events, min(args.ref_events, args.events), args.repeat
    scale = n / m

    t0 = time.perf_counter()
    af.warm_up()
    st.warm_up()
    compile_s = time.perf_counter() - t0
    events = make_events(n, args.seed)
    small = {k: v[:m] for k, v in events.items()}
    enc = af.encode_events(events)
    enc_small = af.encode_events(small)
    out = af.stateless_features(enc, backend="cpu")
    args_sl = (enc.timestamp, enc.file_size, enc.hash_time_ms, enc.api_latency_ms, enc.concurrency, enc.file_type)

    rows: list[tuple[str, float, str, float | None]] = []  # stage, kernel s, reference label, reference s

    rows.append(
        (
            "encode (strings -> bytes, hashes, codes)",
            best_of(r, lambda: af.encode_events(events)),
            "Python per string, scaled",
            best_of(1, lambda: af.encode_events_reference(small)) * scale,
        )
    )
    stateless_ref = best_of(r, lambda: af.stateless_features_reference(enc))
    rows.append(
        (
            f"stateless, parallel ({numba.get_num_threads()} threads)",
            best_of(r, lambda: af.stateless_features(enc, out, backend="cpu")),
            "NumPy vectorised",
            stateless_ref,
        )
    )
    rows.append(
        (
            "stateless, 1 thread",
            best_of(r, lambda: af._stateless_seq(*args_sl, enc.content_hash, out)),
            "NumPy vectorised",
            stateless_ref,
        )
    )
    rows.append(
        (
            "stateful (sequential, state 65536 slots)",
            best_of(r, lambda: af.stateful_features(enc, af.new_state(), out)),
            "Python loop, scaled",
            best_of(1, lambda: af.stateful_features_reference(enc_small, af.new_state())) * scale,
        )
    )
    extract_s = best_of(r, lambda: af.extract(enc, af.new_state(), backend="cpu"))
    rows.append(("extract, encoded input", extract_s, "", None))
    rows.append(("extract, raw input (incl. encode)", best_of(r, lambda: af.extract(events, af.new_state())), "", None))

    rng = np.random.default_rng(args.seed + 1)
    series = (rng.integers(0, 10_000, n).astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    values = rng.normal(0.0, 1.0, n)
    for kind in st.KINDS:
        rows.append(
            (
                f"streaming {kind}, 10k series",
                best_of(r, lambda k=kind: st.score_series(series, values, st.new_series_state(k), backend="cpu")),
                "Python loop, scaled",
                best_of(1, lambda k=kind: st.score_series_reference(series[:m], values[:m], st.new_series_state(k)))
                * scale,
            )
        )

    print(
        f"{n:,} events; reference loops on {m:,} scaled x{scale:g}; best of {r}; numba {numba.__version__} "
        f"({numba.threading_layer()}), numpy {np.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; compile (warm-up) {compile_s:.1f} s"
    )
    print("| stage | numba s | numba Mev/s | reference | reference s | speed-up |")
    print("|---|---|---|---|---|---|")
    for stage, kernel_s, ref_label, ref_s in rows:
        ref = f"{ref_s:.3f}" if ref_s is not None else ""
        speedup = f"{ref_s / kernel_s:,.0f}x" if ref_s is not None else ""
        print(f"| {stage} | {kernel_s:.3f} | {n / kernel_s / 1e6:.2f} | {ref_label} | {ref} | {speedup} |")


if __name__ == "__main__":
    main()
