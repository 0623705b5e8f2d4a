"""The harness of the fuzz tests (tests/reliability/test_fuzz_infer.py, test_fuzz_control.py).

Every case goes to the real server as raw bytes through a generic ``unary_unary`` call (so a test can send what no
stub would: malformed protobuf, oversized messages), and every answer is held to the same oracle:

* it comes back within ``DEADLINE_S``, and never as DEADLINE_EXCEEDED unless the case asked for a short timeout;
* never UNKNOWN or INTERNAL: an answer is OK or one of the codes the case's :class:`Expect` allows;
* OK only when the case expects it, and then the case's own check of the response passes;
* an INVALID_ARGUMENT message names the offending field or input (one of the strings the Expect lists);
* the server process is still alive, and every ``CHECK_EVERY`` cases (and at the end of each test) a good request
  still gets its right answer; a failure reports the cases sent since the last good check.

:class:`Fuzzer` counts cases and statuses per category; with ``INFER_FUZZ_REPORT=<file>`` set, each module appends
its counts to that file as JSON lines (docs/reliability/fuzz.md is written from them).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from fixtures import ServerProcess
from hypothesis import HealthCheck, settings

Code = grpc.StatusCode

DEADLINE_S = 5.0
CHECK_EVERY = 25

# The server answers undecodable bytes INVALID_ARGUMENT once it registers its servicers with
# infer.transport.grpc.status.add_servicer (see docs/reliability/fuzz.md, "Left open"); until then grpc's own
# deserialisation failure comes back as UNKNOWN, which the oracle tolerates for such bytes only, and counts.
UNDECODABLE_WIRED = True

FUZZ_SETTINGS = dict(
    deadline=None,
    derandomize=True,  # the same cases on every run: a CI failure reproduces locally
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)


def fuzz_settings(max_examples: int) -> settings:
    """``max_examples`` cases (times ``INFER_FUZZ_SCALE``, 1 unless set: a quicker local run)."""
    scale = float(os.environ.get("INFER_FUZZ_SCALE", "1"))
    return settings(max_examples=max(1, round(max_examples * scale)), **FUZZ_SETTINGS)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Expect:
    """What the server may answer: OK (checked by ``verify``) when ``ok``, else one of ``errors``' codes; for
    INVALID_ARGUMENT, ``errors`` holds the strings of which the message must contain one."""

    ok: bool = False
    errors: Mapping[grpc.StatusCode, tuple[str, ...]] = field(default_factory=dict)
    verify: Callable[[bytes], None] | None = None
    deadline_ok: bool = False  # the case asked for a short timeout: DEADLINE_EXCEEDED from the server is fine

    @staticmethod
    def error(code: grpc.StatusCode, *names: str) -> Expect:
        return Expect(errors={code: names})

    @staticmethod
    def union(problems: Iterable[tuple[grpc.StatusCode, str]]) -> Expect:
        errors: dict[grpc.StatusCode, tuple[str, ...]] = {}
        for code, name in problems:
            errors[code] = (*errors.get(code, ()), name)
        return Expect(errors=errors)

    def also(self, code: grpc.StatusCode, *names: str) -> Expect:
        errors = dict(self.errors)
        errors[code] = (*errors.get(code, ()), *names)
        return Expect(self.ok, errors, self.verify, self.deadline_ok)


def undecodable(message_type: str) -> Expect:
    """Bytes that are not a ``message_type``: INVALID_ARGUMENT naming the type (or UNKNOWN until wired)."""
    e = Expect.error(Code.INVALID_ARGUMENT, message_type)
    return e if UNDECODABLE_WIRED else e.also(Code.UNKNOWN, "Error parsing message")


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    response: bytes
    seconds: float


class Fuzzer:
    """Sends cases to one server, applies the oracle, keeps the counts."""

    def __init__(self, channel: grpc.Channel, alive: Callable[[], bool], good: Callable[[Fuzzer], None]) -> None:
        self.channel = channel
        self._alive = alive
        self._good = good
        self._calls: dict[str, Any] = {}
        self.cases: Counter[str] = Counter()
        self.statuses: dict[str, Counter[str]] = {}
        self.seconds: Counter[str] = Counter()
        self.recent: deque[str] = deque(maxlen=CHECK_EVERY)
        self.since_good = 0
        self.context: dict[str, Any] = {}  # what the module's fixture wants its tests to see (e.g. the repository)

    def call(self, method: str, data: bytes, timeout: float = DEADLINE_S) -> Outcome:
        stub = self._calls.get(method)
        if stub is None:
            stub = self._calls[method] = self.channel.unary_unary(method)
        t0 = time.perf_counter()
        try:
            resp = stub(data, timeout=timeout)
            return Outcome(Code.OK, "", resp, time.perf_counter() - t0)
        except grpc.RpcError as e:
            return Outcome(e.code(), e.details() or "", b"", time.perf_counter() - t0)

    def check(self, category: str, method: str, data: bytes, expect: Expect, note: str = "") -> Outcome:
        """Send one case and hold its answer to the oracle."""
        out = self.call(method, data)
        self.cases[category] += 1
        self.statuses.setdefault(category, Counter())[out.code.name] += 1
        self.seconds[category] += out.seconds
        summary = f"[{category}] {method.rsplit('/', 1)[-1]} {len(data)} B {note[:300]!r} -> {out.code.name} " \
                  f"{out.details[:300]!r}"
        self.recent.append(summary)
        self._judge(out, expect, summary)
        self.since_good += 1
        if self.since_good >= CHECK_EVERY:
            self.good_check()
        return out

    def _judge(self, out: Outcome, expect: Expect, summary: str) -> None:
        why = f"{summary}\n(expected OK={expect.ok}, errors={ {c.name: n for c, n in expect.errors.items()} })"
        assert out.seconds < DEADLINE_S, f"took {out.seconds:.2f} s: {why}"
        assert self._alive(), f"server died: {why}\nrecent cases:\n" + "\n".join(self.recent)
        if out.code is Code.OK:
            assert expect.ok, f"OK for a bad request: {why}"
            if expect.verify is not None:
                expect.verify(out.response)
            return
        if out.code is Code.DEADLINE_EXCEEDED and expect.deadline_ok:
            return
        assert out.code in expect.errors, f"unexpected status: {why}"
        if out.code is Code.INVALID_ARGUMENT:
            names = expect.errors[out.code]
            # the server keeps a long message's head (infer.transport.grpc.status.clip): a name's start is there
            assert any(n[:120] in out.details for n in names), f"message names none of {names}: {why}"

    def good_check(self) -> None:
        try:
            self._good(self)
        except AssertionError as e:
            raise AssertionError("a good request failed after these cases:\n" + "\n".join(self.recent)) from e
        self.since_good = 0
        self.recent.clear()

    def report(self, module: str) -> dict[str, Any]:
        return {"module": module, "categories": {
            c: {"cases": n, "statuses": dict(self.statuses[c]), "seconds": round(self.seconds[c], 2)}
            for c, n in sorted(self.cases.items())}}

    def write_report(self, module: str, started: float) -> None:
        path = os.environ.get("INFER_FUZZ_REPORT")
        if path:
            row = self.report(module) | {"wall_s": round(time.perf_counter() - started, 1)}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


@contextlib.contextmanager
def served_fuzzer(repo: Path, module: str, good: Callable[[Fuzzer], None], max_message_bytes: int,
                  quiet_logs: tuple[str, ...] = ("internal error",)) -> Iterator[Fuzzer]:
    """A server on ``repo`` and a Fuzzer on one unlimited channel to it; afterwards the report is written, the server
    stopped, and its exit code and log checked (exit 0, none of ``quiet_logs``)."""
    started = time.perf_counter()
    srv = ServerProcess(repo, "--max-message-bytes", str(max_message_bytes))
    try:
        srv.wait_ready()
    except BaseException:
        srv.stop()  # no server left behind when it never came up
        raise
    channel = grpc.insecure_channel(srv.address, options=[("grpc.max_send_message_length", -1),
                                                          ("grpc.max_receive_message_length", -1)])
    fz = Fuzzer(channel, lambda: srv.proc.poll() is None, good)
    try:
        yield fz
        fz.write_report(module, started)
    finally:
        channel.close()
        code = srv.stop()
    log = srv.output()
    assert code == 0, log[-3000:]
    assert not any(q in log for q in quiet_logs), log[-5000:]
