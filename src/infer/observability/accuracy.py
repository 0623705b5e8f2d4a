"""Online accuracy: a served version's predictions matched with the ground truth callers report later.

A request that carries an ``id`` leaves its prediction with the version's :class:`AccuracyTracker`
(:meth:`~AccuracyTracker.remember`, on the hot path: one numpy operation and a dictionary insert, the oldest of
``capacity`` predictions forgotten first). A caller who later learns the truth reports it by that id
(:meth:`~AccuracyTracker.report`): the pair is folded into time slots of sufficient statistics (a confusion
count per (truth, prediction) pair for classification; absolute-error sum, squared-error sum and count for
regression), and the prediction is forgotten, so each one is credited once. :meth:`~AccuracyTracker.summary`
turns the slots of a window into accuracy, precision, recall, F1 (binary for the positive class when there are
two classes, macro-averaged over the classes seen otherwise, as scikit-learn's defaults: 0 where a ratio is
undefined), or MAE and RMSE, plus one point per slot for a chart. Reports are placed in time by when they
arrive, not by when the prediction was made.

Per-version parameters (config.pbtxt ``parameters``, read by :meth:`AccuracyConfig.from_params`):
``infer.accuracy.kind`` (``classification`` | ``regression``), ``infer.accuracy.output`` (the output tensor
holding the prediction), ``infer.accuracy.labels`` (comma list naming class indices),
``infer.accuracy.positive`` (the positive class; default ``1``/``true``, or the second label of two).
Without them an anomaly model (outputs ``score`` + ``severity`` + ``is_anomalous``) is tracked as binary
classification on ``is_anomalous`` and a forecaster (``mean`` + ``lower`` + ``upper``) as regression on ``mean``.

How a prediction is read from the output: integers, booleans and strings are the class itself (an index named by
``labels`` when given); floating-point scores are argmax'ed over the last axis, and a single probability column is
thresholded at 0.5. Truth labels are text: class names, integers (``"1"``, ``"01"`` and ``"1.0"`` are one class)
or ``true``/``false`` (the classes ``1``/``0``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from infer.core.lru import BoundedLRU
from infer.errors import InvalidArgument, ModelConfigError, NotFound

__all__ = ["AccuracyConfig", "AccuracyTracker", "PredictionIndex", "check_truth"]

Array = npt.NDArray[Any]
KINDS: Final = ("classification", "regression")
_PREFIX: Final = "infer.accuracy."
_KEYS: Final = frozenset(_PREFIX + k for k in ("kind", "output", "labels", "positive"))
# outputs that usually hold a classifier's answer, tried in order when infer.accuracy.output is not set
_CLASS_OUTPUTS: Final = ("label", "labels", "class", "classes", "prediction", "predictions", "is_anomalous",
                         "probabilities", "probs", "scores", "logits", "output")
_REGRESSION_OUTPUTS: Final = ("mean", "prediction", "predictions", "value", "output")
MAX_CLASSES: Final = 1024  # distinct classes a tracker keeps counts for (a flood of made-up labels is refused)
MAX_LABEL_CHARS: Final = 1024
RETENTION_S: Final = 7200.0  # slots kept for windows (an hour and more)


def _canon(text: str) -> str:
    """One spelling per class: ``true``/``false`` -> ``1``/``0``, integers without sign noise or ``.0``."""
    s = text.strip()
    low = s.lower()
    if low == "true":
        return "1"
    if low == "false":
        return "0"
    if s[:1].isdigit() or s[:1] in "+-":
        try:
            return str(int(s))
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            return s
        if f.is_integer():
            return str(int(f))
    return s


def check_truth(labels: Sequence[str] | None, values: Sequence[float] | None) -> None:
    """A ground-truth report's shape, before its id is looked up: exactly one of ``labels`` / ``values``, and
    ``values`` finite. Raises InvalidArgument naming the field (the control plane calls it first, the tracker
    again for callers that reach it directly)."""
    if bool(labels) == bool(values):
        raise InvalidArgument("labels / values: give exactly one of them (labels for classification, values "
                              "for regression)")
    if values and not np.isfinite(np.asarray(values, dtype=np.float64)).all():
        raise InvalidArgument("values: must be finite numbers")


def _finite_int(v: float) -> bool:
    return math.isfinite(v) and float(v).is_integer()


@dataclass(frozen=True, slots=True)
class AccuracyConfig:
    """What a version's accuracy is measured on; :meth:`from_params` reads it from the model's parameters."""

    kind: str  # "classification" | "regression"
    output: str  # the output tensor holding the prediction
    labels: tuple[str, ...] = ()  # class names by index (classification)
    positive: str = ""  # the positive class; "" = "1", or the second of two labels

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelConfigError(f"parameter '{_PREFIX}kind': {self.kind[:40]!r} is not one of {', '.join(KINDS)}")
        if not self.output:
            raise ModelConfigError(f"parameter '{_PREFIX}output': names no output")
        if self.kind == "regression" and (self.labels or self.positive):
            raise ModelConfigError(f"parameter '{_PREFIX}labels' / '{_PREFIX}positive': only for classification")
        if len(set(self.labels)) != len(self.labels) or any(not x for x in self.labels):
            raise ModelConfigError(f"parameter '{_PREFIX}labels': names must be distinct and not empty")

    @classmethod
    def from_params(cls, params: Mapping[str, str], output_names: Sequence[str]) -> AccuracyConfig | None:
        """The version's config, or None when it asks for none and its outputs imply none.

        Raises ModelConfigError naming the parameter at fault.
        """
        unknown = sorted(k for k in params if k.startswith(_PREFIX) and k not in _KEYS)
        if unknown:
            raise ModelConfigError(f"parameter '{unknown[0][:80]}': unknown (known: {', '.join(sorted(_KEYS))})")
        names = list(output_names)
        kind = params.get(_PREFIX + "kind", "").strip().lower()
        output = params.get(_PREFIX + "output", "").strip()
        family = _family_default(set(names))
        if not kind:
            if family is None:
                if output or params.get(_PREFIX + "labels") or params.get(_PREFIX + "positive"):
                    raise ModelConfigError(f"parameter '{_PREFIX}kind': required with the other "
                                           f"{_PREFIX}* parameters (classification or regression)")
                return None
            kind = family[0]
        if kind not in KINDS:
            raise ModelConfigError(f"parameter '{_PREFIX}kind': {kind[:40]!r} is not one of {', '.join(KINDS)}")
        if not output:
            output = _default_output(kind, names, family)
        elif names and output not in names:
            raise ModelConfigError(f"parameter '{_PREFIX}output': {output[:80]!r} is not an output of the model "
                                   f"({', '.join(names)[:200]})")
        labels = tuple(x.strip() for x in params.get(_PREFIX + "labels", "").split(",") if x.strip())
        positive = params.get(_PREFIX + "positive", "").strip()
        return cls(kind, output, labels, _canon(positive) if positive else "")


def _family_default(names: set[str]) -> tuple[str, str] | None:
    if {"score", "severity"} <= names and "is_anomalous" in names:
        return "classification", "is_anomalous"
    if {"mean", "lower", "upper"} <= names:
        return "regression", "mean"
    return None


def _default_output(kind: str, names: list[str], family: tuple[str, str] | None) -> str:
    if family is not None and family[0] == kind:
        return family[1]
    if len(names) == 1:
        return names[0]
    for candidate in _CLASS_OUTPUTS if kind == "classification" else _REGRESSION_OUTPUTS:
        if candidate in names:
            return candidate
    raise ModelConfigError(f"parameter '{_PREFIX}output': required, the model has several outputs "
                           f"({', '.join(names)[:200]}) and none is an obvious prediction")


class _Stats:
    """Sufficient statistics of one slot (or of all time)."""

    __slots__ = ("abs_sum", "confusion", "count", "sq_sum")

    def __init__(self) -> None:
        self.confusion: Counter[tuple[str, str]] = Counter()  # (truth, prediction) -> rows
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        self.count = 0

    def add(self, other: _Stats) -> None:
        self.confusion.update(other.confusion)
        self.abs_sum += other.abs_sum
        self.sq_sum += other.sq_sum
        self.count += other.count


class AccuracyTracker:
    """Predictions by request id (bounded, oldest forgotten first) and time-slotted accuracy statistics.

    ``remember`` runs on the event loop for every request that carried an id; ``report`` on a control-plane
    call; ``summary`` also at scrape time, possibly from another thread (the statistics are under a lock).
    """

    def __init__(self, config: AccuracyConfig, clock: Callable[[], float] = time.time, capacity: int = 100_000,
                 slot_s: float = 60.0, retention_s: float = RETENTION_S) -> None:
        if not slot_s > 0 or not retention_s >= slot_s:
            raise ValueError("slot_s > 0 and retention_s >= slot_s")
        self.config = config
        self._clock = clock
        self._slot_s = float(slot_s)
        self._keep = math.ceil(retention_s / slot_s)
        self._pending: BoundedLRU[Array] = BoundedLRU(capacity)
        self._slots: dict[int, _Stats] = {}
        self._total = _Stats()
        self._classes: set[str] = set(config.labels)
        self._lock = threading.Lock()
        self._label_set = frozenset(config.labels)
        self._positive = self._key(config.positive) if config.positive else (
            config.labels[1] if len(config.labels) == 2 else "1")

    # ---- the hot path -------------------------------------------------------------------------

    def remember(self, request_id: str, outputs: Mapping[str, Array]) -> None:
        """Keep ``request_id``'s prediction (one numpy operation over its output); no-op without that output."""
        a = outputs.get(self.config.output)
        if a is None:
            return
        try:
            pred = self._prediction(np.asarray(a))
        except (TypeError, ValueError):  # an output that holds no prediction of this kind: nothing to remember
            return
        self._pending.put(request_id, pred)

    def _prediction(self, a: Array) -> Array:
        if self.config.kind == "regression":
            return np.array(a, dtype=np.float64)  # a copy: a view would keep the whole batch alive
        if a.dtype.kind == "f":
            if a.ndim >= 2 and a.shape[-1] > 1:
                return np.asarray(np.argmax(a, axis=-1))
            return a.reshape(a.shape[:-1] if a.ndim >= 2 else a.shape) >= 0.5
        if a.ndim >= 2 and a.shape[-1] == 1:
            a = a[..., 0]
        return np.array(a)

    @property
    def pending(self) -> int:
        """Predictions remembered and not yet reported."""
        return len(self._pending)

    # ---- ground truth ---------------------------------------------------------------------------

    def report(self, request_id: str, labels: Sequence[str] | None = None,
               values: Sequence[float] | None = None) -> int:
        """Credit the truth of ``request_id``'s rows; return how many rows the request had.

        ``labels`` (classification; integral ``values`` are taken as labels too) or ``values`` (regression), one
        per predicted value, row-major. NotFound when the id is unknown, already reported or forgotten;
        InvalidArgument (naming ``labels`` / ``values``) on a count or kind mismatch, and nothing is credited.
        """
        check_truth(labels, values)
        pred = self._pending.get(request_id)
        if pred is None:
            raise NotFound(f"request_id '{request_id[:200]}': no prediction remembered for it (never answered "
                           "with this id, already reported, or forgotten)")
        if self.config.kind == "regression":
            stats = self._regression(pred, labels, values)
        else:
            stats = self._classification(pred, labels, values)
        self._pending.pop(request_id)
        slot = int(self._clock() // self._slot_s)
        with self._lock:
            target = self._slots.get(slot)
            if target is None:
                target = self._slots[slot] = _Stats()
                for old in [s for s in self._slots if s <= slot - self._keep]:
                    del self._slots[old]
            target.add(stats)
            self._total.add(stats)
        return int(pred.shape[0]) if pred.ndim else 1

    def _regression(self, pred: Array, labels: Sequence[str] | None, values: Sequence[float] | None) -> _Stats:
        if labels:
            raise InvalidArgument("labels: this model's accuracy is measured by regression; report numbers in "
                                  "values")
        truth = np.asarray(values, dtype=np.float64).reshape(-1)
        if truth.size != pred.size:
            raise InvalidArgument(f"values: {truth.size} given, the prediction has {pred.size} "
                                  f"({' x '.join(map(str, pred.shape)) or 'one'}, row-major)")
        err = pred.reshape(-1) - truth
        err = err[np.isfinite(err)]  # a prediction that was NaN is left out, not credited
        stats = _Stats()
        stats.abs_sum = float(np.abs(err).sum())
        stats.sq_sum = float(np.square(err).sum())
        stats.count = int(err.size)
        return stats

    def _classification(self, pred: Array, labels: Sequence[str] | None,
                        values: Sequence[float] | None) -> _Stats:
        if values:
            if not all(_finite_int(v) for v in values):
                raise InvalidArgument("values: this model's accuracy is measured by classification; report "
                                      "labels (or integral class numbers in values)")
            truth = [str(int(v)) for v in values]
            field = "values"
        else:
            truth, field = [str(x) for x in labels or ()], "labels"
        if len(truth) != pred.size:
            raise InvalidArgument(f"{field}: {len(truth)} given, the request predicted {pred.size} "
                                  f"(one per row{', row-major' if pred.ndim > 1 else ''})")
        if any(len(x) > MAX_LABEL_CHARS or not x.strip() for x in truth):
            raise InvalidArgument(f"{field}: every label must be non-empty and at most {MAX_LABEL_CHARS} characters")
        truth_keys = [self._key(x) for x in truth]
        pred_keys = self._pred_keys(pred)
        new = (set(truth_keys) | set(pred_keys)) - self._classes
        if new and len(self._classes) + len(new) > MAX_CLASSES:
            raise InvalidArgument(f"{field}: more than {MAX_CLASSES} distinct classes for one model version")
        if new:
            with self._lock:
                self._classes |= new
        stats = _Stats()
        stats.confusion.update(zip(truth_keys, pred_keys, strict=True))
        stats.count = len(truth_keys)
        return stats

    def _key(self, text: str) -> str:
        """A label's class: canonical spelling, an index named through ``labels``."""
        c = _canon(text)
        names = self.config.labels
        if names and c not in self._label_set and c.isdigit() and int(c) < len(names):
            return names[int(c)]
        return c

    def _pred_keys(self, pred: Array) -> list[str]:
        flat = pred.reshape(-1)
        if flat.dtype.kind == "b":
            texts = ["1" if b else "0" for b in flat.tolist()]
        elif flat.dtype.kind in "iu":
            texts = [str(i) for i in flat.tolist()]
        else:
            texts = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat.tolist()]
        return [self._key(t[:MAX_LABEL_CHARS]) for t in texts]

    # ---- reading ---------------------------------------------------------------------------------

    def summary(self, window_s: float = 0.0) -> dict[str, Any]:
        """``kind, samples, accuracy, precision, recall, f1, mae, rmse, series`` over the last ``window_s``
        seconds (0: since the version was loaded; windows reach back at most the retention, two hours).

        ``samples`` counts compared values (rows, or rows x horizon for a forecaster); figures are None without
        samples or when they do not apply to the kind. ``series``: one ``{"t", "value"}`` per slot with reports
        (F1 or MAE), ``t`` the slot's start in Unix seconds, oldest first.
        """
        now = self._clock()
        with self._lock:
            first = int((now - window_s) // self._slot_s) if window_s > 0 else int(now // self._slot_s) - self._keep + 1
            slots = sorted((i, s) for i, s in self._slots.items() if i >= first)
            stats = self._total
            if window_s > 0:
                stats = _Stats()
                for _, s in slots:
                    stats.add(s)
            out = self._figures(stats)
            out["series"] = [{"t": i * self._slot_s, "value": self._figures(s)["f1" if self._is_class else "mae"]}
                             for i, s in slots if s.count]
        return out

    @property
    def _is_class(self) -> bool:
        return self.config.kind == "classification"

    def _figures(self, s: _Stats) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.config.kind, "samples": s.count, "accuracy": None, "precision": None,
                               "recall": None, "f1": None, "mae": None, "rmse": None}
        if not s.count:
            return out
        if not self._is_class:
            out["mae"] = s.abs_sum / s.count
            out["rmse"] = math.sqrt(s.sq_sum / s.count)
            return out
        tp: Counter[str] = Counter()
        predicted: Counter[str] = Counter()
        actual: Counter[str] = Counter()
        for (t, p), n in s.confusion.items():
            actual[t] += n
            predicted[p] += n
            if t == p:
                tp[t] += n
        out["accuracy"] = sum(tp.values()) / s.count
        binary = len(self._classes | {self._positive}) <= 2  # else macro-averaged over the classes seen
        classes = [self._positive] if binary else sorted(actual.keys() | predicted.keys())
        scores = [_prf(tp[c], predicted[c], actual[c]) for c in classes]
        out["precision"], out["recall"], out["f1"] = (sum(x[i] for x in scores) / len(scores) for i in range(3))
        return out


def _prf(tp: int, predicted: int, actual: int) -> tuple[float, float, float]:
    """Precision, recall and F1 of one class (0 where undefined, as scikit-learn's default)."""
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class PredictionIndex(BoundedLRU[tuple[str, str]]):
    """Which (model, version) answered a request id: the hub's router for ground-truth reports, bounded
    (the oldest forgotten first). Event-loop only."""

    __slots__ = ()

    def __init__(self, capacity: int = 1_000_000) -> None:
        super().__init__(capacity)
