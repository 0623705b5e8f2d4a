"""Traffic policies as pure functions: weighted split, stickiness, fallback order, validation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from infer.errors import InvalidArgument
from infer.routing.policies import Deployment, Target, Variant, plan, unit_hash

A, B, C = Target("m", "1"), Target("m", "2"), Target("rules")


def test_split_follows_the_weights() -> None:
    dep = Deployment("d", variants=(Variant(A, 9), Variant(B, 1)))
    rng = random.Random(0)
    seen = Counter(plan(dep, None, rng)[0] for _ in range(20_000))
    assert abs(seen[A] / 20_000 - 0.9) < 0.01


def test_a_key_always_lands_on_the_same_variant_and_keys_spread() -> None:
    dep = Deployment("d", variants=(Variant(A, 1), Variant(B, 1)), sticky_key="user")
    rng = random.Random(0)
    for k in range(100):
        assert len({plan(dep, f"u{k}", rng)[0] for _ in range(5)}) == 1
    share = sum(plan(dep, f"u{k}", rng)[0] == A for k in range(4000)) / 4000
    assert 0.45 < share < 0.55
    assert 0 <= unit_hash("x") < 1 and unit_hash("x") == unit_hash("x")


def test_fallback_follows_the_chosen_variant_without_repeats() -> None:
    dep = Deployment("d", variants=(Variant(A, 1),), fallback=(A, B, C))
    assert plan(dep, None, random.Random(0)) == [A, B, C]
    assert plan(Deployment("d", fallback=(B, C)), None, random.Random(0)) == [B, C]


@pytest.mark.parametrize("kwargs,words", [
    ({"name": ""}, "name"),
    ({"name": "d"}, "give variants"),
    ({"name": "d", "variants": (Variant(A, 0),)}, "weights"),
    ({"name": "d", "variants": (Variant(A, -1), Variant(B, 2))}, "weights"),
    ({"name": "m", "variants": (Variant(A, 1),)}, "cannot be the deployment itself"),
])
def test_invalid_deployments_are_refused(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        Deployment(**kwargs)  # type: ignore[arg-type]
