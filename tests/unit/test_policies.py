"""Traffic policies as pure functions: weighted split, stickiness, fallback order, validation."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from infer.errors import InvalidArgument
from infer.routing.policies import DefaultAnswer, DefaultOutput, Deployment, Target, Variant, plan, unit_hash

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


def test_default_answer_is_validated_and_shaped_per_request() -> None:
    score = DefaultOutput("score", "FP32", (2,), (0.0, 1.0))
    label = DefaultOutput("label", "BYTES", (), ("unknown",))
    answer = DefaultAnswer((score, label))
    assert score.array(3).tolist() == [[0.0, 1.0]] * 3 and score.array(3).dtype == np.float32
    assert label.array(2).tolist() == [b"unknown", b"unknown"]
    assert score.array(None).shape == (2,)
    assert answer.batched
    bad = [
        (lambda: DefaultOutput("s", "FP32", (3,), (0.0, 1.0)), "2 values do not fill shape [3]"),
        (lambda: DefaultOutput("s", "FP33", (1,), (0.0,)), "unknown datatype 'FP33'"),
        (lambda: DefaultOutput("s", "INT64", (1,), ("x",)), "give numbers for INT64"),
        (lambda: DefaultOutput("s", "BYTES", (1,), (1.0,)), "give strings for BYTES"),
        (lambda: DefaultAnswer((score, score)), "each name once"),
        (lambda: DefaultAnswer(()), "at least one output"),
    ]
    for make, words in bad:
        with pytest.raises(InvalidArgument) as e:
            make()
        assert words in e.value.message
