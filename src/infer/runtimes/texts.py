"""Texts sent as V2 BYTES (UTF-8), decoded one element at a time: the first that is not UTF-8 raises
InvalidArgument naming its index (``input 'text'[2]: not valid UTF-8 ...``), so the request that carried it fails
alone. NLP programs split their ``prepare`` into :func:`decode_request` and ``prepare_texts(texts, inputs)``, so the
``nlp`` pipeline decodes once for all its tasks."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from infer.errors import InvalidArgument
from infer.runtimes.base import Array

__all__ = ["decode_request", "decode_texts"]


def decode_texts(values: Iterable[object], name: str = "text") -> list[str]:
    """Every element of a BYTES tensor (bytes, or str) as text, in order."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            out.append(v)
            continue
        data = bytes(v)  # type: ignore[call-overload]
        try:
            out.append(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise InvalidArgument(f"input '{name}'[{i}]: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset "
                                  f"{e.start}: {e.reason})") from None
    return out


def decode_request(inputs: dict[str, Array], name: str = "text") -> list[str]:
    """The request's ``name`` input decoded and taken out of ``inputs`` (the batch step never sees raw bytes)."""
    return decode_texts(np.asarray(inputs.pop(name), dtype=object).reshape(-1), name)
