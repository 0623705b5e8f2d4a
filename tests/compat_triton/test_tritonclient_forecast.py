"""Unmodified tritonclient against the forecasting model: the README's capacity-planning example, executed as
written (only the address changes), and a batch of padded series with every optional input."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as tc
from fixtures import ROOT, ServerProcess

from infer.tasks.forecast.build import BuildConfig, build_forecast


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("forecast") / "repo"
    # the candidates that build in seconds: the selector and intervals are the same code whatever they are
    build_forecast(repo, "forecast", BuildConfig(data_dir=None, peer=False, kinds=("snaive", "linear", "gbm"))
                   .scaled_down())
    with ServerProcess(repo) as srv:
        yield srv


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Forecasting"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's forecasting section has a python example"
    return match.group(1)


def test_the_readme_capacity_planning_example_runs(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code = readme_example().replace("localhost:8001", server.address)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # the README's own example
    plan, result = scope["plan"], scope["result"]
    replicas = plan.replicas  # type: ignore[attr-defined]
    assert replicas.shape == (24,) and (replicas >= 1).all()
    assert (replicas >= plan.expected).all()  # type: ignore[attr-defined]  # planned on the 95% upper bound
    assert result.as_numpy("model")[0, 0] in (b"snaive", b"linear", b"gbm")  # type: ignore[attr-defined]
    assert "replicas per hour" in capsys.readouterr().out


def test_padded_series_with_every_optional_input(server: ServerProcess) -> None:
    client = tc.InferenceServerClient(server.address)
    t = np.arange(400)
    hist = np.full((3, 400), np.nan, np.float32)
    for i, n in enumerate((400, 250, 120)):
        hist[i, :n] = 50 + 10 * np.sin(2 * np.pi * t[:n] / 24) + i
    tensors = {"history": hist, "length": np.array([[400], [250], [120]], np.int32),
               "horizon": np.full((3, 1), 12, np.int32), "levels": np.tile(np.float32([50, 90]), (3, 1)),
               "season": np.full((3, 1), 24, np.int32), "scenario": np.full((3, 12), 2.0, np.float32)}
    inputs = []
    for name, value in tensors.items():
        inputs.append(tc.InferInput(name, list(value.shape), "FP32" if value.dtype == np.float32 else "INT32"))
        inputs[-1].set_data_from_numpy(value)
    result = client.infer("forecast", inputs)
    mean, lower, upper = result.as_numpy("mean"), result.as_numpy("lower"), result.as_numpy("upper")
    assert mean.shape == (3, 12) and lower.shape == upper.shape == (3, 2, 12)
    assert (lower[:, 1] <= lower[:, 0]).all() and (upper[:, 0] <= upper[:, 1]).all()
    np.testing.assert_allclose(result.as_numpy("scenario_mean"), 2 * mean, rtol=1e-6)
    # a pure daily cycle: every row is answered by its season one day back
    np.testing.assert_allclose(mean, [hist[i, n - 24:n - 12] for i, n in enumerate((400, 250, 120))], atol=0.5)
    client.close()
