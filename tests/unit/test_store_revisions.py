"""Deployment revisions (compare-and-set, change polling) and the served versions' lifecycle in the store,
and the canary controller's compare-and-set against a change made while it judged."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from infer.controlplane.canary import CanaryController
from infer.controlplane.service import ControlPlane, deployment_to_dict
from infer.errors import Aborted
from infer.registry.artifacts import LocalArtifactStore
from infer.registry.store import SCHEMA_VERSION, RegistryStore, ServingTransition
from infer.routing.policies import Canary, Deployment, Target, Variant

SPEC = {"variants": [{"model": "m", "version": "1", "weight": 1.0}]}


def test_revisions_grow_and_guard_writes(tmp_path: Path) -> None:
    with RegistryStore.sqlite(tmp_path / "r.db") as store:
        assert SCHEMA_VERSION == 3 and store.schema_version() == 3
        r1 = store.put_deployment("a", SPEC, expected_revision=0)  # 0: must not exist yet
        with pytest.raises(Aborted, match=r"revision \d+, not 0"):
            store.put_deployment("a", SPEC, expected_revision=0)
        r2 = store.put_deployment("a", {**SPEC, "sticky_key": "user"}, expected_revision=r1)
        assert r2 > r1
        with pytest.raises(Aborted):  # stale: someone else wrote r2
            store.put_deployment("a", SPEC, "late", expected_revision=r1)
        assert store.deployments()["a"]["sticky_key"] == "user"  # the refused write changed nothing
        with pytest.raises(Aborted):
            store.delete_deployment("a", expected_revision=r1)
        assert store.delete_deployment("a", expected_revision=r2)
        r3 = store.put_deployment("a", SPEC)  # re-created: a new, higher revision (no ABA)
        assert r3 > r2 and store.deployment_revisions() == {"a": r3}
        actions = [e.action for e in store.audit_log(10)]
        assert actions.count("set_deployment") == 3 and actions.count("delete_deployment") == 1


def test_serving_transitions_in_order_and_filtered(tmp_path: Path) -> None:
    with RegistryStore.sqlite(tmp_path / "r.db") as store:
        moves = [ServingTransition("m", 1, 1.0 + i, src, dst, f"why {i}", "host:1")
                 for i, (src, dst) in enumerate([(None, "LOAD"), ("LOAD", "WARM"), ("WARM", "ACTIVE")])]
        store.record_serving_transitions(moves)
        store.record_serving_transitions([ServingTransition("m", 2, 9.0, None, "LOAD", "load started", "host:2")])
        assert store.serving_history("m", 1) == moves
        assert [t.version for t in store.serving_history("m")] == [1, 1, 1, 2]
        assert [t.target for t in store.serving_history("m", limit=2)] == ["ACTIVE", "LOAD"]  # the newest two
        assert store.serving_history("other") == []


def test_a_version_2_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with RegistryStore.sqlite(path) as store:
        store.put_deployment("kept", SPEC)
    conn = sqlite3.connect(path)  # make it look like a database written by the previous release
    conn.executescript("ALTER TABLE deployments DROP COLUMN revision; DROP TABLE serving_transitions; "
                       "DELETE FROM schema_version WHERE version = 3;")
    conn.close()
    with RegistryStore.sqlite(path) as store:
        assert store.schema_version() == 3
        assert store.deployments() == {"kept": SPEC}
        assert store.deployment_revisions() == {"kept": 0}  # rows from before revisions start at 0
        assert store.put_deployment("kept", SPEC, expected_revision=0) > 0


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
        await asyncio.gather(a.sync(), b.sync())
    finally:
        a.close()
        b.close()
