"""The ``vision`` pipeline program and its writer on the parts that need no extra (quality): outputs renamed,
every part fed from one decode, the same answers as the part alone, config.pbtxt from the tensor specs, and a
broken part refused at write time."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from infer.config.pbtxt import config_from_pbtxt
from infer.errors import InvalidArgument
from infer.runtimes.vision_pipeline import VisionPipeline
from infer.runtimes.vision_programs import QualityProgram
from infer.tasks.vision.pipeline import write_pipeline_model
from infer.tasks.vision.quality import write_quality_model


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    write_quality_model(repo, "vision_quality")
    write_pipeline_model(repo, "vision")
    return repo


def _params(version: Path) -> dict[str, object]:
    params: dict[str, object] = json.loads((version / "kernel.json").read_text())["params"]
    return params


def test_pipeline_answers_as_its_part(repo: Path) -> None:
    china, flower = load_sample_images().images
    payloads = np.array([[_png(china)], [_png(flower[::2, ::2].copy())]], dtype=object)
    pipeline = VisionPipeline(repo / "vision" / "1", _params(repo / "vision" / "1"))
    assert [s.name for s in pipeline.outputs] == ["quality", "quality_components", "size"]
    inputs = {"image": payloads.copy()}
    pipeline.prepare(inputs)
    assert "image" not in inputs and any(k.startswith("quality.") for k in inputs)
    got = pipeline.run(inputs, [s.name for s in pipeline.outputs])

    alone = QualityProgram(repo / "vision_quality" / "1", _params(repo / "vision_quality" / "1"))
    own = {"image": payloads.copy()}
    alone.prepare(own)
    expected = alone.run(own, [s.name for s in alone.outputs])
    np.testing.assert_array_equal(got["quality"], expected["quality"])
    np.testing.assert_array_equal(got["quality_components"], expected["quality_components"])
    np.testing.assert_array_equal(got["size"], [[427, 640], [214, 320]])
    assert "quality_features" not in got  # not one of the pipeline's outputs


def test_corrupt_image_names_its_index(repo: Path) -> None:
    pipeline = VisionPipeline(repo / "vision" / "1", _params(repo / "vision" / "1"))
    china = load_sample_images().images[0]
    with pytest.raises(InvalidArgument, match=r"input 'image'\[1\]"):
        pipeline.prepare({"image": np.array([[_png(china)], [b"not an image"]], dtype=object)})


def test_config_written_from_the_specs(repo: Path) -> None:
    config = config_from_pbtxt((repo / "vision" / "config.pbtxt").read_text(), "vision")
    assert [o.name for o in config.output] == ["quality", "quality_components", "size"]
    assert [list(o.dims) for o in config.output] == [[1], [4], [2]]
    assert config.input[0].name == "image" and config.input[0].data_type == "TYPE_STRING"


def test_missing_or_broken_parts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="none of"):
        write_pipeline_model(tmp_path, "vision")
    write_quality_model(tmp_path, "vision_quality", min_side=0)  # a part that cannot load
    with pytest.raises(ValueError, match="min_side"):
        write_pipeline_model(tmp_path, "vision")
    assert not (tmp_path / "vision").exists() and not (tmp_path / ".vision.writing").exists()
    with pytest.raises(ValueError, match="unknown task"):
        VisionPipeline(tmp_path, {"tasks": {"colour": "x"}})
