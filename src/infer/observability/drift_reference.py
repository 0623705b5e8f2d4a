"""A drift reference: the features a model's inputs had at training time, each with the rule that extracts it
from a request (see :mod:`infer.observability.drift` for the rules and how live windows are compared).

:func:`build_reference` runs at training time; :func:`extract` at serve time, on a window of live inputs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infer.core.files import write_atomic
from infer.errors import ModelConfigError

__all__ = [
    "OTHER",
    "REFERENCE_FILE",
    "DriftReference",
    "ReferenceFeature",
    "bin_counts",
    "build_reference",
    "extract",
    "reference_markdown",
    "row_count",
]

Array = npt.NDArray[Any]
F64 = npt.NDArray[np.float64]
REFERENCE_FILE = "drift_reference.json"  # the reference's usual name in a version directory
SCHEMA = "infer.drift_reference"
SCHEMA_VERSION = 1
OTHER = "__other__"  # the pooled categories beyond the top ones
REDUCES = ("value", "column", "mean", "std", "last", "length")
ROW_REDUCES = ("mean", "std", "last")
MAX_COLUMNS = 64  # wider [batch, F] inputs are summarised per row instead
MAX_CATEGORIES = 50  # text inputs with at most this many distinct values are categorical
ID_RATIO = 0.5  # text with more distinct values than this share of rows is an identifier (skipped)
PSI_EPS = 1e-4  # the fraction an empty bin counts as in PSI
MIN_EXPECTED = 5.0  # chi-squared cells expected to hold fewer rows are pooled


# ---- the reference -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReferenceFeature:
    """One feature of a reference: how to extract it and what training saw."""

    name: str
    input: str
    kind: str  # "numeric" | "categorical"
    reduce: str  # see REDUCES
    rows: int  # training rows it was computed from
    column: int | None = None
    length_input: str | None = None  # mean/std/last: the input holding each row's valid length
    edges: F64 = field(default_factory=lambda: np.zeros(0))  # numeric: interior bin edges, increasing
    fractions: F64 = field(default_factory=lambda: np.ones(1))  # numeric: len(edges)+1; categorical: per category
    sample: F64 = field(default_factory=lambda: np.zeros(0))  # numeric: sorted random training values
    mean: float = 0.0
    std: float = 0.0
    quantiles: dict[str, float] = field(default_factory=dict)  # numeric: p01 p05 p50 p95 p99
    categories: tuple[str, ...] = ()  # categorical: the top categories then OTHER

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "input": self.input, "kind": self.kind, "reduce": self.reduce,
                             "rows": self.rows}
        if self.column is not None:
            d["column"] = self.column
        if self.length_input is not None:
            d["length_input"] = self.length_input
        if self.kind == "categorical":
            d["categories"] = {c: _round(f) for c, f in zip(self.categories, self.fractions, strict=True)}
            return d
        d |= {"mean": _round(self.mean), "std": _round(self.std), "quantiles": self.quantiles,
              "edges": [_round(e) for e in self.edges], "fractions": [_round(f) for f in self.fractions],
              "sample": [_round(v) for v in self.sample]}
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ReferenceFeature:
        if not isinstance(d, dict):
            raise ModelConfigError(f"{where}: must be an object")
        name, inp = _get(d, "name", str, where), _get(d, "input", str, where)
        kind, reduce = _get(d, "kind", str, where), _get(d, "reduce", str, where)
        if kind not in ("numeric", "categorical"):
            raise ModelConfigError(f"{where}.kind: {kind!r} is not 'numeric' or 'categorical'")
        if reduce not in REDUCES:
            raise ModelConfigError(f"{where}.reduce: {reduce!r} is not one of {', '.join(REDUCES)}")
        if kind == "categorical" and reduce != "value":
            raise ModelConfigError(f"{where}.reduce: a categorical feature takes 'value', not {reduce!r}")
        rows = _get(d, "rows", int, where)
        column = d.get("column")
        if reduce == "column" and (not isinstance(column, int) or column < 0):
            raise ModelConfigError(f"{where}.column: a 'column' feature needs a column index >= 0")
        length_input = d.get("length_input")
        if length_input is not None and not isinstance(length_input, str):
            raise ModelConfigError(f"{where}.length_input: must be an input name")
        base = {"name": name, "input": inp, "kind": kind, "reduce": reduce, "rows": rows,
                "column": column if reduce == "column" else None, "length_input": length_input}
        if kind == "categorical":
            cats = _get(d, "categories", dict, where)
            if not cats or OTHER not in cats:
                raise ModelConfigError(f"{where}.categories: must map categories to fractions, with {OTHER!r}")
            names = tuple([c for c in cats if c != OTHER] + [OTHER])
            fr = _fractions([cats[c] for c in names], f"{where}.categories")
            return cls(**base, fractions=fr, categories=names)
        edges = _floats(_get(d, "edges", list, where), f"{where}.edges")
        if np.any(np.diff(edges) <= 0):
            raise ModelConfigError(f"{where}.edges: must be strictly increasing")
        fr = _fractions(_get(d, "fractions", list, where), f"{where}.fractions")
        if len(fr) != len(edges) + 1:
            raise ModelConfigError(f"{where}.fractions: {len(fr)} values for {len(edges)} edges (needs edges + 1)")
        sample = np.sort(_floats(_get(d, "sample", list, where), f"{where}.sample"))
        if not len(sample):
            raise ModelConfigError(f"{where}.sample: must hold at least one value")
        quantiles = d.get("quantiles", {})
        if not isinstance(quantiles, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in quantiles.values()):
            raise ModelConfigError(f"{where}.quantiles: must map names to numbers")
        return cls(**base, edges=edges, fractions=fr, sample=sample,
                   mean=_get(d, "mean", float, where), std=_get(d, "std", float, where),
                   quantiles={str(k): float(v) for k, v in quantiles.items()})


def _round(v: float) -> float:
    return float(f"{float(v):.9g}")


def _get(d: dict[str, Any], key: str, kind: type[Any], where: str) -> Any:
    if key not in d:
        raise ModelConfigError(f"{where}.{key}: missing")
    v: Any = d[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or isinstance(v, bool) or (kind is float and not math.isfinite(v)):
        raise ModelConfigError(f"{where}.{key}: expected {kind.__name__}, got {type(v).__name__}")
    return v


def _floats(values: list[Any], where: str) -> F64:
    try:
        a = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise ModelConfigError(f"{where}: must be a list of numbers") from None
    if a.ndim != 1 or not np.isfinite(a).all():
        raise ModelConfigError(f"{where}: must be a flat list of finite numbers")
    return a


def _fractions(values: list[Any], where: str) -> F64:
    a = _floats(values, where)
    if not len(a) or (a < 0).any() or abs(float(a.sum()) - 1.0) > 1e-3:
        raise ModelConfigError(f"{where}: fractions must be >= 0 and sum to 1 (sum {float(a.sum()):.4g})")
    return np.asarray(a / a.sum(), np.float64)


@dataclass(frozen=True)
class DriftReference:
    """The features of a model's training inputs (see the module docstring); JSON on disk."""

    features: tuple[ReferenceFeature, ...]
    rows: int
    created: float = 0.0
    source: str = ""  # what it was built from, for people

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every input the features read (length inputs included), in first-use order."""
        names = [n for f in self.features for n in (f.input, f.length_input) if n]
        return tuple(dict.fromkeys(names))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, "created": self.created, "source": self.source,
                "rows": self.rows, "features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "drift reference") -> DriftReference:
        if not isinstance(doc, dict):
            raise ModelConfigError(f"{where}: must be a JSON object")
        if doc.get("schema") != SCHEMA:
            raise ModelConfigError(f"{where}: field 'schema' must be {SCHEMA!r}, got {doc.get('schema')!r}")
        if doc.get("version") != SCHEMA_VERSION:
            raise ModelConfigError(f"{where}: field 'version' {doc.get('version')!r} is not supported "
                                   f"(this server reads version {SCHEMA_VERSION})")
        raw = doc.get("features")
        if not isinstance(raw, list) or not raw:
            raise ModelConfigError(f"{where}: field 'features' must be a non-empty list")
        features = tuple(ReferenceFeature.from_dict(f, f"{where}: features[{i}]") for i, f in enumerate(raw))
        seen: set[str] = set()
        for i, f in enumerate(features):
            if f.name in seen:
                raise ModelConfigError(f"{where}: features[{i}].name {f.name!r} appears twice")
            seen.add(f.name)
        rows, created = doc.get("rows", 0), doc.get("created", 0.0)
        if not isinstance(rows, int) or not isinstance(created, (int, float)):
            raise ModelConfigError(f"{where}: fields 'rows' (integer) and 'created' (number) are malformed")
        return cls(features, rows, float(created), str(doc.get("source", "")))

    def save(self, path: Path) -> None:
        """Write the reference as JSON (atomically: a temporary file renamed over ``path``)."""
        write_atomic(Path(path), json.dumps(self.to_dict(), separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: Path) -> DriftReference:
        """Read and validate ``path``; ``ModelConfigError`` names the file and the bad field."""
        text = Path(path).read_text()
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise ModelConfigError(f"drift reference {path}: not valid JSON ({e})") from None
        return cls.from_dict(doc, f"drift reference {path}")

    def describe(self) -> list[dict[str, Any]]:
        """One JSON-friendly summary per feature (for model cards: see :func:`reference_markdown`)."""
        out = []
        for f in self.features:
            row: dict[str, Any] = {"feature": f.name, "kind": f.kind, "rule": _rule(f)}
            if f.kind == "categorical":
                top = sorted(zip(f.categories, f.fractions, strict=True), key=lambda cf: -cf[1])
                row["categories"] = {c: round(float(p), 4) for c, p in top[:6] if p > 0}
                row["n_categories"] = len(f.categories) - 1
            else:
                row |= {"mean": f.mean, "std": f.std, **f.quantiles}
            out.append(row)
        return out


def _rule(f: ReferenceFeature) -> str:
    if f.reduce == "column":
        return f"{f.input}[:, {f.column}]"
    if f.reduce in ROW_REDUCES:
        return f"{f.reduce} of each {f.input} row" + (f" (within {f.length_input})" if f.length_input else "")
    return f"byte length of {f.input}" if f.reduce == "length" else f.input


def reference_markdown(described: Sequence[Mapping[str, Any]], rows: int | None = None) -> str:
    """A model-card table of :meth:`DriftReference.describe` rows."""
    lines = [f"Recorded from {rows:,} training rows.", ""] if rows else []
    lines += ["| feature | rule | reference |", "|---|---|---|"]
    for d in described:
        if d.get("kind") == "categorical":
            cats = d.get("categories", {})
            ref = ", ".join(f"{c} {100 * p:.1f}%" for c, p in cats.items())
            more = int(d.get("n_categories", 0)) - len(cats)
            ref += f" (+{more} more)" if more > 0 else ""
        else:
            ref = (f"mean {_g(d.get('mean'))}, sd {_g(d.get('std'))}; p05 {_g(d.get('p05'))}, "
                   f"median {_g(d.get('p50'))}, p95 {_g(d.get('p95'))}")
        lines.append(f"| {d.get('feature')} | {d.get('rule')} | {ref} |")
    return "\n".join(lines) + "\n"


def _g(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4g}"


# ---- extraction -----------------------------------------------------------------------------------


def row_count(a: Array) -> int:
    return int(a.shape[0]) if a.ndim else 1


def _label(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (np.floating, float)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _labels(a: Array) -> tuple[list[Any], Array]:
    """Distinct values of a flat array and each element's index into them."""
    try:
        uniq, inverse = np.unique(a, return_inverse=True)
        return list(uniq), inverse.reshape(-1)
    except TypeError:  # values that do not sort together (bytes beside str, None)
        index: dict[Any, int] = {}
        codes = np.fromiter((index.setdefault(_label(v), len(index)) for v in a), np.int64, count=len(a))
        return list(index), codes


def _byte_lengths(a: Array) -> F64:
    return np.fromiter((len(v) if isinstance(v, bytes) else len(str(v).encode()) for v in a), np.float64,
                       count=len(a))


def _row_summaries(x: Array, lengths: Array | None) -> dict[str, F64]:
    n = row_count(x)
    m = np.asarray(x, np.float64).reshape(n, -1)
    width = m.shape[1]
    if not width:
        return {"mean": np.full(n, np.nan), "std": np.full(n, np.nan), "last": np.full(n, np.nan)}
    if lengths is None or row_count(lengths) != n:
        return {"mean": m.mean(axis=1), "std": m.std(axis=1), "last": m[:, -1]}
    given = np.asarray(lengths, np.float64).reshape(n, -1)[:, 0]
    ln = np.clip(np.nan_to_num(given, nan=width), 1, max(width, 1)).astype(np.int64)
    mask = np.arange(width)[None, :] < ln[:, None]
    mean = np.where(mask, m, 0.0).sum(axis=1) / ln
    var = np.where(mask, (m - mean[:, None]) ** 2, 0.0).sum(axis=1) / ln
    return {"mean": mean, "std": np.sqrt(var), "last": m[np.arange(n), ln - 1]}


def extract(reference: DriftReference, inputs: Mapping[str, Array]) -> dict[str, Array]:
    """Each feature's values in ``inputs`` (one per row), by the rules the reference recorded.

    Numeric features give float64 values; categorical ones give int64 codes indexing ``feature.categories``
    (the last, ``__other__``, for values training did not keep). A feature whose input is missing, or does not
    fit its rule (too narrow for its column, text where numbers were recorded), is left out.
    """
    out: dict[str, Array] = {}
    summaries: dict[str, dict[str, F64]] = {}
    for f in reference.features:
        if f.input not in inputs:
            continue
        try:
            values = _extract_one(f, inputs, summaries)
        except (TypeError, ValueError, IndexError):  # a dtype or shape the rule cannot read
            continue
        if values is not None:
            out[f.name] = values
    return out


def _extract_one(f: ReferenceFeature, inputs: Mapping[str, Array], summaries: dict[str, dict[str, F64]]
                 ) -> Array | None:
    x = np.asarray(inputs[f.input])
    n = row_count(x)
    if f.reduce in ROW_REDUCES:
        if f.input not in summaries:
            lengths = inputs.get(f.length_input) if f.length_input else None
            summaries[f.input] = _row_summaries(x, None if lengths is None else np.asarray(lengths))
        return summaries[f.input][f.reduce]
    flat = x.reshape(n, -1) if n else x.reshape(0, 1)
    if flat.shape[1] == 0 or (f.reduce == "column" and (f.column or 0) >= flat.shape[1]):
        return None
    col = flat[:, f.column if f.reduce == "column" else 0]
    if f.kind == "categorical":
        uniq, inverse = _labels(col)
        index = {c: i for i, c in enumerate(f.categories)}
        other = len(f.categories) - 1
        lut = np.array([index.get(_label(u), other) for u in uniq], np.int64)
        return lut[inverse] if len(uniq) else np.zeros(0, np.int64)
    if f.reduce == "length":
        return _byte_lengths(col)
    return col.astype(np.float64)


# ---- building a reference ---------------------------------------------------------------------------


def bin_counts(edges: F64, values: F64) -> npt.NDArray[np.intp]:
    """Values per bin of the interior ``edges``, bin i holding ``edges[i-1] < v <= edges[i]`` (np.digitize with
    ``right=True``; not np.histogram, whose bins close on the left): the one rule training and serving share."""
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def _numeric_feature(name: str, inp: str, reduce: str, values: F64, bins: int, sample_size: int,
                     rng: np.random.Generator, **where: Any) -> ReferenceFeature | None:
    v = values[np.isfinite(values)]
    if not len(v):
        return None
    edges = np.unique(np.quantile(v, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    counts = bin_counts(edges, v)
    sample = np.sort(v if len(v) <= sample_size else rng.choice(v, sample_size, replace=False))
    qs = dict(zip(("p01", "p05", "p50", "p95", "p99"), np.quantile(v, [0.01, 0.05, 0.5, 0.95, 0.99]), strict=True))
    return ReferenceFeature(name, inp, "numeric", reduce, len(v), edges=edges, fractions=counts / len(v),
                            sample=sample, mean=float(v.mean()), std=float(v.std()),
                            quantiles={k: _round(q) for k, q in qs.items()}, **where)


def _categorical_feature(name: str, inp: str, col: Array, max_categories: int) -> ReferenceFeature:
    uniq, inverse = _labels(col)
    counts = np.bincount(inverse, minlength=len(uniq)) if len(uniq) else np.zeros(0, np.int64)
    merged: dict[str, int] = {}
    for u, c in zip(uniq, counts, strict=True):  # labels can collide (b"1" and 1): merge them
        key = _label(u)
        merged[key] = merged.get(key, 0) + int(c)
    top = sorted(merged.items(), key=lambda kc: -kc[1])
    kept, rest = top[:max_categories], sum(c for _, c in top[max_categories:])
    total = max(len(col), 1)
    cats = tuple([c for c, _ in kept] + [OTHER])
    fr = np.array([c for _, c in kept] + [rest], np.float64) / total
    return ReferenceFeature(name, inp, "categorical", "value", len(col), fractions=fr, categories=cats)


def _text_rule(col: Array, declared: bool, text: bool) -> str | None:
    """'categorical', 'length' or None (an identifier: skipped) for a BYTES input with one value per row."""
    if declared:
        return "categorical"
    if text:
        return "length"
    distinct = len(_labels(col)[0])
    if distinct <= MAX_CATEGORIES:
        return "categorical"
    if distinct > ID_RATIO * len(col):
        probe = col[: min(len(col), 500)]
        spaced = np.mean([(b" " in v) if isinstance(v, bytes) else (" " in str(v)) for v in probe])
        return "length" if spaced > 0.5 else None  # free text has spaces; hashes, ids and names do not
    return "length"


def build_reference(
    inputs: Mapping[str, Array], *, categorical: Iterable[str] = (), ignore: Iterable[str] = (),
    names: Mapping[str, Sequence[str]] | None = None, summarize: Iterable[str] = (), text: Iterable[str] = (),
    lengths: Mapping[str, str] | None = None, sample_size: int = 2000, bins: int = 10,
    max_categories: int = MAX_CATEGORIES, seed: int = 0, source: str = "",
) -> DriftReference:
    """A reference from training ``inputs`` (name -> array, rows first), choosing each input's rule:

    one element per row: ``value`` (numeric; categorical when declared, or BYTES with <= 50 distinct values);
    other BYTES: byte ``length`` (declared ``text``, or spaced free text), skipped when it looks like an
    identifier (more distinct values than half the rows); [N, F <= 64]: a ``column`` feature each (named
    ``names[input][j]``, else ``input[j]``); wider rows, more dimensions or ``summarize``: ``mean``/``std``/``last``
    per row (``lengths[input]`` names the input with each right-padded row's length).
    """
    if not 2 <= bins <= 1000 or not 10 <= sample_size <= 1_000_000:
        raise ValueError(f"bins {bins} (2..1000) or sample_size {sample_size} (10..1e6) out of range")
    rng = np.random.default_rng(seed)
    cat, skip, summ, txt = set(categorical), set(ignore), set(summarize), set(text)
    names, lengths = names or {}, lengths or {}
    feats: list[ReferenceFeature | None] = []
    n_rows = 0
    for inp, raw in inputs.items():
        if inp in skip or inp in lengths.values():
            continue
        x = np.asarray(raw)
        n = row_count(x)
        if n == 0:
            continue
        n_rows = max(n_rows, n)
        flat = x.reshape(n, -1)
        width = flat.shape[1]
        if x.dtype.kind in "OSU":
            rule = _text_rule(flat[:, 0], inp in cat, inp in txt) if width == 1 else None
            if rule == "categorical":
                feats.append(_categorical_feature(inp, inp, flat[:, 0], max_categories))
            elif rule == "length":
                feats.append(_numeric_feature(f"{inp}.length", inp, "length", _byte_lengths(flat[:, 0]),
                                              bins, sample_size, rng))
        elif width == 1 and inp in cat:
            feats.append(_categorical_feature(inp, inp, flat[:, 0], max_categories))
        elif width == 1 and inp not in summ:
            feats.append(_numeric_feature(inp, inp, "value", flat[:, 0].astype(np.float64), bins, sample_size, rng))
        elif x.ndim == 2 and width <= MAX_COLUMNS and inp not in summ:
            given = list(names.get(inp, ()))
            for j in range(width):
                fname = given[j] if j < len(given) else f"{inp}[{j}]"
                feats.append(_numeric_feature(fname, inp, "column", flat[:, j].astype(np.float64), bins,
                                              sample_size, rng, column=j))
        else:
            ln_name = lengths.get(inp)
            ln = inputs.get(ln_name) if ln_name else None
            rows = _row_summaries(x, None if ln is None else np.asarray(ln))
            for reduce in ROW_REDUCES:
                feats.append(_numeric_feature(f"{inp}.{reduce}", inp, reduce, rows[reduce], bins, sample_size,
                                              rng, length_input=ln_name))
    kept = tuple(f for f in feats if f is not None)
    if not kept:
        raise ValueError("build_reference: no input gave a feature (all ignored, empty or identifiers)")
    return DriftReference(kept, n_rows, time.time(), source)
