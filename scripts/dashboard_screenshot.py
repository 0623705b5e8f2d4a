#!/usr/bin/env python3
"""A screenshot of the live dashboard under mixed load (the README's ``docs/images/dashboard.png``).

Starts ``infer serve`` on a repository (default: the default model repository, built on first use), drives for
``--seconds`` anomaly events (with ground truth), forecasts with ids (with their actuals) and an A/B deployment
between ``forecast`` and one of its candidates (with outcomes), then opens ``/dashboard`` in Chromium at 1440x900
and saves a screenshot::

    .venv/bin/python scripts/dashboard_screenshot.py --seconds 60 --out docs/images/dashboard.png
    .venv/bin/python scripts/dashboard_screenshot.py --repository /path/to/repo --chromium /usr/bin/chromium

Needs ``playwright`` (the dev extra) and a Chromium binary; the browser never downloads anything.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from infer.client import InferClient, InferClientError, ab_test
from infer.client._tasks import anomaly_inputs, forecast_inputs
from infer.config.server import infer_home

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fixtures import ServerProcess  # noqa: E402  (the tests' server process: loopback, ephemeral ports)

HORIZON = 24


def _ready_models(client: InferClient) -> set[str]:
    return {m.name for m in client.repository_index(ready=True)}


def _deployment(client: InferClient, models: set[str]) -> str:
    candidates = sorted(m for m in models if m.startswith("forecast_"))
    if "forecast" not in models or not candidates:
        print("no forecast candidates: no A/B deployment", file=sys.stderr)
        return ""
    client.control.set_deployment(ab_test("forecast-ab", {"forecast": 50, candidates[0]: 50}))
    return "forecast-ab"


class Load:
    """Mixed traffic: anomaly events with their labels, forecasts with their actuals, the A/B deployment."""

    def __init__(self, client: InferClient, models: set[str], deployment: str, seed: int = 0) -> None:
        self.client, self.models, self.deployment = client, models, deployment
        self.rng = np.random.default_rng(seed)
        self.sent = 0
        self._events: Any = None
        self._series: list[np.ndarray] = []
        self._i = 0
        self._pos = 0
        if "anomaly" in models:
            from infer.tasks.anomaly import events as ev
            from infer.tasks.anomaly.pipeline import BuildConfig

            # the held-out stream of the population the default model was trained on, sent in order (the
            # models keep per-user rolling state): live traffic as the model should see it
            c = BuildConfig()
            self._events = ev.generate_split(c.n_train, c.n_validation, c.n_test, c.seed, n_users=c.n_users).test
        if "forecast" in models:
            from infer.tasks.forecast.data import synthetic_ops

            series = [s.values.astype(np.float32) for s in synthetic_ops(32, seed=seed)]
            small = [s for s in series if float(np.median(s)) < 100.0]  # one scale, so the MAE reads well
            self._series = small or series

    def step(self) -> None:
        self._i += 1
        if self._events is not None:
            self._anomaly()
        if self._series and self._i % 3 == 0:
            self._forecast("forecast")
        if self.deployment and self._i % 2 == 0:
            self._forecast(self.deployment, outcome=True)

    def _anomaly(self) -> None:
        stream = self._events
        size = int(self.rng.integers(4, 24))
        if self._pos + size > stream.n:  # never wrap around: the models' rolling state would see time go back
            return
        a, self._pos = self._pos, self._pos + size
        rid = f"anomaly-{self._i}"
        cols = {k: v[a:a + size] for k, v in stream.events.items()}
        self.client.infer("anomaly", anomaly_inputs(cols), request_id=rid)
        if self._i % 2 == 0:
            labels = ["true" if x else "false" for x in stream.is_anomaly[a:a + size]]
            self._quiet(lambda: self.client.report_ground_truth(rid, labels=labels))
        self.sent += 1

    def _forecast(self, model: str, outcome: bool = False) -> None:
        s = self._series[self._i % len(self._series)]
        cut = int(self.rng.integers(len(s) // 2, len(s) - HORIZON))
        history, actual = s[:cut], s[cut:cut + HORIZON]
        rid = f"{model}-{self._i}"
        out = self.client.infer(model, forecast_inputs(history, HORIZON, (80.0,), None, None), request_id=rid)
        error = float(np.mean(np.abs(np.asarray(out["mean"]).reshape(-1)[:HORIZON] - actual)))
        if outcome:
            self._quiet(lambda: self.client.control.report_outcome(rid, error))
        elif self._i % 2 == 0:
            self._quiet(lambda: self.client.report_ground_truth(rid, values=actual.tolist()))
        self.sent += 1

    @staticmethod
    def _quiet(call: Any) -> None:
        try:
            call()
        except InferClientError as e:  # a model without accuracy tracking, say: the load goes on
            print(f"warning: {e}", file=sys.stderr)


def screenshot(url: str, out: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.wait_for_function("() => window.__dashboard && window.__dashboard.updates >= 2", timeout=30_000)
            page.wait_for_function("() => document.getElementById('chart-latency').dataset.ready === '1'",
                                   timeout=30_000)
            updates = page.evaluate("() => window.__dashboard.updates")
            page.wait_for_function("(n) => window.__dashboard.updates > n", arg=updates, timeout=30_000)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, help="model repository (default: the default model repository)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long to drive load before the screenshot")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "dashboard.png")
    p.add_argument("--chromium", default=os.environ.get("INFER_CHROMIUM", "/usr/bin/chromium"))
    a = p.parse_args(argv)
    # the user's INFER_HOME (not a private one): the default repository is built there once and then reused
    srv = ServerProcess(a.repository, env={"INFER_HOME": str(infer_home())})
    try:
        srv.wait_ready(timeout=1800)  # building the default repository on first use takes minutes
        with InferClient(srv.address, timeout=60) as client:
            client.wait_ready(timeout=600)
            models = _ready_models(client)
            load = Load(client, models, _deployment(client, models))
            end = time.monotonic() + a.seconds
            while time.monotonic() < end:
                load.step()
                time.sleep(0.02)
            print(f"sent {load.sent} requests to {', '.join(sorted(models))}")
            screenshot(f"http://127.0.0.1:{srv.metrics_port}/dashboard", a.out, a.chromium)
    finally:
        srv.stop()
    print(f"saved {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
