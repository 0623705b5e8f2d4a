"""kernels.anomaly_features: numba kernels against the NumPy/Python reference, chunking, state, CUDA simulator."""

from __future__ import annotations

import ctypes.util
import importlib
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kernels import _cuda, streaming
from kernels import anomaly_features as af

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, a Tuesday
HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def random_hash(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.6:
        return bytes(rng.choice(HEX, 64)).decode()
    malformed = (
        "0" * 64,
        "ab" * 32,
        "",
        "XYZ-" + "F" * 60,
        bytes(rng.choice(HEX, 63)).decode() + "g",
        bytes(rng.choice(HEX, int(rng.integers(1, 90)))).decode(),
        "deadbeef" * 8,
        "ÿ" + "a" * 63,
    )
    return malformed[int(rng.integers(len(malformed)))]


def random_events(n: int, seed: int = 0, n_users: int = 25) -> dict[str, Any]:
    """Random events in the raw schema; users and namespaces from small pools so keys repeat."""
    rng = np.random.default_rng(seed)
    users = np.array([f"user-{i}" for i in range(n_users)] + ["ünïcødé", "", "x" * 80], dtype=object)
    namespaces = np.array([f"team-{i}/proj" for i in range(9)], dtype=object)
    types = np.array([*af.FILE_TYPES[::3], "", "weird", "PDF", "jpeg"], dtype=object)
    gaps = rng.exponential(120.0, n)
    gaps[rng.random(n) < 0.05] = 0.0  # simultaneous events
    gaps[rng.random(n) < 0.01] = 40 * 86400.0  # long silences
    hash_ms = rng.gamma(2.0, 10.0, n).astype(np.float32)
    latency = rng.gamma(2.0, 50.0, n).astype(np.float32)
    hash_ms[rng.random(n) < 0.02] = np.nan
    latency[rng.random(n) < 0.02] = np.inf
    latency[rng.random(n) < 0.02] = -1.0
    return {
        "timestamp": T0 + np.cumsum(gaps),
        "user": users[rng.integers(0, users.size, n)],
        "namespace": namespaces[rng.integers(0, namespaces.size, n)],
        "file_type": types[rng.integers(0, types.size, n)],
        "content_hash": np.array([random_hash(rng) for _ in range(n)], dtype=object),
        "file_size": np.exp(rng.normal(12.0, 3.0, n)).astype(np.int64) - (rng.random(n) < 0.01),
        "hash_time_ms": hash_ms,
        "api_latency_ms": latency,
        "concurrency": rng.integers(-1, 64, n).astype(np.int32),
    }


def one_event(t: float, user: str = "u", namespace: str = "ns", **kw: Any) -> dict[str, Any]:
    ev = {
        "timestamp": t,
        "user": user,
        "namespace": namespace,
        "file_type": "pdf",
        "content_hash": "a" * 64,
        "file_size": 1_000_000,
        "hash_time_ms": 5.0,
        "api_latency_ms": 20.0,
        "concurrency": 3,
    }
    return ev | kw


def stack(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        k: np.array([e[k] for e in events], dtype=object if isinstance(events[0][k], str) else None) for k in events[0]
    }


def assert_states_equal(a: af.FeatureState, b: af.FeatureState) -> None:
    for name in af._ARRAYS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0, err_msg=name)


# --- encoding ------------------------------------------------------------------------------------------------


def test_encode_strings_is_truncated_zero_padded_utf8() -> None:
    values = ["", "a", "héllo", "x" * 100, "日本語", "trailing"]
    for given in (values, np.array(values, dtype=object), np.array(values)):
        mat = af.encode_strings(given, 8)
        assert mat.dtype == np.uint8 and mat.shape == (len(values), 8)
        for row, s in zip(mat, values, strict=True):
            assert row.tobytes() == s.encode("utf-8")[:8].ljust(8, b"\0")
    assert af.encode_strings(np.array(["ab", "cd"], dtype=object), 4).tobytes() == b"ab\0\0cd\0\0"
    assert af.encode_strings([], 4).shape == (0, 4)


def test_fnv1a64_known_vectors_and_padding() -> None:
    mat = af.encode_strings(["", "a", "foobar"], 16)
    assert af.fnv1a64(mat).tolist() == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]
    assert af.fnv1a64(af.encode_strings(["foobar"], 6))[0] == af.fnv1a64(af.encode_strings(["foobar"], 64))[0]


def test_file_type_codes() -> None:
    assert 25 <= len(af.FILE_TYPES) == len(set(af.FILE_TYPES)) and af.FT_BUCKETS == len(af.FILE_TYPES) + 1
    codes = af.file_type_codes(af.encode_strings(list(af.FILE_TYPES), af.FILE_TYPE_WIDTH))
    assert codes.tolist() == list(range(1, len(af.FILE_TYPES) + 1))
    unknown = af.file_type_codes(af.encode_strings(["", "PDF", "pdfx", "jpeg", "e"], af.FILE_TYPE_WIDTH))
    assert unknown.tolist() == [0] * 5


def test_encode_events_matches_the_python_reference() -> None:
    ev = random_events(500, seed=3)
    fast, ref = af.encode_events(ev), af.encode_events_reference(ev)
    for name, a, b in zip(af.EncodedEvents._fields, fast, ref, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


# --- features against the reference --------------------------------------------------------------------------


def test_feature_names_are_grouped_and_documented() -> None:
    assert af.FEATURE_NAMES == tuple(n for g in af.FEATURE_GROUPS.values() for n in g)
    assert len(set(af.FEATURE_NAMES)) == len(af.FEATURE_NAMES) == 22
    assert set(af.STATEFUL_FEATURES) < set(af.FEATURE_NAMES)
    for name in af.FEATURE_NAMES:
        assert f"``{name}``" in (af.__doc__ or ""), name


@pytest.mark.parametrize(("capacity", "seed"), [(16, 0), (4096, 1)])  # 16 slots: collisions and evictions
def test_kernels_match_the_reference(capacity: int, seed: int) -> None:
    ev = random_events(1500, seed=seed)
    fast_state, ref_state = af.new_state(capacity), af.new_state(capacity)
    fast = af.extract(ev, fast_state, backend="cpu")
    ref = af.extract_reference(ev, ref_state)
    assert fast.dtype == np.float32 and fast.shape == (1500, len(af.FEATURE_NAMES))
    assert np.isfinite(fast).all()
    np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=1e-6)
    assert_states_equal(fast_state, ref_state)
    if capacity == 16:  # the table really was contended
        assert (fast[:, af.C_SINCE_LAST] == np.float32(math.log1p(af.MAX_GAP))).sum() > 28


def test_parallel_and_serial_stateless_kernels_agree() -> None:
    enc = af.encode_events(random_events(af.PARALLEL_MIN_EVENTS + 500, seed=4))
    whole = af.stateless_features(enc, backend="cpu")
    parts = np.concatenate(
        [af.stateless_features(enc.slice(i, i + 1000), backend="cpu") for i in range(0, enc.num_events, 1000)]
    )
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_allclose(whole, af.stateless_features_reference(enc), rtol=1e-6, atol=1e-6)


def test_chunked_stream_equals_one_call() -> None:
    ev = af.encode_events(random_events(1200, seed=5))
    whole_state = af.new_state(64)
    whole = af.extract(ev, whole_state, backend="cpu")
    cuts = [0, 0, 1, 2, 50, 51, 400, 999, 1200]
    state = af.new_state(64)
    parts = np.concatenate([af.extract(ev.slice(a, b), state, backend="cpu") for a, b in itertools.pairwise(cuts)])
    np.testing.assert_array_equal(whole, parts)
    assert_states_equal(whole_state, state)


def test_state_save_load_round_trip(tmp_path: Path) -> None:
    ev = af.encode_events(random_events(800, seed=6))
    whole = af.extract(ev, af.new_state(256), backend="cpu")
    state = af.new_state(256)
    first = af.extract(ev.slice(0, 300), state, backend="cpu")
    state.save(tmp_path / "state.npz")
    loaded = af.FeatureState.load(tmp_path / "state.npz")
    assert_states_equal(state, loaded)
    second = af.extract(ev.slice(300, 800), loaded, backend="cpu")
    np.testing.assert_array_equal(whole, np.concatenate([first, second]))

    with np.load(tmp_path / "state.npz") as z:
        arrays = dict(z)
    np.savez(tmp_path / "other.npz", **(arrays | {"schema": np.str_("something else")}))
    with pytest.raises(ValueError, match="schema"):
        af.FeatureState.load(tmp_path / "other.npz")


def test_copy_is_independent() -> None:
    ev = random_events(100, seed=7)
    state = af.new_state(64)
    snapshot = state.copy()
    af.extract(ev, state, backend="cpu")
    assert not snapshot.user_keys.any() and state.user_keys.any()


# --- feature semantics on hand-made events -------------------------------------------------------------------


def test_hash_features_on_known_strings() -> None:
    cases = {
        "0123456789abcdef" * 4: (4.0, 0.0, 1 / 64, 1.0),
        "0" * 64: (0.0, 0.0, 1.0, 1.0),
        "": (0.0, 1.0, 1.0, 0.0),
        "xyz": (0.0, 1.0, 1 / 3, 0.0),
        "AB" * 32: (1.0, 0.0, 1 / 64, 1.0),
        "aab": (math.log2(3) - 2 / 3, 0.0, 2 / 3, 0.0),
        "a" * 100: (0.0, 0.0, 1.0, 0.0),  # truncated to HASH_WIDTH, still not 64 long
    }
    ev = stack([one_event(T0, content_hash=h) for h in cases])
    got = af.extract(ev, af.new_state(4), backend="cpu")[:, [af.C_ENTROPY, af.C_NONHEX, af.C_MAX_RUN, af.C_LEN_OK]]
    np.testing.assert_allclose(got, np.array(list(cases.values())), rtol=1e-6, atol=1e-7)


def test_temporal_and_performance_features() -> None:
    monday_6am = 4 * 86400.0 + 6 * 3600.0  # 1970-01-05 06:00 UTC
    ev = stack(
        [
            one_event(0.0, file_size=0, hash_time_ms=2.0, api_latency_ms=-5.0),
            one_event(monday_6am, file_size=3_000_000, hash_time_ms=12.0, concurrency=-2),
        ]
    )
    x = af.extract(ev, af.new_state(4), backend="cpu")
    np.testing.assert_allclose(x[:, [af.C_HOUR_SIN, af.C_HOUR_COS, af.C_DOW]], [[0, 1, 3], [1, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(x[:, af.C_LOG_SIZE], [0.0, math.log1p(3e6)], rtol=1e-6)
    np.testing.assert_allclose(x[:, af.C_MS_PER_MB], [2.0 / 0.1, 12.0 / 3.0], rtol=1e-6)
    np.testing.assert_allclose(x[:, af.C_LOG_LAT], [0.0, math.log1p(20.0)], rtol=1e-6)
    assert x[:, af.C_CONC].tolist() == [3.0, 0.0]
    assert x[:, af.C_FT_CODE].tolist() == [af.FILE_TYPES.index("pdf") + 1] * 2


def test_stateful_features_on_a_small_story() -> None:
    other_ns = next(f"ns{i}" for i in range(100) if _bucket(f"ns{i}") != _bucket("ns"))
    ev = stack(
        [
            one_event(T0),
            one_event(T0 + 1800),
            one_event(T0 + 1800, user="v"),  # same namespace, other user
            one_event(T0 + 3600, namespace=other_ns, file_type="exe"),
        ]
    )
    x = af.extract(ev, af.new_state(64), backend="cpu").astype(np.float64)
    col = {name: x[:, af.FEATURE_NAMES.index(name)] for name in af.STATEFUL_FEATURES}
    d1, d2 = math.exp(-0.5), math.exp(-1800 / 86400)
    np.testing.assert_allclose(col["log_seconds_since_user_last"], [math.log1p(af.MAX_GAP), math.log1p(1800)] * 2)
    np.testing.assert_allclose(col["user_events_last_hour"], [0, d1, 0, d1 * d1 + d1], rtol=1e-6)
    np.testing.assert_allclose(col["user_rate_per_hour"], [0, d2 / 24, 0, (d2 * d2 + d2) / 24], rtol=1e-6)
    np.testing.assert_allclose(col["namespace_rate_per_hour"], [0, d1, 1 + d1, 0], rtol=1e-6)
    np.testing.assert_allclose(col["user_file_type_novelty"], [1, 0, 1, 1], atol=1e-7)
    np.testing.assert_allclose(col["user_namespace_novelty"], [1, 0, 1, 1], atol=1e-7)
    np.testing.assert_allclose(col["user_namespace_entropy"], [0, 0, 0, 0], atol=1e-7)
    assert not col["user_size_zscore"].any() and not col["user_latency_zscore"].any()  # warm-up


def _bucket(namespace: str) -> int:
    return streaming._fmix64_py(af._fnv1a64_py(namespace.encode())) >> 60


def test_size_zscore_flags_an_outlier_after_warm_up() -> None:
    rng = np.random.default_rng(8)
    sizes = [int(s) for s in np.exp(rng.normal(13.0, 0.3, 40))] + [10**10]
    ev = stack([one_event(T0 + 60 * i, file_size=s) for i, s in enumerate(sizes)])
    z = af.extract(ev, af.new_state(64), backend="cpu")[:, af.C_SIZE_Z]
    assert not z[: int(af.Z_WARMUP)].any()
    assert np.abs(z[int(af.Z_WARMUP) : -1]).max() < 4.0 < 20.0 < z[-1]


def test_state_memory_is_bounded_and_evicted_users_start_afresh() -> None:
    state = af.new_state(4)  # one set of four slots
    nbytes = state.nbytes
    users = [f"user{i}" for i in range(5)]
    ev = stack([one_event(T0 + 10 * i, user=users[i % 5]) for i in range(15)])
    x = af.extract(ev, state, backend="cpu")
    assert state.nbytes == nbytes and np.count_nonzero(state.user_keys) == 4
    # five users cycling through four slots: each user is evicted before it comes back
    np.testing.assert_array_equal(x[:, af.C_SINCE_LAST], np.float32(math.log1p(af.MAX_GAP)))
    assert af.new_state().nbytes < 24 * 2**20


def test_bad_input_is_refused() -> None:
    ev = random_events(10)
    with pytest.raises(ValueError, match="finite"):
        af.extract(ev | {"timestamp": np.full(10, np.nan)}, af.new_state(4))
    with pytest.raises(ValueError, match="same length"):
        af.extract(ev | {"file_size": np.ones(9, np.int64)}, af.new_state(4))
    with pytest.raises(ValueError, match="power of two"):
        af.new_state(100)
    with pytest.raises(ValueError, match="backend"):
        af.extract(ev, af.new_state(4), backend="tpu")


def test_empty_batch() -> None:
    ev = random_events(0)
    state = af.new_state(4)
    assert af.extract(ev, state).shape == (0, len(af.FEATURE_NAMES))
    assert not state.user_keys.any()


@pytest.mark.parametrize("module", ["kernels", "kernels.anomaly_features", "kernels.streaming", "kernels._cuda"])
def test_all_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    assert all(hasattr(mod, name) for name in mod.__all__)


# --- CUDA ----------------------------------------------------------------------------------------------------

_SIMULATED = """
import sys
import numpy as np
try:
    from numba import cuda
    assert cuda.is_available()
except Exception as exc:
    print("SKIP", exc)
    sys.exit(3)
from kernels import _cuda, anomaly_features as af
with np.load(sys.argv[1]) as z:
    enc = af.EncodedEvents(*(z[name] for name in af.EncodedEvents._fields))
np.save(sys.argv[2], _cuda.stateless_features(enc, np.zeros((enc.num_events, len(af.FEATURE_NAMES)), np.float32)))
"""


def run_simulated(script: str, *args: str) -> None:
    """Run ``script`` under numba's CUDA simulator (which must be chosen before numba is imported)."""
    env = os.environ | {"NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", script, *args], env=env, capture_output=True, text=True, timeout=120
    )
    if proc.returncode == 3:
        pytest.skip(f"CUDA simulator unavailable: {proc.stdout.strip()}")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_cuda_stateless_kernel_matches_cpu_in_the_simulator(tmp_path: Path) -> None:
    enc = af.encode_events(random_events(300, seed=9))
    np.savez(tmp_path / "enc.npz", **enc._asdict())
    run_simulated(_SIMULATED, str(tmp_path / "enc.npz"), str(tmp_path / "out.npy"))
    np.testing.assert_allclose(
        np.load(tmp_path / "out.npy"), af.stateless_features(enc, backend="cpu"), rtol=1e-6, atol=1e-6
    )


def test_cpu_work_does_not_import_numba_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    if "numba.cuda" in sys.modules or os.environ.get("NUMBA_ENABLE_CUDASIM"):
        pytest.skip("numba.cuda is already imported in this process")
    if ctypes.util.find_library("cuda") or os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has a CUDA driver")
    monkeypatch.setattr(af, "CUDA_MIN_EVENTS", 0)  # "auto" considers the GPU for every batch
    monkeypatch.setattr(streaming, "CUDA_MIN_EVENTS", 0)
    _cuda.available.cache_clear()
    af.extract(random_events(50), af.new_state(64))
    streaming.score_series(np.arange(4), np.ones(4), streaming.new_series_state("zscore", 4))
    assert "numba.cuda" not in sys.modules


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda.available(), reason="needs a CUDA GPU")
def test_cuda_stateless_kernel_on_the_gpu() -> None:
    enc = af.encode_events(random_events(5000, seed=10))
    np.testing.assert_allclose(
        af.stateless_features(enc, backend="cuda"), af.stateless_features(enc, backend="cpu"), rtol=1e-5, atol=1e-5
    )
