"""The ``vision`` pipeline model: the repository's vision models (quality, classifier, detector, OCR) put together
so that one call decodes each image once and returns every task's answer (see
:mod:`infer.runtimes.vision_pipeline`). Each task is still served on its own by the model it was copied from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from infer.tasks.kernel_models import write_task_pipeline

__all__ = ["DEFAULT_PARTS", "write_pipeline_model"]

# task -> the model of the default repository that serves it alone
DEFAULT_PARTS: dict[str, str] = {"quality": "vision_quality", "classify": "vision_classify",
                                 "detect": "vision_moderation", "ocr": "vision_ocr"}


def write_pipeline_model(repo: Path, name: str = "vision", parts: Mapping[str, str] | None = None, *,
                         max_batch_size: int = 16) -> Path:
    """Write ``name`` from the repository's models named in ``parts`` (task -> model, default
    :data:`DEFAULT_PARTS`); parts whose model is not in the repository are left out (the detector needs the
    AGPL ``moderation`` extra, the classifier the ``vision`` extra)."""
    return write_task_pipeline(repo, name, "vision", dict(DEFAULT_PARTS if parts is None else parts),
                               max_batch_size=max_batch_size)
