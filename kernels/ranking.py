"""Ranking: the k best of each row, best first, ties to the lower index (search neighbours, top-k labels,
summary sentences). Pure NumPy: a partition (O(M) a row) then a sort of k."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["top_k"]


def top_k(similarity: NDArray[np.floating[Any]], k: int) -> NDArray[np.int64]:
    """Column indices ``[N, k]`` of each row's ``k`` largest values, largest first; among equal values the lower
    index first (partition first: O(M) a row, then a sort of ``k``)."""
    n, m = similarity.shape
    k = min(k, m)
    if k < m:
        part = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    values = np.take_along_axis(similarity, part, axis=1)
    order = np.lexsort((part, -values), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)
