"""Deployment revisions seen through the control plane: the canary controller's compare-and-set against a change made
while it judged, and change polling between processes. The store's own revisions, served versions' lifecycle and
migrations are in the store contract (tests/store_contract.py), run on SQLite by test_store.py."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from infer.controlplane.canary import CanaryController
from infer.controlplane.service import ControlPlane, deployment_to_dict
from infer.registry.artifacts import LocalArtifactStore
from infer.registry.store import RegistryStore
from infer.routing.policies import Canary, Deployment, Target, Variant


def _canary_dep() -> Deployment:
    c = Canary(Target("m", "1"), Target("m", "2"), stages=((10, 1.0), (100, 1.0)), min_requests=1)
    return Deployment("rollout", canary=c)


async def test_the_canary_controller_loses_to_a_change_made_while_it_judged(tmp_path: Path) -> None:
    cp = ControlPlane(RegistryStore.sqlite(tmp_path / "r.db"), LocalArtifactStore(tmp_path / "a"))
    try:
        dep = await cp.set_deployment(_canary_dep(), actor="alice")
        judged_at = cp.revisions["rollout"]
        # while the controller judged the canary, an operator replaced the deployment with a plain split
        manual = Deployment("rollout", variants=(Variant(Target("m", "1"), 1.0),))
        await cp.set_deployment(manual, actor="bob")
        assert dep.canary is not None
        advanced = replace(dep, canary=replace(dep.canary, stage=1, reason="stage 1 healthy"))
        await CanaryController(cp)._write(advanced, judged_at, "canary")
        assert cp.router.get("rollout") == manual  # the operator's change stands
        assert cp.store.deployments()["rollout"] == deployment_to_dict(manual)
        assert "canary" not in [e.actor for e in cp.store.audit_log(10)]
    finally:
        cp.close()


async def test_sync_brings_changes_made_by_another_process(tmp_path: Path) -> None:
    a = ControlPlane(RegistryStore.sqlite(tmp_path / "r.db"), LocalArtifactStore(tmp_path / "a"))
    b = ControlPlane(RegistryStore.sqlite(tmp_path / "r.db"), LocalArtifactStore(tmp_path / "a"))
    try:
        await a.set_deployment(_canary_dep(), actor="alice")
        assert b.router.get("rollout") is None
        assert await b.sync() == 1 and b.router.get("rollout") == a.router.get("rollout")
        assert await b.sync() == 0  # nothing new
        await a.delete_deployment("rollout", actor="alice")
        assert await b.sync() == 1 and b.router.get("rollout") is None and "rollout" not in b.revisions
        assert await asyncio.gather(a.sync(), b.sync()) == [0, 0]  # both up to date: nothing to apply
    finally:
        a.close()
        b.close()
