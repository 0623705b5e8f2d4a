"""The default model repository: models the engine can serve with no repository configured.

The repository lives in ``$INFER_HOME/model_repository`` (``~/.cache/infer/model_repository`` when
``INFER_HOME`` is unset) and is built on first use by :func:`ensure_default_repository`.  It is built in
a temporary directory beside its final place and renamed into place, so a crash or a concurrent build
never leaves a half-written repository behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = [
    "DEFAULT_BUILDERS",
    "build_default_repository",
    "default_repository_path",
    "ensure_default_repository",
]

# Bump when a builder's output changes, so that existing default repositories are rebuilt.
REPOSITORY_VERSION: Final = 9
MARKER: Final = ".infer-default-repository.json"


def _anomaly(repo: Path) -> list[str]:
    """The anomaly pipeline (an ensemble of six stage models), trained on generated event streams."""
    from infer.tasks.anomaly.pipeline import BuildConfig, build_pipeline

    build_pipeline(repo, "anomaly", BuildConfig(), progress=False)
    return sorted(p.name for p in repo.iterdir() if p.is_dir() and p.name.startswith("anomaly"))


def _forecast(repo: Path) -> list[str]:
    """``forecast`` (the backtest selector) and ``forecast_<kind>``, trained on package and generated series
    (never on files outside the package: a user's machine has none); candidates whose build dependency is
    missing are left out (see :mod:`infer.tasks.forecast.build`)."""
    from infer.tasks.forecast.build import BuildConfig, build_forecast

    build_forecast(repo, "forecast", BuildConfig(data_dir=None, peer=False).scaled_down())
    return sorted(p.name for p in repo.iterdir() if p.is_dir() and p.name.startswith("forecast"))


def _vision(repo: Path) -> list[str]:
    """``vision_quality`` (sharpness, exposure, noise and resolution of encoded images; no training); the
    ImageNet classifier (``vision_classify`` INT8 and ``vision_classify_fp32``) where the ``vision`` and ``torch``
    extras are installed; ``vision_ocr`` with the ``ocr`` extra; ``vision_moderation`` with the ``moderation``
    extra (AGPL-3.0 model files: only where the user installed it); ``vision``, the pipeline of those present."""
    from infer.tasks.vision.build import build_vision

    build_vision(repo, "vision", evaluate=False)
    return sorted(p.name for p in repo.iterdir() if p.is_dir() and p.name.startswith("vision"))


def _nlp(repo: Path) -> list[str]:
    """The NLP family without labelled data (a user's machine has none): keywords and topics fitted on a corpus
    Python ships; language identification with py3langid installed; the sentence encoder, similarity and
    summaries with the ``nlp`` and ``torch`` extras; entities with the ``ner`` extra; ``nlp``, the pipeline.
    The classification heads need the labelled sets: ``infer models build nlp --data DIR``."""
    from infer.tasks.nlp.build import build_nlp

    build_nlp(repo, "nlp", data_dir=None, evaluate=False)
    return sorted(p.name for p in repo.iterdir() if p.is_dir() and p.name.startswith("nlp"))


# family -> function writing its models into the repository and returning their names
DEFAULT_BUILDERS: dict[str, Callable[[Path], list[str]]] = {"anomaly": _anomaly, "forecast": _forecast,
                                                            "vision": _vision, "nlp": _nlp}


def build_default_repository(path: Path) -> list[str]:
    """Build every default model into ``path`` (created if needed); return the model names."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for family in DEFAULT_BUILDERS:
        names += DEFAULT_BUILDERS[family](path)
    files = sorted(str(f.relative_to(path)) for name in names for f in (path / name).rglob("*") if f.is_file())
    marker = {"version": REPOSITORY_VERSION, "families": list(DEFAULT_BUILDERS), "models": names, "files": files}
    (path / MARKER).write_text(json.dumps(marker) + "\n")
    return names


def default_repository_path() -> Path:
    """``$INFER_HOME/model_repository`` if ``INFER_HOME`` is set, else ``~/.cache/infer/model_repository``."""
    home = os.environ.get("INFER_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "infer"
    return base / "model_repository"


def _is_complete(path: Path) -> bool:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("version") != REPOSITORY_VERSION:
        return False
    if marker.get("families") != list(DEFAULT_BUILDERS) or not marker.get("models"):
        return False
    models_ok = all((path / name / "config.pbtxt").is_file() and (path / name / "1").is_dir()
                    for name in marker["models"])
    return models_ok and all((path / f).is_file() for f in marker.get("files", []))


def _discard(path: Path) -> None:
    """Remove ``path``, first renaming it aside so nobody sees it half-deleted."""
    aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def ensure_default_repository() -> Path:
    """Return :func:`default_repository_path`, building it first if it is absent, incomplete or stale."""
    target = default_repository_path()
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        build_default_repository(staging)
        os.chmod(staging, 0o755)
        for _ in range(3):
            if _is_complete(target):  # a concurrent builder finished first
                break
            if target.exists():
                _discard(target)
            try:
                os.rename(staging, target)  # atomic; fails if target reappeared meanwhile
                return target
            except OSError:
                continue
        if not _is_complete(target):
            raise RuntimeError(f"could not install the default model repository at {target}")
        return target
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
