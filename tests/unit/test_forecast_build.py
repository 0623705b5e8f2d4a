"""``infer models build forecast`` end to end, small and without the data directory: every candidate's model
written, the card and metrics beside it, and the selector better than seasonal naive on held-out horizons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infer.cli import main
from infer.tasks.forecast.evaluate import table


def test_models_build_forecast_writes_the_models_the_card_and_the_metrics(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "build", "forecast", "--path", str(tmp_path), "--name", "fc", "--small", "--no-data",
                 "--no-peer"]) == 0
    summary = json.loads((tmp_path / "fc" / "metrics.json").read_text())
    kinds = summary["kinds"]
    assert {"snaive", "linear"} <= set(kinds)
    for name in ("fc", *(f"fc_{k}" for k in kinds)):
        assert (tmp_path / name / "config.pbtxt").is_file() and (tmp_path / name / "1" / "forecast.json").is_file()
        spec = json.loads((tmp_path / name / "1" / "forecast.json").read_text())
        assert spec["candidates"] == (kinds if name == "fc" else [name.removeprefix("fc_")])
    card = (tmp_path / "fc" / "MODEL_CARD.md").read_text()
    assert "| auto |" in card and "| snaive |" in card and "| auto |" in capsys.readouterr().out
    lines = {t["method"]: t for t in table(summary)}
    assert lines["auto"]["mase"] < lines["snaive"]["mase"]
    assert 0.5 < lines["auto"]["cover80"] <= 1.0 and summary["series"] >= 10
    if "gbm" in kinds:
        importance = json.loads((tmp_path / "fc" / "1" / "feature_importance.json").read_text())
        assert abs(sum(importance.values()) - 1.0) < 1e-6
        assert "feature_importance" in (tmp_path / "fc_gbm" / "config.pbtxt").read_text()
