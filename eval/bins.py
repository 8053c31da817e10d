"""TokBench's relative-size bins per evaluation resolution, and the unweighted mean over bins.

Text bins are those of TokBench's ``compute_all_metrics.py``. Face bins follow the
TokBench paper's table ([0, a), [a, b), [b, 1)); note that TokBench's released
``compute_all_metrics.py`` uses other face edges (256: 0.1 / 0.2 / 0.3), so face
columns may differ from its script for instances below the first edge.
"""

from __future__ import annotations

import math

TEXT_EDGES = {256: (0.02, 0.03, 0.04, 1.0), 512: (0.01, 0.02, 0.03, 1.0), 1024: (0.005, 0.01, 0.02, 1.0)}
FACE_EDGES = {256: (0.0, 0.1, 0.2, 1.0), 512: (0.0, 0.05, 0.2, 1.0), 1024: (0.0, 0.05, 0.1, 1.0)}


def bin_index(ratio: float, edges: tuple[float, ...]) -> int | None:
    """Index i with edges[i] <= ratio < edges[i + 1], or None outside every bin (as TokBench drops them)."""
    for i in range(len(edges) - 1):
        if edges[i] <= ratio < edges[i + 1]:
            return i
    return None


def bin_labels(edges: tuple[float, ...]) -> list[str]:
    return [f"[{edges[i]:g},{edges[i + 1]:g})" for i in range(len(edges) - 1)]


def binned_means(values: list[tuple[float, float]], edges: tuple[float, ...]) -> tuple[list[float], float, list[int]]:
    """(ratio, value) pairs -> (mean per bin, unweighted mean of the bin means, count per bin).

    An empty bin's mean is NaN, and then so is the overall mean: a column is never
    silently averaged over fewer bins than its header says.
    """
    sums = [0.0] * (len(edges) - 1)
    counts = [0] * (len(edges) - 1)
    for ratio, value in values:
        i = bin_index(ratio, edges)
        if i is not None:
            sums[i] += value
            counts[i] += 1
    means = [s / c if c else math.nan for s, c in zip(sums, counts, strict=True)]
    return means, sum(means) / len(means), counts
