"""The canary judge: advance after a healthy stage, promote after the last, roll back on errors or p99."""

from __future__ import annotations

import pytest

from infer.controlplane.canary import judge
from infer.errors import InvalidArgument
from infer.routing.policies import Canary, Target

BASE, NEW = Target("m", "1"), Target("m", "2")


def canary(**kw: object) -> Canary:
    args: dict[str, object] = {"baseline": BASE, "canary": NEW, "stages": ((5, 10), (50, 10), (100, 10)),
                               "max_error_rate": 0.05, "max_p99_ms": 50, "min_requests": 20}
    args.update(kw)
    return Canary(**args)  # type: ignore[arg-type]


def test_waits_for_requests_and_time() -> None:
    c = canary()
    assert judge(c, requests=19, errors=0, p99_ms=1, elapsed_s=99) is None
    assert judge(c, requests=100, errors=0, p99_ms=1, elapsed_s=5) is None
    nxt = judge(c, requests=100, errors=0, p99_ms=1, elapsed_s=10)
    assert nxt is not None and (nxt.status, nxt.stage) == ("RUNNING", 1)
    assert [v.weight for v in nxt.variants()] == [50, 50]


def test_promotes_after_the_last_stage() -> None:
    nxt = judge(canary(stage=2), requests=100, errors=1, p99_ms=1, elapsed_s=10)
    assert nxt is not None and nxt.status == "PROMOTED"
    assert [(v.target, v.weight) for v in nxt.variants()] == [(NEW, 1.0)]
    assert judge(nxt, requests=100, errors=100, p99_ms=1, elapsed_s=99) is None  # done: nothing moves it


@pytest.mark.parametrize("errors,p99,words", [(6, 1.0, "error rate"), (0, 80.0, "p99")])
def test_rolls_back_at_once(errors: int, p99: float, words: str) -> None:
    nxt = judge(canary(stage=1), requests=100, errors=errors, p99_ms=p99, elapsed_s=0.1)
    assert nxt is not None and nxt.status == "ROLLED_BACK" and nxt.reason.startswith(words)
    assert [(v.target, v.weight) for v in nxt.variants()] == [(BASE, 1.0)]


@pytest.mark.parametrize("kw", [{"stages": ()}, {"stages": ((50, 1), (10, 1))}, {"stages": ((5, 0),)},
                                {"max_error_rate": 2}, {"status": "MAYBE"}, {"stage": 3}])
def test_bad_canaries_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        canary(**kw)


def test_an_ab_winner_needs_significance_and_samples() -> None:
    from infer.controlplane.canary import winner
    from infer.routing.experiment import Comparison, VariantStats
    from infer.routing.policies import Deployment, Variant

    dep = Deployment("d", variants=(Variant(BASE, 1), Variant(NEW, 1)), promote_when_p_below=0.01,
                     promote_min_samples=100)
    big = VariantStats(requests=500, outcomes=500)
    rows = [(BASE, big), (NEW, big)]
    assert winner(dep, rows, Comparison("outcome", 0.1, 0.05, 0.15, 0.001)) == NEW
    assert winner(dep, rows, Comparison("outcome", -0.1, -0.15, -0.05, 0.001)) == BASE
    assert winner(dep, rows, Comparison("error_rate", -0.02, -0.03, -0.01, 0.001)) == NEW  # fewer errors wins
    assert winner(dep, rows, Comparison("outcome", 0.1, -0.01, 0.2, 0.2)) is None  # not significant
    few = [(BASE, VariantStats(requests=50, outcomes=50)), (NEW, big)]
    assert winner(dep, few, Comparison("outcome", 0.1, 0.05, 0.15, 0.001)) is None  # too few samples
