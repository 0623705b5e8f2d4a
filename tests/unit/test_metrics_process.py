"""The process gauges on /metrics: asyncio tasks on the serving loop and Python threads (leak detectors)."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

from infer.observability.metrics import Metrics


def _value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_the_event_loop_task_gauge_counts_the_loops_tasks() -> None:
    m = Metrics()
    before = _value(generate_latest(m.registry).decode(), "infer_event_loop_tasks")
    assert before is not None and before >= 1  # this test's own task
    gate = asyncio.Event()
    tasks = [asyncio.create_task(gate.wait()) for _ in range(5)]
    assert _value(generate_latest(m.registry).decode(), "infer_event_loop_tasks") == before + 5
    gate.set()
    await asyncio.gather(*tasks)
    assert _value(generate_latest(m.registry).decode(), "infer_event_loop_tasks") == before
    assert (_value(generate_latest(m.registry).decode(), "infer_python_threads") or 0) >= 1


def test_off_an_event_loop_the_task_gauge_is_left_out() -> None:
    text = generate_latest(Metrics().registry).decode()
    assert _value(text, "infer_event_loop_tasks") is None and _value(text, "infer_python_threads") is not None
