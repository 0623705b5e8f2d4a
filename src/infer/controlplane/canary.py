"""Judges running canaries (advance a stage that stayed healthy long enough, roll back at once when not)
and A/B tests that promote their winner once it is significant.

Runs on the event loop every ``interval`` seconds; each change goes through the control plane, so it is
persisted (and audited, actor ``canary``) before it takes traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from infer.controlplane.service import ControlPlane
from infer.errors import Aborted
from infer.routing.experiment import Comparison, VariantStats
from infer.routing.policies import Canary, Deployment, Target, Variant

__all__ = ["CanaryController", "judge", "winner"]

log = logging.getLogger(__name__)


def judge(c: Canary, requests: int, errors: int, p99_ms: float, elapsed_s: float) -> Canary | None:
    """The canary's next state, or None to leave it as it is."""
    if c.status != "RUNNING" or requests < c.min_requests:
        return None
    rate = errors / requests
    if rate > c.max_error_rate:
        return replace(c, status="ROLLED_BACK", reason=f"error rate {rate:.1%} over {requests} requests "
                                                       f"in stage {c.stage + 1} (limit {c.max_error_rate:.1%})")
    if c.max_p99_ms and p99_ms > c.max_p99_ms:
        return replace(c, status="ROLLED_BACK", reason=f"p99 {p99_ms:.1f} ms in stage {c.stage + 1} "
                                                       f"(limit {c.max_p99_ms:.1f} ms)")
    if elapsed_s < c.stages[c.stage][1]:
        return None
    if c.stage + 1 == len(c.stages):
        return replace(c, status="PROMOTED", reason=f"all {len(c.stages)} stages healthy")
    return replace(c, stage=c.stage + 1, reason=f"stage {c.stage + 1} healthy over {requests} requests")


def winner(dep: Deployment, rows: list[tuple[Target, VariantStats]], verdict: Comparison) -> Target | None:
    """The A/B winner once the test is significant with enough samples on both sides, else None."""
    if len(rows) < 2 or verdict.metric not in ("outcome", "error_rate"):
        return None
    (ta, a), (tb, b) = rows[0], rows[1]
    samples = (a.outcomes, b.outcomes) if verdict.metric == "outcome" else (a.requests, b.requests)
    if min(samples) < dep.promote_min_samples or verdict.p_value >= dep.promote_when_p_below:
        return None
    second_better = verdict.difference > 0 if verdict.metric == "outcome" else verdict.difference < 0
    return tb if second_better else ta


class CanaryController:
    def __init__(self, control: ControlPlane, interval: float = 0.2) -> None:
        self._cp = control
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.tick()
            except Exception:  # one bad tick must not stop the judging
                log.exception("canary controller tick failed")

    async def tick(self) -> None:
        router = self._cp.router
        for name in [d.name for d in router.all()]:
            # the deployment and its revision read together, with no await between them
            dep, revision = router.get(name), self._cp.revisions.get(name, 0)
            if dep is None:
                continue
            if dep.variants and dep.promote_when_p_below > 0:
                await self._judge_experiment(dep, revision)
            window = router.canary_windows.get(dep.name)
            if dep.canary is None or window is None:
                continue
            nxt = judge(dep.canary, window.requests, window.errors, window.p99_ms(),
                        time.monotonic() - window.started)
            if nxt is not None:
                log.warning("deployment %s canary: %s (%s)", dep.name, nxt.status, nxt.reason)
                await self._write(replace(dep, canary=nxt), revision, "canary")

    async def _write(self, dep: Deployment, revision: int, actor: str) -> None:
        """Compare-and-set against the revision the judged deployment came from: a change someone made while
        this tick judged (a user's SetDeployment, another server's controller) wins, and is judged next tick."""
        try:
            await self._cp.set_deployment(dep, actor=actor, expected_revision=revision)
        except Aborted as e:
            log.info("deployment %s changed while judged; not applied: %s", dep.name, e.message)
            await self._cp.sync()

    async def _judge_experiment(self, dep: Deployment, revision: int) -> None:
        rows, verdict = await self._cp.experiment(dep.name)
        best = winner(dep, rows, verdict)
        if best is None:
            return
        log.warning("deployment %s: %s wins (%s difference %.4g, p=%.3g); promoting", dep.name, best.label(),
                    verdict.metric, verdict.difference, verdict.p_value)
        promoted = replace(dep, variants=(Variant(best, 1.0),), promote_when_p_below=0.0)
        await self._write(promoted, revision, "ab-test")
