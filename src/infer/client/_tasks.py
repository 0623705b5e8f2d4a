"""The task helpers' requests and typed answers, as pure functions over the default models' tensors (README:
"Anomaly detection", "Forecasting", "Vision", "NLP"); the clients' ``anomaly``, ``forecast``, ``vision`` and
``nlp`` namespaces send them."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from infer.client._codec import InferResult
from infer.client._errors import InvalidArgument

__all__ = ["ANOMALY_FIELDS", "AnomalyScores", "Embeddings", "Events", "Forecast", "ImageClassifications",
           "ImageQuality", "TextClassifications"]

Arrays: TypeAlias = dict[str, NDArray[Any]]
Events: TypeAlias = "Mapping[str, ArrayLike] | Sequence[Mapping[str, Any]]"
Image: TypeAlias = "bytes | os.PathLike[str]"

# the anomaly pipeline's raw event fields, each sent [N, 1]
ANOMALY_FIELDS: Final[tuple[tuple[str, Any], ...]] = (
    ("timestamp", np.float64), ("user", object), ("namespace", object), ("file_type", object),
    ("content_hash", object), ("file_size", np.int64), ("hash_time_ms", np.float32), ("api_latency_ms", np.float32),
    ("concurrency", np.int32))
ANOMALY_OUTPUTS: Final = ("score", "is_anomalous", "severity", "anomaly_type", "top_features", "detector_probs")
FORECAST_OUTPUTS: Final = ("mean", "lower", "upper", "model", "mase", "smape", "scores")
SCENARIO_OUTPUTS: Final = ("scenario_mean", "scenario_lower", "scenario_upper")
QUALITY_COMPONENTS: Final = ("sharpness", "exposure", "noise", "resolution")


def _text(arr: NDArray[Any]) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]


def _rows(arr: NDArray[Any]) -> list[list[str]]:
    return [_text(row) for row in arr.reshape(len(arr), -1)]


def _need(result: InferResult, *names: str) -> None:
    missing = [n for n in names if n not in result]
    if missing:
        raise InvalidArgument(None, f"model '{result.model_name}' did not answer {missing} (is it the right model?)")


# ---- anomaly -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnomalyScores:
    """Per event: ``score`` (0-1), ``is_anomalous``, ``severity`` (NONE..CRITICAL), ``anomaly_type``, the three
    ``top_features`` that drove it and each detector's probability (``detector_probs`` [N, D])."""

    score: NDArray[np.float32]
    is_anomalous: NDArray[np.bool_]
    severity: list[str]
    anomaly_type: list[str]
    top_features: list[list[str]]
    detector_probs: NDArray[np.float32]
    model_version: str = ""

    def __len__(self) -> int:
        return len(self.score)

    def anomalies(self) -> list[int]:
        """Indices of the events judged anomalous."""
        return [int(i) for i in np.flatnonzero(self.is_anomalous)]


def _column(name: str, kind: Any, values: ArrayLike, count: int | None) -> NDArray[Any]:
    if kind is object:
        flat = np.asarray(values, dtype=object).reshape(-1)
        arr = np.array([v if isinstance(v, bytes | str) else str(v) for v in flat] or [], dtype=object)
    else:
        flat = np.asarray(values, dtype=object).reshape(-1)
        if name == "timestamp":
            flat = np.array([v.timestamp() if isinstance(v, dt.datetime) else v for v in flat], dtype=object)
        try:
            arr = flat.astype(kind)
        except (TypeError, ValueError) as e:
            raise InvalidArgument(None, f"events: field '{name}': {e}") from None
    if count is not None and len(arr) != count:
        raise InvalidArgument(None, f"events: field '{name}' has {len(arr)} values, the first field {count}")
    return arr.reshape(-1, 1)


def anomaly_inputs(events: Events) -> Arrays:
    """The raw-event tensors from columns (``{"user": [...], ...}``) or from records (``[{"user": ...}, ...]``);
    fields other than the model's are left out, ``timestamp`` may be seconds or ``datetime``."""
    if isinstance(events, Mapping):
        columns: Mapping[str, Any] = events
    else:
        columns = {}
        for name, _ in ANOMALY_FIELDS:
            try:
                columns[name] = [e[name] for e in events]
            except KeyError:
                i = next(i for i, e in enumerate(events) if name not in e)
                raise InvalidArgument(None, f"events[{i}]: field '{name}' is missing") from None
    out: Arrays = {}
    count: int | None = None
    for name, kind in ANOMALY_FIELDS:
        if name not in columns:
            raise InvalidArgument(None, f"events: field '{name}' is missing (the model takes "
                                        f"{', '.join(n for n, _ in ANOMALY_FIELDS)})")
        out[name] = _column(name, kind, columns[name], count)
        count = len(out[name])
    if not count:
        raise InvalidArgument(None, "events: no events")
    return out


def anomaly_scores(result: InferResult) -> AnomalyScores:
    _need(result, *ANOMALY_OUTPUTS)
    n = len(result["score"])
    return AnomalyScores(
        score=result["score"].reshape(n), is_anomalous=result["is_anomalous"].reshape(n),
        severity=_text(result["severity"]), anomaly_type=_text(result["anomaly_type"]),
        top_features=_rows(result["top_features"]), detector_probs=result["detector_probs"].reshape(n, -1),
        model_version=result.model_version)


# ---- forecast ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """Per series (rows): ``mean`` [B, H]; ``lower``/``upper`` [B, L, H] at ``levels`` (percent); the candidate
    that answered (``model``) with its backtest ``mase``/``smape`` [B]; every candidate's backtest MASE
    (``scores`` [B, K]); with a scenario, the forecast times it (``scenario_*``, else None)."""

    mean: NDArray[np.float32]
    lower: NDArray[np.float32]
    upper: NDArray[np.float32]
    levels: tuple[float, ...]
    model: list[str]
    mase: NDArray[np.float32]
    smape: NDArray[np.float32]
    scores: NDArray[np.float32]
    scenario_mean: NDArray[np.float32] | None = None
    scenario_lower: NDArray[np.float32] | None = None
    scenario_upper: NDArray[np.float32] | None = None
    model_version: str = ""

    def __len__(self) -> int:
        return len(self.mean)

    def interval(self, level: float) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """``(lower, upper)`` [B, H] at one of ``levels``."""
        if level not in self.levels:
            raise KeyError(f"level {level} is not one of {self.levels}")
        i = self.levels.index(level)
        return self.lower[:, i], self.upper[:, i]


def _history(history: ArrayLike | Sequence[ArrayLike]) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    """Series as ``[B, T]`` float32 right-padded with NaN, and their lengths: one series (1-D), a 2-D array, or a
    list of series of any lengths."""
    if isinstance(history, np.ndarray) or (isinstance(history, Sequence) and history and np.ndim(history[0]) == 0):
        arr = np.asarray(history, np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise InvalidArgument(None, f"history: one series or [series, steps] expected (got shape {arr.shape})")
        return arr, np.full((len(arr), 1), arr.shape[1], np.int32)
    series = [np.asarray(s, np.float32).reshape(-1) for s in history]  # type: ignore[union-attr]
    if not series or min(len(s) for s in series) == 0:
        raise InvalidArgument(None, "history: at least one non-empty series is needed")
    out = np.full((len(series), max(len(s) for s in series)), np.nan, np.float32)
    for row, s in zip(out, series, strict=True):
        row[:len(s)] = s
    return out, np.array([[len(s)] for s in series], np.int32)


def forecast_inputs(history: ArrayLike | Sequence[ArrayLike], horizon: int, levels: Sequence[float],
                    season: int | None, scenario: ArrayLike | None) -> Arrays:
    hist, lengths = _history(history)
    b = len(hist)
    out: Arrays = {"history": hist, "length": lengths, "horizon": np.full((b, 1), int(horizon), np.int32),
                   "levels": np.tile(np.asarray(levels, np.float32).reshape(1, -1), (b, 1))}
    if season is not None:
        out["season"] = np.full((b, 1), int(season), np.int32)
    if scenario is not None:
        s = np.asarray(scenario, np.float32)
        out["scenario"] = np.tile(s.reshape(1, -1), (b, 1)) if s.ndim == 1 else s
    return out


def forecast_of(result: InferResult, levels: Sequence[float]) -> Forecast:
    _need(result, *FORECAST_OUTPUTS)
    b = len(result["mean"])
    return Forecast(
        mean=result["mean"], lower=result["lower"], upper=result["upper"], levels=tuple(float(x) for x in levels),
        model=_text(result["model"]), mase=result["mase"].reshape(b), smape=result["smape"].reshape(b),
        scores=result["scores"].reshape(b, -1), scenario_mean=result.get("scenario_mean"),
        scenario_lower=result.get("scenario_lower"), scenario_upper=result.get("scenario_upper"),
        model_version=result.model_version)


# ---- vision --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageClassifications:
    """Per image: the top-k ``labels`` and their ``scores`` [N, k], the L2-normalised ``embedding`` [N, D] and
    ``size`` (height, width) [N, 2]."""

    labels: list[list[str]]
    scores: NDArray[np.float32]
    embedding: NDArray[np.float32]
    size: NDArray[np.int32]
    model_version: str = ""

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ImageQuality:
    """Per image: ``quality`` (0-1) [N], ``components`` [N, 4] (sharpness, exposure, noise, resolution, each
    0-1) and ``size`` (height, width) [N, 2]."""

    quality: NDArray[np.float32]
    components: NDArray[np.float32]
    size: NDArray[np.int32]
    component_names: tuple[str, ...] = QUALITY_COMPONENTS
    model_version: str = ""

    def __len__(self) -> int:
        return len(self.quality)


def image_inputs(images: Sequence[Image]) -> Arrays:
    """Encoded image files (JPEG, PNG, ...) as bytes, or paths to read them from, as ``image`` [N, 1]."""
    if isinstance(images, bytes | str):
        raise InvalidArgument(None, "images: a list of encoded images (bytes) or paths is expected")
    payloads = [im if isinstance(im, bytes) else Path(im).read_bytes() for im in images]
    if not payloads:
        raise InvalidArgument(None, "images: no images")
    arr = np.empty((len(payloads), 1), dtype=object)
    arr[:, 0] = payloads
    return {"image": arr}


def classifications_of(result: InferResult) -> ImageClassifications:
    _need(result, "labels", "scores", "embedding", "size")
    return ImageClassifications(labels=_rows(result["labels"]), scores=result["scores"],
                                embedding=result["embedding"], size=result["size"],
                                model_version=result.model_version)


def quality_of(result: InferResult) -> ImageQuality:
    _need(result, "quality", "quality_components", "size")
    return ImageQuality(quality=result["quality"].reshape(-1), components=result["quality_components"],
                        size=result["size"], model_version=result.model_version)


# ---- NLP -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Embeddings:
    """Per text: the L2-normalised sentence ``embedding`` [N, D] (cosine similarity is a dot product), ``tokens``
    after truncation [N] and whether it was ``truncated`` [N]."""

    embedding: NDArray[np.float32]
    tokens: NDArray[np.int32]
    truncated: NDArray[np.bool_]
    model_version: str = ""

    def __len__(self) -> int:
        return len(self.embedding)


@dataclass(frozen=True)
class TextClassifications:
    """Per head (e.g. ``sentiment``, ``intent``, ``topic``): each text's label and that label's probability."""

    labels: dict[str, list[str]]
    scores: dict[str, NDArray[np.float32]]
    model_version: str = ""

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.labels)

    def __len__(self) -> int:
        return len(next(iter(self.labels.values()), []))


def text_inputs(texts: Sequence[str | bytes]) -> Arrays:
    """Texts (str sent as UTF-8, bytes as they are) as ``text`` [N, 1]."""
    if isinstance(texts, str | bytes):
        texts = [texts]
    if not texts:
        raise InvalidArgument(None, "texts: no texts")
    arr = np.empty((len(texts), 1), dtype=object)
    arr[:, 0] = list(texts)
    return {"text": arr}


def embeddings_of(result: InferResult) -> Embeddings:
    _need(result, "embedding", "tokens", "truncated")
    return Embeddings(embedding=result["embedding"], tokens=result["tokens"].reshape(-1),
                      truncated=result["truncated"].reshape(-1), model_version=result.model_version)


def text_classifications_of(result: InferResult) -> TextClassifications:
    """Every output ``H`` with an ``H_score`` beside it is a head."""
    heads = [name for name in result if f"{name}_score" in result]
    if not heads:
        raise InvalidArgument(None, f"model '{result.model_name}' answered no classification head (outputs "
                                    f"'H' with 'H_score')")
    return TextClassifications(labels={h: _text(result[h]) for h in heads},
                               scores={h: result[f"{h}_score"].reshape(-1) for h in heads},
                               model_version=result.model_version)
